"""Small helpers shared by the families."""

import jax
import numpy as np


def is_concrete(x) -> bool:
    """True if `x` holds concrete values (not a tracer), so it can be validated
    eagerly at construction time."""
    return not isinstance(x, jax.core.Tracer) and isinstance(
        x, (jax.Array, np.ndarray, float, int)
    )
