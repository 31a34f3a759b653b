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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module. Every XLA:CPU executable
    holds memory mappings, and the whole suite compiles thousands of programs (the
    fuzz tests alone ~1,500): kept alive they exceed the kernel's map limit
    (vm.max_map_count = 65530) and a later compile segfaults."""
    yield
    jax.clear_caches()
