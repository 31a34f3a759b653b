r"""Implicit hypergradients: the Hessian-based baselines (AID, and the KKT/GAM version
for lower levels with active linear constraints)."""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

from .._core import finalise, implicit_jvp, iterate, RESULTS, Solution
from ._base import check_int, check_positive, to_param
from ._sets import _Projector, _Rows, slack_structure


class Newton(eqx.Module):
    r"""Damped Newton-CG for a smooth strongly convex lower level $\min_y f(x, y)$:
    the Newton direction from CG on Hessian-vector products (never a dense
    Hessian), Armijo backtracking, stop when $\|\nabla_y f\| \le \text{atol} +
    \max(\text{rtol}, 100\varepsilon)\,\|\nabla_y f(x, y_0)\|$ ($\varepsilon$ the
    dtype's machine epsilon: the defaults are float64-tight, float32 gets its floor).

    **Arguments:** `rtol`, `atol`, `max_steps` (Newton steps), `cg_max_steps`.
    """

    rtol: float = 1e-10
    atol: float = 1e-10
    max_steps: int = eqx.field(default=50, static=True)
    cg_max_steps: int = eqx.field(default=200, static=True)

    def __check_init__(self):
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"Newton({name}=...) must be a float >= 0, got {v!r}.")
        check_int(self.max_steps, "max_steps", "Newton")
        check_int(self.cg_max_steps, "cg_max_steps", "Newton")

    def run(self, fn: Callable, y0: Array):
        """Minimise `fn(y)` (flat `y`) from `y0`: `(y, result, stats)`."""
        grad = jax.grad(fn)
        g0 = jnp.linalg.norm(grad(y0))
        # Never below the precision floor of the dtype (float32: ~1e-5 relative).
        eps = jnp.finfo(y0.dtype).eps
        tol = self.atol + jnp.maximum(self.rtol, 100 * eps) * g0

        def hvp(v, y):
            return jax.jvp(grad, (y,), (v,))[1]

        def body(c):
            y, _ = c
            g = grad(y)
            op = lx.FunctionLinearOperator(
                lambda v: hvp(v, y),
                jax.eval_shape(lambda: y),
                tags=(lx.symmetric_tag, lx.positive_semidefinite_tag),
            )
            solver = lx.CG(rtol=1e-12, atol=0.0, max_steps=self.cg_max_steps)
            d = -lx.linear_solve(op, g, solver, throw=False).value
            d = jnp.where(jnp.all(jnp.isfinite(d)), d, -g)
            f0, slope = fn(y), jnp.dot(g, d)

            def ls_cond(t):
                return (fn(y + t * d) > f0 + 1e-4 * t * slope) & (t > 1e-10)

            t = jax.lax.while_loop(ls_cond, lambda t: t / 2, jnp.ones((), y.dtype))
            y = y + t * d
            return y, jnp.linalg.norm(grad(y))

        def cond(c):
            return (c[1] > tol) & jnp.isfinite(c[1])

        (y, gnorm), steps = iterate(body, cond, (y0, g0), self.max_steps)
        result = RESULTS.where(
            gnorm <= tol, RESULTS.successful, RESULTS.max_steps_reached
        )
        result = RESULTS.where(jnp.isfinite(gnorm), result, RESULTS.nonfinite)
        return y, result, {"num_steps": steps, "residual_norm": gnorm}


