"""`throw=True` raises whenever any part of a failed solve's output is used, under
every transformation users apply; float32 failures are diagnosed as what they are."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import jaxsolve as js


N = 16
A = js.linear.poisson((N, N))
B = jnp.sin(jnp.arange(N * N, dtype=jnp.float64)).reshape(N, N)
# Fails: five SOR sweeps cannot reach rtol 1e-6.
FAILING = js.linear.SOR(omega=1.5, max_steps=5)
PASSING = js.linear.SOR(omega=1.5)

# Each way a user reads a Solution: the value, the result code, or a single stat.
USES = {
    "value": lambda sol: sol.value.sum(),
    "result": lambda sol: sol.result._value,
    "num_steps": lambda sol: sol.stats["num_steps"],
    "max_steps": lambda sol: sol.stats["max_steps"],
    "residual_norm": lambda sol: sol.stats["residual_norm"],
}


def _raises(fn, *args, match="maximum number of steps"):
    # Under plain `jax.jit` the message surfaces inside a JaxRuntimeError; under
    # `eqx.filter_jit` (and eagerly, since `solve` is filter-jitted) it is equinox's
    # own runtime error. Both carry our message.
    with pytest.raises(Exception, match=match):
        jax.block_until_ready(fn(*args))


@pytest.mark.parametrize("use", USES, ids=list(USES))
def test_throw_under_jax_jit(use):
    fn = jax.jit(lambda b: USES[use](js.linear.solve(A, b, FAILING)))
    _raises(fn, B)
    # The same compiled function with a passing solver returns normally.
    ok = jax.jit(lambda b: USES[use](js.linear.solve(A, b, PASSING)))(B)
    assert jnp.all(jnp.isfinite(ok))


@pytest.mark.parametrize("use", USES, ids=list(USES))
def test_throw_under_filter_jit(use):
    fn = eqx.filter_jit(lambda b: USES[use](js.linear.solve(A, b, FAILING)))
    _raises(fn, B)


@pytest.mark.parametrize("use", ["value", "num_steps", "residual_norm"])
def test_throw_under_vmap(use):
    bs = jnp.stack([B, 2 * B])
    fn = jax.jit(jax.vmap(lambda b: USES[use](js.linear.solve(A, b, FAILING))))
    _raises(fn, bs)


def test_throw_under_grad():
    # The gradient is the adjoint solve's output (one more solve with the same
    # five-sweep solver), which fails too: lineax's tangent solve raises its own
    # "maximum number of solver steps" message.
    fn = jax.jit(jax.grad(lambda b: js.linear.solve(A, b, FAILING).value.sum()))
    _raises(fn, B, match="maximum number of (solver )?steps")
    # A loss that reads the primal's stats alongside the value raises our message.
    fn = jax.jit(
        jax.grad(
            lambda b: (lambda s: s.value.sum() + s.stats["residual_norm"])(
                js.linear.solve(A, b, FAILING)
            ),
        )
    )
    _raises(fn, B, match="maximum number of (solver )?steps")


def test_diverging_omega_as_traced_argument():
    # The first case: omega outside (0, 2) arrives as a tracer (so the
    # construction-time check cannot see it) and the solve diverges; reading only
    # `num_steps` must still raise.
    fn = jax.jit(
        lambda b, w: js.linear.solve(A, b, js.linear.SOR(omega=w)).stats["num_steps"]
    )
    with pytest.raises(Exception, match="NaN or Inf|maximum number of steps"):
        jax.block_until_ready(fn(B, 2.5))


def test_throw_false_returns_the_code():
    sol = jax.jit(lambda b: js.linear.solve(A, b, FAILING, throw=False))(B)
    assert sol.result == js.RESULTS.max_steps_reached
    assert int(sol.stats["num_steps"]) == 5


# -- float32: stagnation at the precision floor, not "max_steps" or "not SPD". ----

M = 64
B32 = jax.random.normal(jax.random.key(0), (M, M), jnp.float32)
A32 = js.linear.poisson((M, M), dtype=jnp.float32)


def test_float32_ssor_pcg_tight_tolerance_is_stagnation_not_breakdown():
    # rtol below float32's reach: before the fix this ran 2638 steps and reported
    # `breakdown` ("not SPD") with a residual near 1e17.
    sol = js.linear.solve(A32, B32, js.linear.SSORPCG(1.5, rtol=1e-10), throw=False)
    assert sol.result == js.RESULTS.stagnation
    assert sol.value.dtype == jnp.float32
    rel = jnp.linalg.norm(B32 - A32.mv(sol.value)) / jnp.linalg.norm(B32)
    # The best iterate is returned, and the reported residual is its true one.
    assert rel < 1e-4
    assert jnp.isclose(sol.stats["residual_norm"], rel * jnp.linalg.norm(B32), rtol=0.2)
    assert int(sol.stats["num_steps"]) < 1000
    assert "float64" in js.RESULTS[sol.result]
    with pytest.raises(Exception, match="float64"):
        js.linear.solve(A32, B32, js.linear.SSORPCG(1.5, rtol=1e-10))


def test_float32_sor_below_precision_is_stagnation_not_max_steps():
    omega = js.linear.young_omega(A32)
    sol = js.linear.solve(A32, B32, js.linear.SOR(omega, rtol=1e-9), throw=False)
    assert sol.result == js.RESULTS.stagnation
    assert int(sol.stats["num_steps"]) < 2000  # not all 10,000 steps
    rel = jnp.linalg.norm(B32 - A32.mv(sol.value)) / jnp.linalg.norm(B32)
    assert rel < 1e-4


def test_float32_reachable_tolerance_still_succeeds():
    sol = js.linear.solve(A32, B32, js.linear.SSORPCG(1.5, rtol=1e-4))
    assert sol.result == js.RESULTS.successful
    sol = js.linear.solve(
        A32, B32, js.linear.SOR(js.linear.young_omega(A32), rtol=1e-4)
    )
    assert sol.result == js.RESULTS.successful


def test_float64_same_problem_converges():
    a64 = js.linear.poisson((M, M))
    b64 = B32.astype(jnp.float64)
    sol = js.linear.solve(a64, b64, js.linear.SSORPCG(1.5, rtol=1e-10))
    assert sol.result == js.RESULTS.successful


def test_slow_convergence_above_the_floor_is_not_stagnation():
    # Gauss-Seidel on 64x64 converges slowly but steadily: max_steps_reached, never
    # stagnation (the floor test keeps slow progress from being misdiagnosed).
    a64 = js.linear.poisson((M, M))
    sol = js.linear.solve(
        a64, B32.astype(jnp.float64), js.linear.SOR(1.0, max_steps=300), throw=False
    )
    assert sol.result == js.RESULTS.max_steps_reached


def test_genuine_breakdown_is_still_breakdown():
    # An indefinite matrix: CG breaks down far above the precision floor.
    a = jnp.array([[1.0, 2, 0, 0], [2, 1, 0, 0], [0, 0, 3, 1], [0, 0, 1, 3]])
    b = jnp.array([1.0, 0.0, 1.0, 2.0])
    sol = js.linear.solve(a, b, js.linear.SSORPCG(1.0), throw=False)
    assert sol.result == js.RESULTS.breakdown
    assert bool(jnp.all(jnp.isfinite(sol.value)))


def test_tuning_sequence_reports_stagnation_in_float32():
    import jaxsolve.tuning as jt

    cs = jnp.linspace(0.0, 0.5, 4, dtype=jnp.float32)
    ops = jax.vmap(lambda c: js.linear.poisson((M, M), shift=c, dtype=jnp.float32))(cs)
    bs = jnp.stack([B32] * 4)
    solver = js.linear.SSORPCG(1.5, rtol=1e-10)
    omegas = jnp.array([1.2, 1.5], jnp.float32)
    out = jt.solve_sequence(solver, (ops, bs), jt.TsallisINF(omegas), jax.random.key(0))
    assert bool(jnp.all(out.result == js.RESULTS.stagnation))


def test_float32_smooth_rhs_floor_from_operator_norm():
    # A smooth right-hand side on a fine grid: ||x|| ~ ||b|| / lambda_min is large,
    # and the float32 floor (about eps ||A|| ||x||) lies above sqrt(eps) ||b||. The
    # solve must stop as stagnation, not run to max_steps.
    n = 128
    g = jnp.linspace(0, 1, n, dtype=jnp.float32)
    b = jnp.sin(jnp.pi * g)[:, None] * jnp.sin(2 * jnp.pi * g)[None, :] + 0.3
    a = js.linear.poisson((n, n), dtype=jnp.float32)
    sol = js.linear.solve(a, b, js.linear.SSORPCG(1.9, rtol=1e-5), throw=False)
    assert sol.result == js.RESULTS.stagnation
    assert int(sol.stats["num_steps"]) < 500
