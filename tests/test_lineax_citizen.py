"""SOR, SSOR-PCG and DCDM as lineax citizens: `lineax.linear_solve` with our solvers on
the operators lineax users build (dense, function, pytree-structured; real and complex
Hermitian positive definite), its JVP and vmap, and SOR as a fixed-sweep smoother.

References are independent: `jnp.linalg.solve`, lineax's own LU, explicit dense
Gauss-Seidel sweeps.
"""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import jaxsolve as js


SOLVERS = {
    "sor": lambda: js.linear.SOR(1.2, rtol=1e-13, max_steps=20_000),
    "ssor_pcg": lambda: js.linear.SSORPCG(1.2, rtol=1e-13),
}


def hpd(key, n, dtype):
    """A Hermitian (symmetric for real dtypes) positive definite matrix, cond < ~20."""
    m = jax.random.normal(key, (n, n), dtype)
    return m @ m.conj().T + n * jnp.eye(n, dtype=dtype)


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.complex128, jnp.complex64])
def test_hermitian_positive_definite_systems(name, dtype, getkey):
    a = hpd(getkey(), 7, dtype)
    x_true = jax.random.normal(getkey(), (7,), dtype)
    b = a @ x_true
    solver = SOLVERS[name]()
    if dtype == jnp.complex64:  # float32 precision: a reachable tolerance
        solver = type(solver)(1.2, rtol=1e-5)
    tol = 1e-4 if dtype == jnp.complex64 else 1e-10
    reference = jnp.linalg.solve(a, b)
    sol = js.linear.solve(a, b, solver)
    assert sol.result == js.RESULTS.successful
    assert sol.value.dtype == dtype
    np.testing.assert_allclose(sol.value, reference, rtol=tol, atol=tol)
    op = lx.MatrixLinearOperator(a, lx.positive_semidefinite_tag)
    np.testing.assert_allclose(
        lx.linear_solve(op, b, solver).value, reference, rtol=tol, atol=tol
    )
    # A matrix-free lineax operator on the same matrix.
    fn_op = lx.FunctionLinearOperator(lambda v: a @ v, jax.eval_shape(lambda: b))
    np.testing.assert_allclose(
        lx.linear_solve(fn_op, b, solver).value, reference, rtol=tol, atol=tol
    )


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_complex_indefinite_is_never_a_false_success(name, getkey):
    # Hermitian indefinite (eigenvalues of both signs, positive diagonal): SOR
    # diverges (Ostrowski-Reich), SSOR-PCG breaks down. Whatever the code, success
    # is only reported for a true solution.
    q, _ = jnp.linalg.qr(jax.random.normal(getkey(), (6, 6), jnp.complex128))
    eig = jnp.array([-2.0, 1.0, 3.0, 4.0, 5.0, 6.0]).astype(jnp.complex128)
    a = (q * eig[None, :]) @ q.conj().T
    a = a + jnp.diag(0.5 * jnp.abs(jnp.diag(a))).astype(a.dtype)  # positive diagonal
    assert jnp.linalg.eigvalsh(a).min() < 0
    b = jnp.ones(6, jnp.complex128)
    solver = type(SOLVERS[name]())(1.2, rtol=1e-10, max_steps=500)
    sol = js.linear.solve(a, b, solver, throw=False)
    if sol.result == js.RESULTS.successful:
        np.testing.assert_allclose(a @ sol.value, b, rtol=1e-8, atol=1e-8)
    else:
        assert sol.result in (
            js.RESULTS.breakdown,
            js.RESULTS.nonfinite,
            js.RESULTS.max_steps_reached,
        )


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_lineax_jvp_matches_lu(name, getkey):
    a = hpd(getkey(), 5, jnp.complex128)
    b = jax.random.normal(getkey(), (5,), jnp.complex128)
    da = jax.random.normal(getkey(), (5, 5), jnp.complex128)
    da = da + da.conj().T  # keep the tangent operator Hermitian
    db = jax.random.normal(getkey(), (5,), jnp.complex128)
    solver = SOLVERS[name]()

    def with_solver(s):
        def f(a, b):
            op = lx.MatrixLinearOperator(a, lx.positive_semidefinite_tag)
            return lx.linear_solve(op, b, s).value

        return jax.jvp(f, (a, b), (da, db))

    x, dx = with_solver(solver)
    x_ref, dx_ref = with_solver(lx.LU())
    np.testing.assert_allclose(x, x_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-8, atol=1e-8)
    # And the reverse mode of our own driver, for a real loss of a complex solve.
    loss = lambda b: jnp.sum(jnp.abs(js.linear.solve(a, b, solver).value) ** 2)
    loss_ref = lambda b: jnp.sum(jnp.abs(jnp.linalg.solve(a, b)) ** 2)
    np.testing.assert_allclose(
        jax.grad(loss)(b), jax.grad(loss_ref)(b), rtol=1e-8, atol=1e-8
    )


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_lineax_vmap_over_operators_and_vectors(name, getkey):
    keys = jax.random.split(getkey(), 4)
    mats = jax.vmap(lambda k: hpd(k, 5, jnp.complex128))(keys)
    bs = jax.random.normal(getkey(), (4, 5), jnp.complex128)
    solver = SOLVERS[name]()

    def one(a, b):
        op = lx.MatrixLinearOperator(a, lx.positive_semidefinite_tag)
        return lx.linear_solve(op, b, solver).value

    xs = jax.vmap(one)(mats, bs)
    np.testing.assert_allclose(
        xs, jnp.linalg.solve(mats, bs[..., None])[..., 0], rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_pytree_structured_operator(name, getkey):
    # A symmetric positive definite operator on the pytree ((2, 3) array, (4,) array),
    # built as lineax's PyTreeLinearOperator; solved on the flattened vector.
    a = hpd(getkey(), 10, jnp.float64)
    x_true = [jax.random.normal(getkey(), (2, 3)), jax.random.normal(getkey(), (4,))]
    struct = jax.eval_shape(lambda: x_true)
    blocks = [
        [a[:6, :6].reshape(2, 3, 2, 3), a[:6, 6:].reshape(2, 3, 4)],
        [a[6:, :6].reshape(4, 2, 3), a[6:, 6:]],
    ]
    op = lx.PyTreeLinearOperator(blocks, struct, lx.positive_semidefinite_tag)
    b = op.mv(x_true)
    x = lx.linear_solve(op, b, SOLVERS[name]()).value
    for got, want in zip(x, x_true):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_dcdm_rejects_complex_up_front():
    net = js.linear.pretrained("poisson2d")
    a = hpd(jax.random.key(0), 4, jnp.complex128)
    with pytest.raises(TypeError, match="real.*SSORPCG"):
        js.linear.solve(a, jnp.ones(4, jnp.complex128), js.linear.DeepConjugateDirection(net))


def test_dtype_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="dtype complex128.*float64"):
        js.linear.solve(
            js.linear.poisson((4, 4)), jnp.ones((4, 4), jnp.complex128), js.linear.SOR(1.5)
        )


