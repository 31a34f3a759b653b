"""vmap: batched solves equal a loop of single solves, lane by lane; one failing lane
leaves the others intact (throw=False)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

from .helpers import IDS, REGISTRY


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_vmap_equals_loop(case):
    op = case.operator()
    bs = jnp.stack([case.rhs(seed=s) for s in range(3)])
    bs = bs.at[1].set(bs[1].at[(0,) * bs[1].ndim].set(jnp.nan))  # a bad lane
    omegas = jnp.array([case.omega, 0.8 * case.omega + 0.2, 1.05])

    def one(b, omega):
        sol = js.linear.solve(op, b, case.solver(omega), throw=False)
        return sol.value, sol.result._value, sol.stats["num_steps"]

    xs, results, steps = jax.vmap(one)(bs, omegas)
    for i in range(3):
        x, result, step = one(bs[i], omegas[i])
        assert int(results[i]) == int(result)
        assert int(steps[i]) == int(step)
        np.testing.assert_allclose(xs[i], x, rtol=1e-13, atol=1e-15)
    good = js.RESULTS.successful._value
    assert list(np.asarray(results) == good) == [True, False, True]
    assert int(results[1]) == int(js.RESULTS.nonfinite_input._value)


def test_vmap_over_operators_and_max_steps_lane():
    """Stacked Poisson operators (a coefficient sweep); a lane that runs out of
    steps reports max_steps_reached while the others succeed."""
    shape = (6, 6)
    ops = jax.vmap(lambda s: js.linear.poisson(shape, shift=s))(
        jnp.array([0.0, 1.0, 5.0])
    )
    b = jnp.ones(shape)

    def one(op, max_steps_hit):
        sol = js.linear.solve(
            op, b, js.linear.SOR(omega=1.3, rtol=1e-10, max_steps=30), throw=False
        )
        return sol.value, sol.result._value, sol.stats["num_steps"]

    xs, results, steps = jax.vmap(one, in_axes=(0, None))(ops, None)
    assert int(results[0]) == int(js.RESULTS.max_steps_reached._value)
    assert int(steps[0]) == 30
    assert np.all(np.asarray(results[1:]) == int(js.RESULTS.successful._value))
    for i, s in enumerate([0.0, 1.0, 5.0]):
        ref = jnp.linalg.solve(
            js.linear.poisson(shape, shift=s).as_matrix(), b.reshape(-1)
        )
        if i > 0:
            np.testing.assert_allclose(xs[i].reshape(-1), ref, rtol=1e-8)


def test_vmap_with_throw_raises_if_any_lane_fails():
    op = js.linear.poisson((5, 5))
    bs = jnp.ones((2, 5, 5)).at[0, 0, 0].set(jnp.inf)
    with pytest.raises(Exception, match="NaN or Inf"):
        jax.block_until_ready(
            jax.vmap(lambda b: js.linear.solve(op, b, js.linear.SOR(omega=1.5)).value)(
                bs
            )
        )
