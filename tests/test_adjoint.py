"""The generic implicit-differentiation helper that every family reuses, on a
nonlinear root problem with a closed-form derivative."""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from jaxsolve._core import implicit_jvp


def _newton_sqrt(inputs):
    """x = sqrt(a) elementwise by Newton's method (the primal iteration)."""
    (a,) = inputs
    x = jax.lax.fori_loop(0, 60, lambda _, x: 0.5 * (x + a / x), jnp.ones_like(a))
    return x, {"num_steps": jnp.array(60)}


def _residual(x, inputs):
    (a,) = inputs
    return x * x - a


def test_implicit_jvp_sqrt_forward_reverse_and_second_order():
    def f(a):
        x, _ = implicit_jvp(
            _newton_sqrt, _residual, (a,), lx.AutoLinearSolver(well_posed=True)
        )
        return x

    a = jnp.array([0.5, 2.0, 9.0])
    np.testing.assert_allclose(f(a), np.sqrt(a), rtol=1e-12)
    # d sqrt(a) / da = 1 / (2 sqrt(a)): reverse mode, forward mode.
    np.testing.assert_allclose(
        jax.grad(lambda a: f(a).sum())(a), 0.5 / np.sqrt(a), rtol=1e-10
    )
    _, t = jax.jvp(f, (a,), (jnp.ones(3),))
    np.testing.assert_allclose(t, 0.5 / np.sqrt(a), rtol=1e-10)
    # Second derivative -1/4 a^{-3/2} (the rule is itself differentiable).
    h = jax.grad(lambda s: jax.grad(lambda s: f(jnp.array([s]))[0])(s))(2.0)
    np.testing.assert_allclose(h, -0.25 * 2.0**-1.5, rtol=1e-8)
