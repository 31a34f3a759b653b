"""jaxsolve: differentiable numerical solvers for JAX.

`import jaxsolve as js`, then `js.linear` (SOR, SSOR-PCG, DCDM), `js.tuning` (online omega
policies), `js.bridge` (Light Schrödinger Bridge), `js.diffusion` (heavy-ball diffusion
samplers), `js.bilevel` (Hessian-free bilevel optimisation); `js.Solution`, `js.RESULTS`,
`js.save`, `js.load`, and `js.sweep` (vmapped sweeps sharded over devices and hosts).
"""

from . import (
    bilevel as bilevel,
    bridge as bridge,
    diffusion as diffusion,
    linear as linear,
    tuning as tuning,
)
from ._core import (
    AbstractAdjoint as AbstractAdjoint,
    AbstractProgressMeter as AbstractProgressMeter,
    ImplicitAdjoint as ImplicitAdjoint,
    load as load,
    load_header as load_header,
    NoProgressMeter as NoProgressMeter,
    RESULTS as RESULTS,
    save as save,
    Solution as Solution,
    sweep as sweep,
    TextProgressMeter as TextProgressMeter,
    TqdmProgressMeter as TqdmProgressMeter,
    UnrolledAdjoint as UnrolledAdjoint,
)


__version__ = "0.1.0"
