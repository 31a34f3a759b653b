from ._adjoint import (
    AbstractAdjoint as AbstractAdjoint,
    implicit_jvp as implicit_jvp,
    ImplicitAdjoint as ImplicitAdjoint,
    UnrolledAdjoint as UnrolledAdjoint,
)
from ._loop import iterate as iterate
from ._progress import (
    AbstractProgressMeter as AbstractProgressMeter,
    NoProgressMeter as NoProgressMeter,
    TextProgressMeter as TextProgressMeter,
    TqdmProgressMeter as TqdmProgressMeter,
)
from ._serialise import load as load, load_header as load_header, save as save
from ._solution import (
    any_nonfinite as any_nonfinite,
    finalise as finalise,
    RESULTS as RESULTS,
    Solution as Solution,
)
from ._sweep import sweep as sweep
