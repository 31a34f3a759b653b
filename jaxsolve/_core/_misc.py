"""Small helpers shared by the families."""

import jax
import numpy as np


def concrete_value(x) -> np.ndarray | None:
    """The value of `x` as a NumPy array if it is known now (a Python number, a NumPy
    array or a concrete JAX array, also one closed over inside `jit`), else `None`
    (a tracer). Construction-time validation reads values through this: comparing a
    JAX array with `>` inside `jit` would give a tracer even for a concrete array."""
    if isinstance(x, jax.core.Tracer):
        return None
    if isinstance(x, (jax.Array, np.ndarray, float, int, np.number)):
        return np.asarray(x)
    return None
