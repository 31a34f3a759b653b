"""Light Schrödinger Bridge: fit, sample and simulate entropic OT / Schrödinger
bridges with a Gaussian-mixture potential; an entropic-OT benchmark with known
solution."""

from ._benchmark import (
    bures_wasserstein as bures_wasserstein,
    cbw2_uvp as cbw2_uvp,
    eot_benchmark as eot_benchmark,
    EOTBenchmark as EOTBenchmark,
    gaussian_eot as gaussian_eot,
    GaussianEOT as GaussianEOT,
)
from ._fit import (
    default_learning_rate as default_learning_rate,
    fit as fit,
    lightsb_loss as lightsb_loss,
)
from ._lightsb import (
    LightSB as LightSB,
    Mixture as Mixture,
    mixture_moments as mixture_moments,
)
