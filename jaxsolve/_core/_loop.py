"""The one while loop every iterative driver uses: step counting, `max_steps`, the
loop kind chosen by the adjoint, and an optional progress meter threaded through the
carry (so it works under `jit`, `vmap` and `grad`)."""

from collections.abc import Callable
from typing import Any, TypeVar

import equinox.internal as eqxi
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int

from ._adjoint import LoopKind
from ._progress import AbstractProgressMeter, NoProgressMeter


_Carry = TypeVar("_Carry")


def iterate(
    body: Callable[[_Carry], _Carry],
    cond: Callable[[_Carry], Any],
    init: _Carry,
    max_steps: int,
    *,
    kind: LoopKind = "lax",
    checkpoints: int | None = None,
    progress_meter: AbstractProgressMeter | None = None,
    progress: Callable[[_Carry], Any] | None = None,
) -> tuple[_Carry, Int[Array, ""]]:
    """Iterate `carry = body(carry)` while `cond(carry)` holds, at most `max_steps`
    times. Returns the final carry and the number of steps taken.

    `progress(carry)` is a number in [0, 1] shown by `progress_meter` (default: none).
    Under `vmap` a lane that has stopped is frozen exactly (JAX's batched while loop
    selects the old carry for finished lanes), so batched results equal a loop of
    single solves.
    """
    meter = NoProgressMeter() if progress_meter is None else progress_meter
    meter_state = meter.init()

    def _cond(c):
        carry, step, _ = c
        return (step < max_steps) & cond(carry)

    def _body(c):
        carry, step, mstate = c
        carry = body(carry)
        step = step + 1
        if progress is not None and not isinstance(meter, NoProgressMeter):
            # Meters keep their state in the default float dtype.
            dtype = jnp.asarray(0.0).dtype
            frac = jnp.maximum(
                step.astype(dtype) / max_steps, jnp.asarray(progress(carry), dtype)
            )
            frac = jnp.clip(frac, 0, 1)
            mstate = meter.step(mstate, jax.lax.stop_gradient(frac))
        return carry, step, mstate

    start = (init, jnp.array(0, dtype=jnp.int32), meter_state)
    if kind == "lax":
        final, num_steps, meter_state = jax.lax.while_loop(_cond, _body, start)
    else:
        final, num_steps, meter_state = eqxi.while_loop(
            _cond,
            _body,
            start,
            max_steps=max_steps,
            kind=kind,
            checkpoints=checkpoints,
        )
    meter.close(meter_state)
    return final, num_steps
