"""jit: same result as eager; new array values (b, omega, operator values) do not
retrace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

from .helpers import IDS, REGISTRY, tree_allclose


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_jit_equals_eager_and_no_retrace(case):
    op, b = case.operator(), case.rhs()
    traces = 0

    @jax.jit
    def run(op, b, omega):
        nonlocal traces
        traces += 1
        sol = js.linear.solve(op, b, case.solver(omega), throw=False)
        return sol.value, sol.result, sol.stats["num_steps"]

    eager = js.linear.solve(op, b, case.solver())
    x, result, steps = run(op, b, jnp.asarray(case.omega))
    assert result == js.RESULTS.successful
    assert int(steps) == int(eager.stats["num_steps"])
    assert tree_allclose(x, eager.value, rtol=1e-12, atol=1e-14)
    # New omega, new b, new operator values: same compiled function.
    op2 = jax.tree_util.tree_map(lambda a: 1.1 * a, op)
    run(op2, 2.0 * b, jnp.asarray(0.9 * case.omega))
    run(op, b + 1.0, jnp.asarray(1.05))
    assert traces == 1


def test_driver_does_not_recompile_on_new_omega(monkeypatch):
    """Eager callers also reuse the compiled solve: omega is an array field, so a new
    value (or a new b) does not retrace. Traces are counted by `SOR._start`, which
    only runs while tracing."""
    traces = 0
    original = js.linear.SOR._start

    def counting(self, *args):
        nonlocal traces
        traces += 1
        return original(self, *args)

    monkeypatch.setattr(js.linear.SOR, "_start", counting)
    op = js.linear.poisson((6, 7))
    b = jnp.ones((6, 7))
    for w in (1.2, 1.3, 1.5, 1.7):
        js.linear.solve(op, b, js.linear.SOR(omega=w))
    js.linear.solve(op, 3.0 * b, js.linear.SOR(omega=1.1))
    assert traces == 1


def test_throw_raises_under_jit():
    op = js.linear.poisson((8, 8))
    b = jnp.ones((8, 8))
    solver = js.linear.SOR(omega=1.0, rtol=1e-12, max_steps=3)

    @jax.jit
    def run(b):
        return js.linear.solve(op, b, solver).value

    with pytest.raises(Exception, match="maximum number of steps"):
        jax.block_until_ready(run(b))
    np.testing.assert_array_equal(
        js.linear.solve(op, b, solver, throw=False).result
        == js.RESULTS.max_steps_reached,
        True,
    )
