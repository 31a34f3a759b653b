"""Bad input: static problems raise ValueError naming the value; runtime problems
go through RESULTS (and raise with throw=True)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

from .helpers import IDS, REGISTRY


@pytest.mark.parametrize("cls", [js.linear.SOR, js.linear.SSORPCG])
@pytest.mark.parametrize("omega", [0.0, 2.0, 2.3, -0.5])
def test_omega_outside_open_interval(cls, omega):
    with pytest.raises(ValueError, match=rf"\(0, 2\).*{omega}"):
        cls(omega=omega)


@pytest.mark.parametrize("cls", [js.linear.SOR, js.linear.SSORPCG])
def test_bad_tolerances_and_max_steps(cls):
    with pytest.raises(ValueError, match="rtol.*-1e-06"):
        cls(omega=1.5, rtol=-1e-6)
    with pytest.raises(ValueError, match="atol.*-1.0"):
        cls(omega=1.5, atol=-1.0)
    with pytest.raises(ValueError, match="max_steps.*0"):
        cls(omega=1.5, max_steps=0)
    # A wrong type: our ValueError, or the test-time jaxtyping/beartype TypeError.
    with pytest.raises((ValueError, TypeError), match="max_steps"):
        cls(omega=1.5, max_steps=2.5)
    with pytest.raises(ValueError, match="ordering"):
        cls(omega=1.5, ordering="zigzag")
    with pytest.raises(ValueError, match="scalar"):
        cls(omega=jnp.array([1.2, 1.5]))


def test_red_black_needs_a_stencil():
    a = jnp.eye(4) * 2.0
    with pytest.raises(ValueError, match="red_black.*stencil"):
        js.linear.solve(a, jnp.ones(4), js.linear.SOR(omega=1.2, ordering="red_black"))


def test_shape_and_dtype_mismatch():
    op = js.linear.poisson((4, 5))
    solver = js.linear.SOR(omega=1.5)
    with pytest.raises(ValueError, match=r"\(20,\).*\(4, 5\).*reshape"):
        js.linear.solve(op, jnp.ones(20), solver)
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(4, 5\)"):
        js.linear.solve(op, jnp.ones((3, 3)), solver)
    with pytest.raises(ValueError, match="float32.*float64"):
        js.linear.solve(op, jnp.ones((4, 5), jnp.float32), solver)
    with pytest.raises(ValueError, match="x0"):
        js.linear.solve(op, jnp.ones((4, 5)), solver, x0=jnp.ones((5, 4)))
    # Operator conversion (what `solve` calls first). Through `solve` itself, the
    # test-time jaxtyping hook may raise its TypeError before our ValueError.
    with pytest.raises(ValueError, match=r"square.*\(3, 4\)"):
        js.linear.as_operator(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="operator.*str"):
        js.linear.as_operator("not an operator")
    with pytest.raises(ValueError, match="floating"):
        js.linear.as_operator(np.eye(3, dtype=np.int64))
    with pytest.raises((ValueError, TypeError), match="solver"):
        js.linear.solve(op, jnp.ones((4, 5)), "SOR")
    # Integer right-hand sides are cast (like lineax), not rejected.
    sol = js.linear.solve(op, jnp.ones((4, 5), jnp.int32), solver)
    assert sol.value.dtype == jnp.float64


def test_poisson_bad_arguments():
    with pytest.raises(ValueError, match="2-tuple or 3-tuple"):
        js.linear.poisson((8,))
    with pytest.raises(ValueError, match="2-tuple or 3-tuple"):
        js.linear.poisson((4, 0))
    with pytest.raises(ValueError, match=r"grid shape \(4, 4\).*\(3, 4\)"):
        js.linear.poisson((4, 4), coefficient=jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="positive"):
        js.linear.poisson((4, 4), coefficient=-1.0)
    with pytest.raises(ValueError, match="floating"):
        js.linear.poisson((4, 4), dtype=jnp.int32)


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_nonfinite_input(case):
    op, b = case.operator(), case.rhs()
    bad_b = b.at[(0,) * b.ndim].set(jnp.nan)
    sol = js.linear.solve(op, bad_b, case.solver(), throw=False)
    assert sol.result == js.RESULTS.nonfinite_input
    with pytest.raises(Exception, match="NaN or Inf"):
        js.linear.solve(op, bad_b, case.solver())
    # Non-finite operator values are caught as well.
    bad_op = jax.tree_util.tree_map(
        lambda a: a.at[(0,) * a.ndim].set(jnp.inf) if isinstance(a, jax.Array) else a,
        op,
    )
    sol = js.linear.solve(bad_op, b, case.solver(), throw=False)
    assert sol.result == js.RESULTS.nonfinite_input


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_max_steps_reached(case):
    op, b = case.operator(), case.rhs()
    sol = js.linear.solve(op, b, case.solver(max_steps=2, rtol=1e-14), throw=False)
    assert sol.result == js.RESULTS.max_steps_reached
    assert int(sol.stats["num_steps"]) == 2
    assert np.all(np.isfinite(sol.value))
    with pytest.raises(Exception, match="max_steps"):
        js.linear.solve(op, b, case.solver(max_steps=2, rtol=1e-14))


def test_ssorpcg_non_spd_is_breakdown_not_nan_success():
    # Negative definite: the SSOR preconditioner is negative definite, r^T M^-1 r < 0.
    a = -(jnp.eye(5) * 3.0 + 0.5 * (jnp.eye(5, k=1) + jnp.eye(5, k=-1)))
    b = jnp.arange(1.0, 6.0)
    sol = js.linear.solve(a, b, js.linear.SSORPCG(omega=1.2), throw=False)
    assert sol.result == js.RESULTS.breakdown
    assert np.all(np.isfinite(sol.value))
    # Symmetric indefinite: curvature p^T A p <= 0 at some step, or failure anyway.
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (8, 8)))
    indef = (q * jnp.array([5.0, 4, 3, 2, 1, -1, -2, -3])[None, :]) @ q.T
    sol = js.linear.solve(indef, jnp.ones(8), js.linear.SSORPCG(omega=1.0), throw=False)
    assert sol.result != js.RESULTS.successful or np.allclose(
        indef @ sol.value, jnp.ones(8), atol=1e-5
    )
    assert np.all(np.isfinite(sol.value)) or sol.result != js.RESULTS.successful
    with pytest.raises(Exception, match="breakdown"):
        js.linear.solve(a, b, js.linear.SSORPCG(omega=1.2))


def test_sor_divergence_is_reported():
    """SOR on a non-SPD matrix diverges: a failure code, never success."""
    a = jnp.array([[1.0, 3.0], [3.0, 1.0]])
    sol = js.linear.solve(
        a, jnp.ones(2), js.linear.SOR(omega=1.0, max_steps=5000), throw=False
    )
    assert sol.result in (js.RESULTS.nonfinite, js.RESULTS.max_steps_reached)
    assert sol.result != js.RESULTS.successful


def test_result_messages_say_what_to_change():
    assert "max_steps" in js.RESULTS[js.RESULTS.max_steps_reached]
    assert "omega" in js.RESULTS[js.RESULTS.nonfinite]
    assert "positive definite" in js.RESULTS[js.RESULTS.breakdown]


def test_construction_inside_jit_from_closed_over_arrays():
    """Concrete arrays closed over inside jit are validated eagerly (not as
    tracers), and traced values are accepted."""
    omega, k, b = jnp.asarray(1.5), jnp.ones((6, 6)), jnp.ones((6, 6))

    @jax.jit
    def run(b):
        op = js.linear.poisson((6, 6), coefficient=k)
        return js.linear.solve(op, b, js.linear.SOR(omega)).value

    np.testing.assert_allclose(
        run(b), js.linear.solve(js.linear.poisson((6, 6)), b, js.linear.SOR(1.5)).value
    )
    bad = jnp.asarray(2.5)
    with pytest.raises(ValueError, match="2.5"):
        jax.jit(lambda b: js.linear.SOR(bad).omega * b)(b)
    jax.jit(lambda w: js.linear.SOR(w).omega)(jnp.asarray(1.2))  # traced: accepted
