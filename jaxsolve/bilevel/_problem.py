r"""`BilevelProblem`: the problem definition shared by every bilevel solver."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PyTree

from ._sets import _combine, _Projector, _Rows, AbstractSet, Reals, slack_structure


class BilevelProblem(eqx.Module):
    r"""A bilevel optimisation problem with (possibly coupled) lower-level constraints:

    $$\min_{x \in X,\ y \in Y} F(x, y) \quad \text{s.t.} \quad
      y \in S(x) = \operatorname*{argmin}_{\theta \in Y}
      \{ f(x, \theta) : g(x, \theta) \le 0,\ h(x, \theta) = 0 \}.$$

    **Arguments:**

    - `upper`: $F(x, y)$, a scalar (the upper-level / outer objective).
    - `lower`: $f(x, y)$, a scalar (the lower-level / inner objective).
    - `inequality`: $g(x, y)$, an array, constraints $g \le 0$ of the lower level
        (they may couple $x$ and $y$), or `None`.
    - `equality`: $h(x, y)$, an array, constraints $h = 0$, or `None`.
    - `x_set`, `y_set`: [`jaxsolve.bilevel.Box`][], [`jaxsolve.bilevel.NonNegative`][],
        [`jaxsolve.bilevel.HalfSpace`][], [`jaxsolve.bilevel.Affine`][],
        [`jaxsolve.bilevel.Polyhedron`][] or `None` (the whole space).

    `x` and `y` may be any pytrees of floating arrays. The solvers project onto the
    joint set $C = \{(x, y) : x \in X, y \in Y, g \le 0, h = 0\}$, which must be
    convex: `inequality` and `equality` must be **affine** in $(x, y)$ jointly
    (checked numerically when `solve` is called with concrete inputs). Projections
    use closed forms where they exist (boxes, one affine system) and a warm-started
    dual QP otherwise.

    !!! example

        ```python
        import jax.numpy as jnp, jaxsolve as js
        problem = js.bilevel.BilevelProblem(
            upper=lambda x, y: jnp.sum((y - 1.0) ** 2) + jnp.sum(x**2),
            lower=lambda x, y: 0.5 * jnp.sum((y - x) ** 2),
        )
        ```
    """

    upper: Callable[..., Any]
    lower: Callable[..., Any]
    inequality: Callable[..., Any] | None = None
    equality: Callable[..., Any] | None = None
    x_set: AbstractSet = eqx.field(default_factory=Reals)
    y_set: AbstractSet = eqx.field(default_factory=Reals)

    def __init__(
        self,
        upper: Callable,
        lower: Callable,
        *,
        inequality: Callable | None = None,
        equality: Callable | None = None,
        x_set: AbstractSet | None = None,
        y_set: AbstractSet | None = None,
    ):
        for name, fn, optional in (
            ("upper", upper, False),
            ("lower", lower, False),
            ("inequality", inequality, True),
            ("equality", equality, True),
        ):
            if fn is None and optional:
                continue
            if not callable(fn):
                raise TypeError(
                    f"BilevelProblem({name}=...) must be a callable of (x, y), got "
                    f"{type(fn).__name__}."
                )
        for name, s in (("x_set", x_set), ("y_set", y_set)):
            if s is not None and not isinstance(s, AbstractSet):
                raise TypeError(
                    f"BilevelProblem({name}=...) must be a jaxsolve.bilevel set (Box, "
                    f"NonNegative, HalfSpace, Affine, Polyhedron) or None, got "
                    f"{type(s).__name__}."
                )
        self.upper = upper
        self.lower = lower
        self.inequality = inequality
        self.equality = equality
        self.x_set = Reals() if x_set is None else x_set
        self.y_set = Reals() if y_set is None else y_set

    # ---------------------------------------------------------------- checks --

    def check(self, x0: PyTree, y0: PyTree) -> None:
        """Validate `x0`, `y0` against the problem at trace time (shapes only):
        raises `ValueError` naming what does not fit."""
        for name, v in (("x0", x0), ("y0", y0)):
            leaves = jax.tree_util.tree_leaves(v)
            if not leaves:
                raise ValueError(f"`{name}` has no array leaves.")
            for leaf in leaves:
                dt = jnp.result_type(leaf)
                if not jnp.issubdtype(dt, jnp.floating):
                    raise ValueError(
                        f"`{name}` must hold floating arrays, got dtype {dt}; cast it "
                        f"(e.g. `{name}.astype(jnp.float32)`)."
                    )
        dtypes = {jnp.result_type(a) for a in jax.tree_util.tree_leaves((x0, y0))}
        if len(dtypes) != 1:
            raise ValueError(
                f"`x0` and `y0` must share one floating dtype, got {sorted(map(str, dtypes))};"
                " cast them to one (jaxsolve does not promote silently)."
            )
        for name, fn, scalar in (
            ("upper", self.upper, True),
            ("lower", self.lower, True),
            ("inequality", self.inequality, False),
            ("equality", self.equality, False),
        ):
            if fn is None:
                continue
            try:
                out = jax.eval_shape(fn, x0, y0)
            except Exception as err:  # noqa: BLE001 - re-raised with context
                raise ValueError(
                    f"`{name}(x0, y0)` failed: {type(err).__name__}: {err}. Check that "
                    "x0 and y0 have the structure and shapes the problem's functions "
                    "expect."
                ) from err
            leaves = jax.tree_util.tree_leaves(out)
            if scalar and (len(leaves) != 1 or leaves[0].shape != ()):
                raise ValueError(
                    f"`{name}(x, y)` must return a scalar, got "
                    f"{jax.tree_util.tree_map(lambda a: a.shape, out)}."
                )
            if not scalar and any(
                not jnp.issubdtype(a.dtype, jnp.floating) for a in leaves
            ):
                raise ValueError(f"`{name}(x, y)` must return floating arrays.")
        # Set shapes: building the rows raises if a set does not fit its variable.
        for name, s, v in (("x_set", self.x_set, x0), ("y_set", self.y_set, y0)):
            try:
                jax.eval_shape(lambda a, s=s: s.rows(a), v)
            except ValueError as err:
                raise ValueError(f"{name} does not fit `{name[0]}0`: {err}") from None

    def check_affine(self, x0: PyTree, y0: PyTree) -> None:
        """Eager check (concrete inputs only) that the constraints are affine."""
        for name, fn in (("inequality", self.inequality), ("equality", self.equality)):
            if fn is None:
                continue
            v0, unravel = ravel_pytree((x0, y0))
            if isinstance(v0, jax.core.Tracer):
                return
            flat_fn = lambda v, fn=fn: ravel_pytree(fn(*unravel(v)))[0]  # noqa: E731
            rng = np.random.default_rng(0)
            d1 = jnp.asarray(rng.standard_normal(v0.shape), v0.dtype)
            d2 = jnp.asarray(rng.standard_normal(v0.shape), v0.dtype)
            # Affine <=> g(v0 + d1 + d2) - g(v0 + d1) - g(v0 + d2) + g(v0) = 0.
            sec = (
                flat_fn(v0 + d1 + d2)
                - flat_fn(v0 + d1)
                - flat_fn(v0 + d2)
                + flat_fn(v0)
            )
            scale = 1 + jnp.max(jnp.abs(flat_fn(v0)), initial=0.0)
            tol = 1e3 * jnp.finfo(v0.dtype).eps * scale * 10
            if bool(jnp.max(jnp.abs(sec), initial=0.0) > tol):
                raise ValueError(
                    f"BilevelProblem({name}=...) is not affine in (x, y): the "
                    "bilevel solvers project onto {(x, y): g <= 0, h = 0}, which "
                    "needs affine constraints (a convex polyhedron). Move nonlinear "
                    "convex constraints of y alone into `y_set`, or linearise them."
                )

    # --------------------------------------------------------------- flatten --

    def flatten(
        self, x0: PyTree, y0: PyTree, qp_steps: int, structure=None
    ) -> "FlatProblem":
        return FlatProblem(self, x0, y0, qp_steps, structure)

    def projection_structure(self, x0: PyTree, y0: PyTree):
        """The static slack structure of the joint set $C$ and of the fibre $C(x)$
        (see `_sets.slack_structure`), detected from concrete data; `None` parts
        where absent or when traced (the projections then use the dual QP)."""
        leaves = jax.tree_util.tree_leaves(eqx.filter((self, x0, y0), eqx.is_array))
        if any(isinstance(a, jax.core.Tracer) for a in leaves):
            return None
        if self.inequality is None:
            return None
        xf, ux = ravel_pytree(x0)
        yf, uy = ravel_pytree(y0)
        rows = _linear_rows(
            self, _wrap(self.inequality, ux, uy), _wrap(self.equality, ux, uy), x0, y0
        )
        return slack_structure(rows["joint"]), slack_structure(rows["fibre"])


def _wrap(fn, ux, uy):
    if fn is None:
        return None
    return lambda x, y: ravel_pytree(fn(ux(x), uy(y)))[0]


def _linear_rows(problem, ineq, eq, x0, y0) -> dict:
    """The rows of X, Y, the joint set C and the fibre C(x) in flat coordinates
    (the constraints are affine: read off their Jacobian at 0)."""
    xf, yf = ravel_pytree(x0)[0], ravel_pytree(y0)[0]
    zx, zy = jnp.zeros_like(xf), jnp.zeros_like(yf)
    nx, ny = xf.shape[0], yf.shape[0]

    def linearise(fn):
        if fn is None:
            return None, None, None, 0
        c = fn(zx, zy)
        Jx, Jy = jax.jacfwd(fn, argnums=(0, 1))(zx, zy)
        return Jx, Jy, c, c.shape[0]

    Gx, Gy, gc, m = linearise(ineq)
    Ex, Ey, ec, q = linearise(eq)
    # Constraint rows: G v + gc <= 0 => G v <= -gc; E v + ec = 0 => E v = -ec.
    cons = _Rows(
        None,
        None,
        None if Gx is None else jnp.concatenate([Gx, Gy], axis=1),
        None if gc is None else -gc,
        None if Ex is None else jnp.concatenate([Ex, Ey], axis=1),
        None if ec is None else -ec,
    )
    x_rows = problem.x_set.rows(x0)
    y_rows = problem.y_set.rows(y0)
    fibre_cons = _Rows(
        None, None, Gy, None if gc is None else -gc, Ey, None if ec is None else -ec
    )
    return {
        "m": m,
        "q": q,
        "Gx": Gx,
        "Ex": Ex,
        "x": x_rows,
        "y": y_rows,
        "joint": _combine(nx + ny, (x_rows, 0), (y_rows, nx), (cons, 0)),
        "fibre": _combine(ny, (y_rows, 0), (fibre_cons, 0)),
    }


class FlatProblem(eqx.Module):
    """The problem on flat vectors `x`, `y`, with its projections (internal)."""

    upper: Callable
    lower: Callable
    ineq: Callable | None
    eq: Callable | None
    nx: int = eqx.field(static=True)
    ny: int = eqx.field(static=True)
    m: int = eqx.field(static=True)
    q: int = eqx.field(static=True)
    unravel_x: Callable = eqx.field(static=True)
    unravel_y: Callable = eqx.field(static=True)
    joint: _Projector  # (x, y) onto C
    xproj: _Projector  # x onto X
    theta: _Projector  # y onto Y
    fibre: _Projector  # y onto C(x) = {y in Y : g(x, y) <= 0, h(x, y) = 0}
    Gx: Array | None
    Ex: Array | None

    def __init__(self, problem: BilevelProblem, x0, y0, qp_steps: int, structure=None):
        xf, self.unravel_x = ravel_pytree(x0)
        yf, self.unravel_y = ravel_pytree(y0)
        self.nx, self.ny = xf.shape[0], yf.shape[0]
        ux, uy = self.unravel_x, self.unravel_y
        self.upper = lambda x, y: problem.upper(ux(x), uy(y))
        self.lower = lambda x, y: problem.lower(ux(x), uy(y))

        self.ineq = _wrap(problem.inequality, ux, uy)
        self.eq = _wrap(problem.equality, ux, uy)
        rows = _linear_rows(problem, self.ineq, self.eq, x0, y0)
        self.m, self.q = rows["m"], rows["q"]
        self.Gx, self.Ex = rows["Gx"], rows["Ex"]
        joint_s, fibre_s = (None, None) if structure is None else structure
        self.joint = _Projector(rows["joint"], qp_steps, joint_s)
        self.theta = _Projector(rows["y"], qp_steps)
        self.xproj = _Projector(rows["x"], qp_steps)
        self.fibre = _Projector(rows["fibre"], qp_steps, fibre_s)

    def fibre_shift(self, x):
        """Right-hand-side shifts of C(x)'s rows for a given x (y_set rows first)."""
        rows = self.fibre.rows
        shift_g = shift_e = None
        if rows.G is not None:
            n_set = rows.G.shape[0] - self.m
            sg = jnp.zeros((n_set,), x.dtype)
            shift_g = sg if self.Gx is None else jnp.concatenate([sg, -self.Gx @ x])
        if rows.E is not None:
            n_set = rows.E.shape[0] - self.q
            se = jnp.zeros((n_set,), x.dtype)
            shift_e = se if self.Ex is None else jnp.concatenate([se, -self.Ex @ x])
        return shift_g, shift_e

    def fibre_multipliers(self, duals):
        """The part of the fibre projection's duals that belongs to g and h (the
        y_set's own rows come first in each block)."""
        rows = self.fibre.rows
        mg = 0 if rows.G is None else rows.G.shape[0]
        mu = duals[mg - self.m : mg] if self.m else duals[:0]
        nu = duals[mg + (0 if rows.E is None else rows.E.shape[0]) - self.q :]
        return mu, (nu if self.q else duals[:0])

    def split(self, v):
        return v[: self.nx], v[self.nx :]

    def constraint_violation(self, x, y):
        return self.joint.violation(jnp.concatenate([x, y]))

    def lagrangian_x_grad(self, x, y, mu, nu):
        """$\\nabla_x [f + \\mu^\\top g + \\nu^\\top h](x, y)$."""

        def lag(x):
            out = self.lower(x, y)
            if self.ineq is not None:
                out = out + jnp.dot(mu, self.ineq(x, y))
            if self.eq is not None:
                out = out + jnp.dot(nu, self.eq(x, y))
            return out

        return jax.grad(lag)(x)
