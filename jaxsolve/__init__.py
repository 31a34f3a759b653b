"""jaxsolve: differentiable numerical solvers for JAX.

`import jaxsolve as js`, then `js.linear.solve(...)`, `js.tuning.solve_sequence(...)`,
`js.Solution`, `js.RESULTS`.
"""

from . import linear as linear, tuning as tuning
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
    TextProgressMeter as TextProgressMeter,
    TqdmProgressMeter as TqdmProgressMeter,
    UnrolledAdjoint as UnrolledAdjoint,
)


__version__ = "0.1.0"
