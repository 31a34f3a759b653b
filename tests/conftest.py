import random

import jax
import pytest


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """Returns a function that gives a fresh PRNG key on each call; the seed is
    printed so that a failing case can be reproduced."""
    seed = random.randint(0, 2**31 - 1)
    print(f"getkey seed: {seed}")
    key = jax.random.key(seed)

    def _getkey():
        nonlocal key
        key, sub = jax.random.split(key)
        return sub

    return _getkey
