"""Correctness of the linear family against independent references."""

import math

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import jaxsolve as js

from .helpers import IDS, REGISTRY, variable_coefficient


def numpy_poisson(shape, k=None, shift=0.0):
    """Assemble the Dirichlet stencil matrix node by node (C order), with face
    coefficients the mean of the two node coefficients, the node's own on a boundary
    face."""
    n = math.prod(shape)
    k = np.ones(shape) if k is None else np.asarray(k)
    shift = np.broadcast_to(np.asarray(shift, float), shape)
    a = np.zeros((n, n))
    for idx in np.ndindex(*shape):
        i = np.ravel_multi_index(idx, shape)
        a[i, i] += shift[idx]
        for d in range(len(shape)):
            for step in (-1, 1):
                nb = list(idx)
                nb[d] += step
                if 0 <= nb[d] < shape[d]:
                    face = 0.5 * (k[idx] + k[tuple(nb)])
                    a[i, np.ravel_multi_index(nb, shape)] -= face
                else:
                    face = k[idx]
                a[i, i] += face
    return a


@pytest.mark.parametrize(
    "shape,varcoef,shift",
    [((4, 5), False, 0.0), ((4, 5), True, 0.7), ((3, 2, 4), True, 0.0)],
)
def test_poisson_matches_assembly(shape, varcoef, shift):
    k = variable_coefficient(shape) if varcoef else None
    op = js.linear.poisson(shape, coefficient=k, shift=shift)
    ref = numpy_poisson(shape, None if k is None else np.asarray(k), shift)
    np.testing.assert_allclose(op.as_matrix(), ref, rtol=1e-14, atol=1e-14)
    x = jax.random.normal(jax.random.key(0), shape)
    np.testing.assert_allclose(
        op.mv(x).reshape(-1), ref @ np.asarray(x).reshape(-1), rtol=1e-13
    )
    np.testing.assert_allclose(lx.diagonal(op), np.diag(ref))
    assert op.transpose() is op
    assert lx.is_symmetric(op) and lx.is_positive_semidefinite(op)


def test_classical_laplacian_stencil():
    a = js.linear.poisson((3, 3)).as_matrix()
    assert np.all(np.diag(a) == 4.0)
    assert a[0, 1] == -1.0 and a[0, 3] == -1.0 and a[0, 4] == 0.0
    a3 = js.linear.poisson((2, 2, 2)).as_matrix()
    assert np.all(np.diag(a3) == 6.0)


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_matches_dense_solve(case):
    op, b = case.operator(), case.rhs()
    sol = js.linear.solve(op, b, case.solver())
    ref = jnp.linalg.solve(case.dense(), b.reshape(-1)).reshape(b.shape)
    assert sol.result == js.RESULTS.successful
    np.testing.assert_allclose(sol.value, ref, rtol=1e-8, atol=1e-9)
    # The reported residual is the true one, and it meets the tolerance.
    true_r = jnp.linalg.norm(b.reshape(-1) - case.dense() @ sol.value.reshape(-1))
    np.testing.assert_allclose(
        sol.stats["residual_norm"], true_r, rtol=1e-6, atol=1e-14
    )
    assert true_r <= 1e-10 * jnp.linalg.norm(b) * (1 + 1e-9)
    assert 0 < int(sol.stats["num_steps"]) <= int(sol.stats["max_steps"])


def reference_sor(a, b, omega, order, rtol, max_steps=100_000):
    """Textbook SOR, one unknown at a time in the given order (NumPy, float64)."""
    a, b = np.asarray(a), np.asarray(b).reshape(-1)
    x = np.zeros_like(b)
    tol = rtol * np.linalg.norm(b)
    for k in range(1, max_steps + 1):
        for i in order:
            sigma = a[i] @ x - a[i, i] * x[i]
            x[i] = (1 - omega) * x[i] + omega * (b[i] - sigma) / a[i, i]
        if np.linalg.norm(b - a @ x) <= tol:
            return x, k
    raise AssertionError("reference SOR did not converge")