def gauss_seidel_reference(a, b, omega, sweeps):
    """`sweeps` natural-order SOR sweeps from zero, written out with dense triangles."""
    lower = jnp.tril(a, -1) + jnp.diag(jnp.diag(a)) / omega
    x = jnp.zeros_like(b)
    for _ in range(sweeps):
        x = x + jax.scipy.linalg.solve_triangular(lower, b - a @ x, lower=True)
    return x


@pytest.mark.parametrize("sweeps", [1, 3])
@pytest.mark.parametrize("omega", [1.0, 1.4])
def test_sor_as_a_fixed_sweep_smoother(sweeps, omega):
    op = js.linear.poisson((6, 5))
    b = jnp.asarray(np.random.default_rng(0).normal(size=(6, 5)))
    solver = js.linear.SOR(omega, rtol=0, atol=0, max_steps=sweeps, ordering="natural")
    sol = js.linear.solve(op, b, solver)
    assert sol.result == js.RESULTS.successful
    assert int(sol.stats["num_steps"]) == sweeps
    want = gauss_seidel_reference(op.as_matrix(), b.reshape(-1), omega, sweeps)
    np.testing.assert_allclose(sol.value.reshape(-1), want, rtol=1e-12, atol=1e-12)
    # The same on a dense matrix and through lineax.
    x = lx.linear_solve(lx.MatrixLinearOperator(op.as_matrix()), b.reshape(-1), solver)
    np.testing.assert_allclose(x.value, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "solver",
    [
        js.linear.SOR(1.9, rtol=0, atol=0, max_steps=400),
        js.linear.SSORPCG(1.5, rtol=0, atol=0, max_steps=200),
    ],
)
def test_fixed_steps_run_past_the_rounding_floor(solver):
    # Far more steps than convergence needs: no stagnation, no breakdown, success.
    op = js.linear.poisson((8, 8))
    b = jnp.ones((8, 8))
    sol = js.linear.solve(op, b, solver)
    assert sol.result == js.RESULTS.successful
    assert int(sol.stats["num_steps"]) <= solver.max_steps
    reference = jnp.linalg.solve(op.as_matrix(), b.reshape(-1))
    np.testing.assert_allclose(sol.value.reshape(-1), reference, rtol=1e-10)


def test_fixed_steps_still_report_nonfinite_input():
    op = js.linear.poisson((4, 4))
    b = jnp.ones((4, 4)).at[0, 0].set(jnp.nan)
    sol = js.linear.solve(
        op, b, js.linear.SOR(1.0, rtol=0, atol=0, max_steps=2), throw=False
    )
    assert sol.result == js.RESULTS.nonfinite_input
