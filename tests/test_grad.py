"""grad/jvp through the solvers (implicit differentiation) against central finite
differences in float64, for b and for the operator's parameters."""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import jaxsolve as js

from .helpers import finite_difference_jvp, IDS, REGISTRY, variable_coefficient


def _loss(x):
    return jnp.sum(jnp.sin(x) * jnp.arange(x.size, dtype=x.dtype).reshape(x.shape))


@pytest.mark.parametrize("case", REGISTRY, ids=IDS)
def test_grad_wrt_b_and_operator(case, getkey):
    op, b = case.operator(), case.rhs()
    solver = case.solver(rtol=1e-13)

    def f(op, b):
        return _loss(js.linear.solve(op, b, solver).value)

    g_op, g_b = jax.grad(f, argnums=(0, 1))(op, b)
    # Directional derivatives: random direction in b and in the operator's arrays.
    t_b = jax.random.normal(getkey(), b.shape, b.dtype)
    t_op = jax.tree_util.tree_map(
        lambda a: (
            jax.random.normal(getkey(), a.shape, a.dtype)
            if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jnp.floating)
            else a
        ),
        op,
    )
    fd = finite_difference_jvp(f, (op, b), (t_op, t_b), eps=1e-6)
    dot = lambda u, v: sum(
        jnp.vdot(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(v))
    )
    np.testing.assert_allclose(dot(g_b, t_b) + dot(g_op, t_op), fd, rtol=1e-6)
    # Forward mode agrees with reverse mode.
    _, jvp = jax.jvp(f, (op, b), (t_op, t_b))
    np.testing.assert_allclose(jvp, fd, rtol=1e-6)


def test_grad_wrt_poisson_coefficient_field():
    shape = (6, 5)
    b = jnp.ones(shape)

    def f(k):
        op = js.linear.poisson(shape, coefficient=k)
        return _loss(js.linear.solve(op, b, js.linear.SOR(omega=1.5, rtol=1e-13)).value)

    k = variable_coefficient(shape)
    g = jax.grad(f)(k)

    # Independent reference: dense solve, differentiated by finite differences.
    def f_dense(k):
        from .test_linear import numpy_poisson

        a = numpy_poisson(shape, np.asarray(k))
        return float(_loss(jnp.asarray(np.linalg.solve(a, np.ones(30)).reshape(shape))))

    eps = 1e-6
    for idx in [(0, 0), (2, 3), (5, 4)]:
        e = np.zeros(shape)
        e[idx] = eps
        fd = (f_dense(k + e) - f_dense(k - e)) / (2 * eps)
        np.testing.assert_allclose(g[idx], fd, rtol=1e-6)


def _small_problem():
    op = js.linear.poisson((5, 4))
    b = jax.random.normal(jax.random.key(0), (5, 4))
    return op, b, js.linear.SSORPCG(omega=1.4, rtol=1e-13)


def test_unrolled_adjoint_matches_implicit():
    op, b, solver = _small_problem()

    def f(b, adjoint):
        return _loss(js.linear.solve(op, b, solver, adjoint=adjoint).value)

    g_imp = jax.grad(f)(b, js.ImplicitAdjoint())
    g_unr = jax.grad(f)(b, js.UnrolledAdjoint())
    np.testing.assert_allclose(g_unr, g_imp, rtol=1e-8)
    # An explicit checkpoint budget reaches the loop (same derivative).
    g_two = jax.grad(f)(b, js.UnrolledAdjoint(checkpoints=2))
    np.testing.assert_allclose(g_two, g_imp, rtol=1e-8)


@pytest.mark.slow
def test_hessian_through_implicit_rule():
    """Second order (forward-over-reverse) through the implicit rule, against the
    closed form H = A^-T diag(-sin(x) w) A^-1."""
    op, b, solver = _small_problem()
    h = jax.hessian(lambda b: _loss(js.linear.solve(op, b, solver).value))(b)
    a = op.as_matrix()
    ainv = np.linalg.inv(a)
    x = ainv @ np.asarray(b).reshape(-1)
    w = np.arange(20.0)
    h_ref = ainv.T @ np.diag(-np.sin(x) * w) @ ainv
    np.testing.assert_allclose(
        np.asarray(h).reshape(20, 20), h_ref, rtol=1e-7, atol=1e-12
    )


def test_unrolled_adjoint_forward_mode_raises_clearly():
    op = js.linear.poisson((4, 4))
    b = jnp.ones((4, 4))
    solver = js.linear.SOR(omega=1.4)
    with pytest.raises(Exception):
        jax.jvp(
            lambda b: (
                js.linear.solve(op, b, solver, adjoint=js.UnrolledAdjoint()).value
            ),
            (b,),
            (b,),
        )


def test_vmap_of_grad_and_grad_of_vmap():
    op = js.linear.poisson((4, 5))
    solver = js.linear.SOR(omega=1.3, rtol=1e-13)
    bs = jax.random.normal(jax.random.key(1), (3, 4, 5))
    f = lambda b: _loss(js.linear.solve(op, b, solver).value)
    g1 = jax.vmap(jax.grad(f))(bs)
    g2 = jax.grad(lambda bs: jax.vmap(f)(bs).sum())(bs)
    ainv_t = np.linalg.inv(np.asarray(op.as_matrix())).T
    for i in range(3):
        x = np.linalg.solve(np.asarray(op.as_matrix()), np.asarray(bs[i]).reshape(-1))
        ref = ainv_t @ (np.cos(x) * np.arange(20.0))
        np.testing.assert_allclose(g1[i].reshape(-1), ref, rtol=1e-8)
        np.testing.assert_allclose(g2[i].reshape(-1), ref, rtol=1e-8)


def test_gradient_memory_is_independent_of_iterations():
    """Implicit differentiation stores no per-sweep residuals: the backward pass's
    jaxpr has the same size whatever max_steps is (no stacked trajectory)."""
    op = js.linear.poisson((8, 8))
    b = jnp.ones((8, 8))

    def grad_jaxpr_size(max_steps):
        solver = js.linear.SOR(omega=1.0, rtol=1e-12, max_steps=max_steps)
        f = lambda b: js.linear.solve(op, b, solver, throw=False).value.sum()
        jaxpr = jax.make_jaxpr(jax.grad(f))(b)
        shapes = [v.aval.shape for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars]
        return max(int(np.prod(s)) for s in shapes)

    assert grad_jaxpr_size(100) == grad_jaxpr_size(10_000) <= 64 * 64


def test_omega_has_zero_gradient():
    """The solution does not depend on omega (only the path to it does)."""
    op = js.linear.poisson((4, 4))
    b = jnp.ones((4, 4))
    g = jax.grad(
        lambda w: js.linear.solve(op, b, js.linear.SOR(omega=w, rtol=1e-12)).value.sum()
    )(jnp.asarray(1.5))
    assert float(g) == 0.0


def test_lineax_operator_gradient():
    m = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    b = jnp.array([1.0, 2.0, 3.0])

    def f(m):
        op = lx.MatrixLinearOperator(m)
        return js.linear.solve(op, b, js.linear.SOR(omega=1.1, rtol=1e-13)).value.sum()

    g = jax.grad(f)(m)
    x = np.linalg.solve(m, b)
    lam = np.linalg.solve(np.asarray(m).T, np.ones(3))
    np.testing.assert_allclose(g, -np.outer(lam, x), rtol=1e-9)