class ProjectedGradient(eqx.Module):
    r"""Accelerated projected gradient (FISTA) for a lower level with affine
    constraints, $\min_y \{f(x, y) : g(x, y) \le 0,\ h(x, y) = 0\}$; the projection
    onto the polyhedron is the warm-started dual QP of
    [`jaxsolve.bilevel.Polyhedron`][]. Stops on the projected-gradient mapping
    $\|y - P(y - t \nabla f)\|/t \le \text{atol} + \text{rtol}\,(\cdot)_0$.

    **Arguments:** `step` ($t$; `None`: $1/L$ with $L$ from 50 power iterations on
    Hessian-vector products at $y_0$, times 1.5), `rtol`, `atol`, `max_steps`,
    `qp_steps` (iterations per projection), `structure` (static; advanced): the
    slack structure of the constraint rows as returned by
    `BilevelProblem.projection_structure(x, y)[1]`. It is detected automatically
    when the rows are concrete; pass it to keep the exact semismooth-Newton
    projection when the constraint data are traced (e.g. passed into `jit`).
    """

    step: float | None = None
    rtol: float = 1e-8
    atol: float = 1e-8
    max_steps: int = eqx.field(default=20_000, static=True)
    qp_steps: int = eqx.field(default=20, static=True)
    structure: tuple[tuple[int, ...], tuple[int, ...]] | None = eqx.field(
        default=None, static=True
    )

    def __check_init__(self):
        if self.step is not None:
            check_positive(
                to_param(self.step, "step", "ProjectedGradient"),
                "step",
                "ProjectedGradient",
            )
        check_int(self.max_steps, "max_steps", "ProjectedGradient")
        check_int(self.qp_steps, "qp_steps", "ProjectedGradient")

    def run(self, fn: Callable, y0: Array, proj: _Projector, shift_g, shift_e):
        grad = jax.grad(fn)
        if self.step is None:

            def power(_, v):
                w = jax.jvp(grad, (y0,), (v,))[1]
                return w / jnp.maximum(jnp.linalg.norm(w), 1e-30)

            v = jnp.ones_like(y0) / jnp.sqrt(y0.size)
            v = jax.lax.fori_loop(0, 50, power, v)
            L = jnp.linalg.norm(jax.jvp(grad, (y0,), (v,))[1])
            t = 1 / (1.5 * jnp.maximum(L, 1e-12))
        else:
            t = jnp.asarray(self.step, y0.dtype)
        duals0 = jnp.zeros((proj.num_duals,), y0.dtype)
        y0, duals0 = proj(y0, duals0, 50 * self.qp_steps, shift_g, shift_e)

        def mapping(y, duals):
            y_new, duals = proj(y - t * grad(y), duals, self.qp_steps, shift_g, shift_e)
            return y_new, duals, jnp.linalg.norm(y_new - y) / t

        _, _, r0 = mapping(y0, duals0)
        eps = jnp.finfo(y0.dtype).eps
        tol = self.atol + jnp.maximum(self.rtol, 100 * eps) * r0

        def body(c):
            y, y_prev, s, duals, _ = c
            s_next = (1 + jnp.sqrt(1 + 4 * s**2)) / 2
            w = y + ((s - 1) / s_next) * (y - y_prev)
            y_new, duals, _ = mapping(w, duals)
            # Residual at the new iterate (a restart if the objective went up).
            _, _, r = mapping(y_new, duals)
            restart = fn(y_new) > fn(y)
            s_next = jnp.where(restart, jnp.ones_like(s_next), s_next)
            return y_new, jnp.where(restart, y_new, y), s_next, duals, r

        one = jnp.ones((), y0.dtype)
        init = (y0, y0, one, duals0, r0)
        (y, _, _, duals, r), steps = iterate(
            body, lambda c: (c[4] > tol) & jnp.isfinite(c[4]), init, self.max_steps
        )
        result = RESULTS.where(r <= tol, RESULTS.successful, RESULTS.max_steps_reached)
        result = RESULTS.where(jnp.isfinite(r), result, RESULTS.nonfinite)
        return y, result, {"num_steps": steps, "residual_norm": r}


def _grad_rewrite(y, inputs):
    x, lower, _ = inputs
    return jax.grad(lower, argnums=1)(x, y)


def _hessian_operator(y, inputs):
    x, lower, _ = inputs
    grad = jax.grad(lower, argnums=1)
    return lx.FunctionLinearOperator(
        lambda v: jax.jvp(lambda y: grad(x, y), (y,), (v,))[1],
        jax.eval_shape(lambda: y),
        tags=(lx.symmetric_tag, lx.positive_semidefinite_tag),
    )


class _NewtonPrimal(eqx.Module):
    solver: Newton

    def __call__(self, inputs):
        x, lower, y0 = inputs
        flat0, unravel = ravel_pytree(y0)
        y, result, stats = self.solver.run(lambda v: lower(x, unravel(v)), flat0)
        # A failed solve must not reach the tangent solve with NaNs (lineax would
        # raise there, throw=False or not): a finite stand-in, flagged by `result`
        # (the hypergradient and the returned state are set to NaN afterwards).
        ok = (result == RESULTS.successful) & jnp.all(jnp.isfinite(y))
        return unravel(jnp.where(ok, y, 0)), (result, stats)


class _FlatFns(eqx.Module):
    """The lower level's functions on a flat `y` (closure-converted: their constants
    are pytree leaves, so they travel through the implicit rule as inputs)."""

    lower: Callable
    ineq: Callable | None
    eq: Callable | None
    unravel: Callable = eqx.field(static=True)

    def f(self, x, v):
        return self.lower(x, self.unravel(v))

    def g(self, x, v):
        return ravel_pytree(self.ineq(x, self.unravel(v)))[0]

    def h(self, x, v):
        return ravel_pytree(self.eq(x, self.unravel(v)))[0]


