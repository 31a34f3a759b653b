"""Progress meters that work inside `jit`, `vmap` and `grad`.

We reuse Equinox's implementation (the design diffrax and optimistix share: the meter
state is threaded through the loop carry, updates are throttled host callbacks, the
backward pass never touches the bar). Pass one as `progress_meter=` to a driver.
"""

from equinox.internal import (
    AbstractProgressMeter as AbstractProgressMeter,
    NoProgressMeter as NoProgressMeter,
    TextProgressMeter as TextProgressMeter,
    TqdmProgressMeter as TqdmProgressMeter,
)
