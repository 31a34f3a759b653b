"""Diffusion samplers: VP noise schedules, DDIM, DPM-Solver++, PLMS, heavy-ball and
generalised heavy-ball momentum (Wizadwongsa et al., ICLR 2024), an exact
Gaussian-mixture test bed and a small learned digits model."""

from ._digits import (
    DigitsDenoiser as DigitsDenoiser,
    load_digits as load_digits,
    pretrained_digits as pretrained_digits,
    train_digits as train_digits,
)
from ._mixture import GaussianMixture as GaussianMixture, MixtureModel as MixtureModel
from ._sample import (
    Guidance as Guidance,
    ode_reference as ode_reference,
    sample as sample,
)
from ._samplers import (
    ab_coefficients as ab_coefficients,
    AbstractMultistepSampler as AbstractMultistepSampler,
    AbstractSampler as AbstractSampler,
    Coefficients as Coefficients,
    DDIM as DDIM,
    DPMSolverPP as DPMSolverPP,
    GHVB as GHVB,
    HeavyBall as HeavyBall,
    Nesterov as Nesterov,
    PLMS as PLMS,
)
from ._schedule import timesteps as timesteps, VPSchedule as VPSchedule