def _kkt_rewrite(root, inputs):
    y, mu, nu = root
    x, fns, mask, _ = inputs

    def lag(y):
        out = fns.f(x, y)
        if fns.ineq is not None:
            out = out + jnp.dot(jnp.where(mask, mu, 0), fns.g(x, y))
        if fns.eq is not None:
            out = out + jnp.dot(nu, fns.h(x, y))
        return out

    r_y = jax.grad(lag)(y)
    # Active rows hold with equality; inactive multipliers are pinned to 0.
    r_mu = mu if fns.ineq is None else jnp.where(mask, fns.g(x, y), mu)
    r_nu = nu if fns.eq is None else fns.h(x, y)
    return r_y, r_mu, r_nu


class _StoredPrimal(eqx.Module):
    def __call__(self, inputs):
        return inputs[-1], None


def implicit_hypergradient(
    upper: Callable,
    lower: Callable,
    x: PyTree[Float[Array, "..."]],
    y0: PyTree[Float[Array, "..."]],
    *,
    inequality: Callable | None = None,
    equality: Callable | None = None,
    lower_solver: Newton | ProjectedGradient | None = None,
    adjoint_solver: lx.AbstractLinearSolver | None = None,
    mode: Literal["reverse", "forward"] = "reverse",
    active_tol: float = 1e-6,
    throw: bool = True,
    full_output: bool = False,
) -> PyTree[Float[Array, "..."]] | Solution:
    r"""The hypergradient $\nabla \Phi(x)$ of $\Phi(x) = F(x, y^\star(x))$ by implicit
    differentiation (the Hessian-based baseline of the bilevel family).

    **Unconstrained** ($f(x, \cdot)$ smooth, strongly convex): solve the lower level
    (`Newton`: Newton-CG on Hessian-vector products), then by the implicit function
    theorem on $\nabla_y f(x, y^\star) = 0$,
    $$\nabla\Phi = \nabla_x F - \nabla^2_{xy} f\, [\nabla^2_{yy} f]^{-1} \nabla_y F,$$
    evaluated through `jaxsolve._core.implicit_jvp` (a custom JVP whose tangent is a
    `lineax` CG solve on Hessian-vector products): reverse mode
    (`mode="reverse"`, one adjoint solve) or forward mode (`mode="forward"`, one
    solve per entry of $x$). Higher derivatives work through the same rule.

    **Active affine constraints** (`inequality` and/or `equality` given; the GAM
    approach): solve the constrained lower level (`ProjectedGradient`), take the
    constraints with $g_i \ge -$`active_tol` as active, and differentiate the KKT
    system $\nabla_y L = 0$, $g_{\mathcal A} = 0$, $h = 0$ (multipliers by least
    squares) with a dense solve (`lineax.LU`, or `adjoint_solver`). Valid where the
    active set is locally constant (strict complementarity, LICQ).

    **Arguments:**

    - `upper`, `lower`: $F(x, y)$, $f(x, y)$; `inequality`, `equality`: $g$, $h$.
    - `x`: where to evaluate; `y0`: the start of the lower-level solve.
    - `lower_solver`: `Newton()` (default, unconstrained) or `ProjectedGradient()`
        (default with constraints).
    - `adjoint_solver`: a lineax solver for the implicit system (default
        `lineax.CG` for the Hessian, `lineax.LU` for the KKT matrix).
    - `throw`: a lower-level solve that did not converge raises (also under
        `jit`); with `throw=False` the hypergradient is NaN instead (never a silently
        wrong number) and `full_output=True` gives the result code.
    - `full_output`: return a [`jaxsolve.Solution`][] (`value` the hypergradient,
        `state` $y^\star$, `stats` with the lower solve's `num_steps`,
        `residual_norm`) instead of the bare pytree.

    **Returns:** a pytree like `x` (or a `Solution`).

    ??? cite "References"

        Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS
        2022; Xu and Zhu, "Efficient Gradient Approximation Method for Constrained
        Bilevel Optimization" (GAM), AAAI 2023.

    !!! example

        ```python
        import jax.numpy as jnp, jaxsolve as js
        F = lambda lam, w: jnp.sum((w - 1.0) ** 2)
        f = lambda lam, w: 0.5 * jnp.sum(w**2) * (1 + lam) - jnp.sum(w)
        g = js.bilevel.implicit_hypergradient(F, f, jnp.array(0.5), jnp.zeros(3))
        ```
    """
    for name, fn in (("upper", upper), ("lower", lower)):
        if not callable(fn):
            raise TypeError(f"implicit_hypergradient: `{name}` must be callable.")
    if mode not in ("reverse", "forward"):
        raise ValueError(f"mode must be 'reverse' or 'forward', got {mode!r}.")
    constrained = inequality is not None or equality is not None
    if lower_solver is None:
        lower_solver = ProjectedGradient() if constrained else Newton()
    if constrained and not isinstance(lower_solver, ProjectedGradient):
        raise ValueError(
            "With constraints the lower level needs `lower_solver="
            "jaxsolve.bilevel.ProjectedGradient(...)`."
        )
    if not constrained and not isinstance(lower_solver, Newton):
        raise ValueError(
            "Without constraints `lower_solver` must be jaxsolve.bilevel.Newton(...)."
        )
    try:
        out = jax.eval_shape(upper, x, y0), jax.eval_shape(lower, x, y0)
    except Exception as err:  # noqa: BLE001
        raise ValueError(
            f"upper/lower(x, y0) failed ({type(err).__name__}: {err}); check the "
            "structure of x and y0."
        ) from err
    if any(jnp.shape(o) != () for o in out):
        raise ValueError("`upper` and `lower` must return scalars.")
    lower_cc = eqx.filter_closure_convert(lower, x, y0)
    ineq_cc = (
        None if inequality is None else eqx.filter_closure_convert(inequality, x, y0)
    )
    eq_cc = None if equality is None else eqx.filter_closure_convert(equality, x, y0)

    def phi(x):
        if constrained:
            y, (result, stats) = _kkt_solution(
                lower_cc,
                ineq_cc,
                eq_cc,
                x,
                y0,
                lower_solver,
                adjoint_solver,
                active_tol,
            )
        else:
            solver = (
                lx.CG(rtol=1e-10, atol=1e-12)
                if adjoint_solver is None
                else adjoint_solver
            )
            y, (result, stats) = implicit_jvp(
                _NewtonPrimal(lower_solver),
                _grad_rewrite,
                (x, lower_cc, y0),
                solver,
                _hessian_operator,
                throw=throw,
            )
        return upper(x, y), (y, result, stats)

    if mode == "reverse":
        grad, (y, result, stats) = jax.grad(phi, has_aux=True)(x)
    else:
        grad, (y, result, stats) = jax.jacfwd(phi, has_aux=True)(x)
    ok = result == RESULTS.successful
    # Never a silently wrong number: a failed lower solve gives NaN.
    grad = jax.tree_util.tree_map(lambda g: jnp.where(ok, g, jnp.nan), grad)
    y = jax.tree_util.tree_map(lambda a: jnp.where(ok, a, jnp.nan), y)
    stats = dict(stats)
    stats["max_steps"] = jnp.asarray(lower_solver.max_steps, jnp.int32)
    sol = finalise(grad, result, stats, (x, y0), throw, state=y)
    return sol if full_output else sol.value


