"""float32 in, float32 out; float64 in, float64 out (x64 on, strict promotion)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

from .helpers import IDS, REGISTRY


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtype_preserved(case, dtype):
    op, b = case.operator(dtype), case.rhs(dtype)
    rtol = 1e-5 if dtype == jnp.float32 else 1e-10
    sol = js.linear.solve(op, b, case.solver(rtol=rtol))
    assert sol.value.dtype == dtype
    assert sol.stats["residual_norm"].dtype == dtype
    ref = np.linalg.solve(
        np.asarray(case.dense(dtype), np.float64), np.asarray(b, np.float64).reshape(-1)
    )
    tol = 1e-4 if dtype == jnp.float32 else 1e-8
    np.testing.assert_allclose(
        np.asarray(sol.value, np.float64).reshape(-1), ref, rtol=tol, atol=tol
    )
    # The gradient's dtype (traced only: the values are checked in test_grad.py).
    grad = jax.grad(
        lambda b: js.linear.solve(op, b, case.solver(rtol=rtol)).value.sum()
    )
    assert jax.eval_shape(grad, b).dtype == dtype