@pytest.mark.parametrize("ordering", ["natural", "red_black"])
@pytest.mark.parametrize("shape", [(5, 4), (3, 3, 4)])
def test_sor_iterates_match_textbook(ordering, shape):
    op = js.linear.poisson(shape, coefficient=variable_coefficient(shape), shift=0.1)
    b = jax.random.normal(jax.random.key(1), shape)
    n = math.prod(shape)
    if ordering == "natural":
        order = list(range(n))
    else:
        parity = np.indices(shape).sum(axis=0).reshape(-1) % 2
        order = [i for i in range(n) if parity[i] == 0] + [
            i for i in range(n) if parity[i] == 1
        ]
    x_ref, k_ref = reference_sor(op.as_matrix(), b, 1.6, order, rtol=1e-9)
    sol = js.linear.solve(op, b, js.linear.SOR(omega=1.6, rtol=1e-9, ordering=ordering))
    assert int(sol.stats["num_steps"]) == k_ref
    np.testing.assert_allclose(sol.value.reshape(-1), x_ref, rtol=1e-12, atol=1e-13)


def test_natural_stencil_equals_dense_natural():
    op = js.linear.poisson((6, 5), coefficient=variable_coefficient((6, 5)))
    b = jax.random.normal(jax.random.key(2), (6, 5))
    s = js.linear.SOR(omega=1.3, rtol=1e-10, ordering="natural")
    sten = js.linear.solve(op, b, s)
    dense = js.linear.solve(op.as_matrix(), b.reshape(-1), s)
    assert int(sten.stats["num_steps"]) == int(dense.stats["num_steps"])
    np.testing.assert_allclose(sten.value.reshape(-1), dense.value, rtol=1e-12)


@pytest.mark.parametrize("ordering", ["natural", "red_black"])
def test_ssor_preconditioner_matches_formula(ordering):
    """M^{-1} r from the sweeps equals the dense formula of the issue,
    M = (D + wL) D^-1 (D + wU) / (w (2 - w)), in the chosen ordering."""
    shape = (4, 5)
    op = js.linear.poisson(shape, coefficient=variable_coefficient(shape), shift=0.2)
    omega = 1.3
    solver = js.linear.SSORPCG(omega=omega, ordering=ordering)
    _, split = solver.init(op, {})
    r = jax.random.normal(jax.random.key(3), shape)
    got = solver._precondition(split, r, jnp.asarray(omega))
    a = np.asarray(op.as_matrix())
    n = a.shape[0]
    if ordering == "natural":
        perm = np.arange(n)
    else:
        parity = np.indices(shape).sum(axis=0).reshape(-1) % 2
        perm = np.concatenate(
            [np.flatnonzero(parity == 0), np.flatnonzero(parity == 1)]
        )
    ap = a[np.ix_(perm, perm)]
    d = np.diag(np.diag(ap))
    lo, up = np.tril(ap, -1), np.triu(ap, 1)
    m = (d + omega * lo) @ np.linalg.inv(d) @ (d + omega * up) / (omega * (2 - omega))
    want_perm = np.linalg.solve(m, np.asarray(r).reshape(-1)[perm])
    want = np.empty(n)
    want[perm] = want_perm
    np.testing.assert_allclose(np.asarray(got).reshape(-1), want, rtol=1e-12)


def test_ssorpcg_beats_cg_iterations():
    op = js.linear.poisson((32, 32))
    b = jax.random.normal(jax.random.key(4), (32, 32))
    ssor = js.linear.solve(op, b, js.linear.SSORPCG(omega=1.7, rtol=1e-8))
    cg = js.linear.solve(op, b, js.linear.SSORPCG(omega=1.0, rtol=1e-8))
    sor = js.linear.solve(op, b, js.linear.SOR(omega=1.0, rtol=1e-8))
    # SSOR(1.7)-PCG < SSOR(1)-PCG (symmetric Gauss-Seidel) << Gauss-Seidel.
    assert ssor.stats["num_steps"] < cg.stats["num_steps"] < sor.stats["num_steps"]