def _kkt_solution(lower, ineq, eq, x, y0, solver, adjoint_solver, active_tol):
    flat0, unravel = ravel_pytree(y0)
    fns = _FlatFns(lower, ineq, eq, unravel)
    xs = jax.lax.stop_gradient(x)
    zero = jnp.zeros_like(flat0)

    def lin(fn):
        c = fn(xs, zero)
        return jax.jacfwd(lambda v: fn(xs, v))(zero), c

    Gy, gc = lin(fns.g) if ineq is not None else (None, None)
    Ey, ec = lin(fns.h) if eq is not None else (None, None)
    rows = _Rows(
        None, None, Gy, None if gc is None else -gc, Ey, None if ec is None else -ec
    )
    # Exact semismooth-Newton projection when the rows have slack structure and are
    # concrete (e.g. constraints that do not involve x, data closed over).
    structure = solver.structure or slack_structure(rows)
    proj = _Projector(rows, solver.qp_steps, structure)
    y, result, stats = solver.run(lambda v: fns.f(xs, v), flat0, proj, None, None)
    # A failed solve must not reach the KKT tangent solve with NaNs (lineax raises
    # there, throw=False or not): finite stand-ins, the failure flagged by `result`.
    ok = (result == RESULTS.successful) & jnp.all(jnp.isfinite(y))
    y = jnp.where(ok, y, 0)
    x = jax.tree_util.tree_map(lambda a: jnp.where(ok, a, 0), x)
    xs = jax.lax.stop_gradient(x)
    m = 0 if Gy is None else Gy.shape[0]
    mask = jnp.zeros((0,), bool) if ineq is None else fns.g(xs, y) >= -active_tol
    # Multipliers by least squares on grad f + G_A^T mu + E^T nu = 0.
    cols = []
    if Gy is not None:
        cols.append(jnp.where(mask[None, :], Gy.T, 0))
    if Ey is not None:
        cols.append(Ey.T)
    gf = jax.grad(fns.f, argnums=1)(xs, y)
    mult = jnp.linalg.lstsq(jnp.concatenate(cols, axis=1), -gf)[0]
    mu, nu = mult[:m], mult[m:]
    root = jax.lax.stop_gradient((y, mu, nu))
    linear_solver = lx.LU() if adjoint_solver is None else adjoint_solver
    inputs = (x, fns, mask, root)
    (y, _, _), _ = implicit_jvp(_StoredPrimal(), _kkt_rewrite, inputs, linear_solver)
    return unravel(y), (result, stats)