def test_young_omega():
    op = js.linear.poisson((12, 12))
    closed = js.linear.young_omega(op)
    np.testing.assert_allclose(closed, 2 / (1 + math.sin(math.pi / 13)), rtol=1e-12)
    # Dense eigen-solve path agrees with the closed form.
    np.testing.assert_allclose(
        js.linear.young_omega(op.as_matrix()), closed, rtol=1e-10
    )
    # ... and with a shift / variable coefficient it is computed numerically.
    var = js.linear.poisson((6, 7), coefficient=variable_coefficient((6, 7)))
    rho = js.linear.jacobi_spectral_radius(var)
    a = np.asarray(var.as_matrix())
    jac = np.eye(a.shape[0]) - a / np.diag(a)[:, None]
    np.testing.assert_allclose(rho, np.max(np.abs(np.linalg.eigvals(jac))), rtol=1e-10)
    # Young's omega is (near) the best omega for SOR on the model problem.
    b = jax.random.normal(jax.random.key(5), (12, 12))
    steps = {
        w: int(
            js.linear.solve(op, b, js.linear.SOR(omega=w, rtol=1e-8)).stats["num_steps"]
        )
        for w in (1.0, 1.3, float(closed), 1.9)
    }
    assert steps[float(closed)] == min(steps.values())


def test_lineax_linear_solve_interop():
    op = js.linear.poisson((8, 8))
    b = jax.random.normal(jax.random.key(6), (8, 8))
    for solver in (
        js.linear.SOR(omega=1.6, rtol=1e-10),
        js.linear.SSORPCG(omega=1.5, rtol=1e-10),
    ):
        sol = lx.linear_solve(op, b, solver)
        assert sol.result == lx.RESULTS.successful
        ref = jnp.linalg.solve(op.as_matrix(), b.reshape(-1)).reshape(8, 8)
        np.testing.assert_allclose(sol.value, ref, rtol=1e-8, atol=1e-10)
        # ... and lineax differentiates through it with our solver.
        g = jax.grad(lambda b: lx.linear_solve(op, b, solver).value.sum())(b)
        g_ref = jnp.linalg.solve(op.as_matrix().T, jnp.ones(64)).reshape(8, 8)
        np.testing.assert_allclose(g, g_ref, rtol=1e-7)


def test_lineax_solver_through_driver():
    op = js.linear.poisson((6, 6))
    b = jnp.ones((6, 6))
    sol = js.linear.solve(op, b, lx.Cholesky())
    ref = jnp.linalg.solve(op.as_matrix(), b.reshape(-1)).reshape(6, 6)
    np.testing.assert_allclose(sol.value, ref, rtol=1e-12)
    assert sol.result == js.RESULTS.successful


def test_x0_warm_start_and_not_mutated():
    op = js.linear.poisson((10, 10))
    b = jax.random.normal(jax.random.key(7), (10, 10))
    solver = js.linear.SOR(omega=1.5, rtol=1e-9)
    exact = jnp.linalg.solve(op.as_matrix(), b.reshape(-1)).reshape(10, 10)
    x0 = exact + 1e-6
    x0_copy = np.array(x0)
    warm = js.linear.solve(op, b, solver, x0=x0)
    cold = js.linear.solve(op, b, solver)
    assert warm.stats["num_steps"] < cold.stats["num_steps"]
    np.testing.assert_array_equal(np.asarray(x0), x0_copy)
    # An exact initial guess needs no sweep at all.
    done = js.linear.solve(op, b, js.linear.SOR(omega=1.5, rtol=1e-6), x0=exact)
    assert int(done.stats["num_steps"]) == 0


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_zero_rhs_gives_exact_zero(case):
    op = case.operator()
    b = jnp.zeros_like(case.rhs())
    x0 = jnp.ones_like(b)
    sol = js.linear.solve(op, b, case.solver(), x0=x0)
    assert sol.result == js.RESULTS.successful
    assert int(sol.stats["num_steps"]) == 0
    assert np.all(np.asarray(sol.value) == 0.0)
