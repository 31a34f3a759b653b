r"""Convex sets with Euclidean projections, for the variables of a bilevel problem.

Every set acts on a pytree (an array, a tuple, a dict, ...) and has

- `project(v)`: the Euclidean projection $\operatorname{argmin}_{u \in S} \|u - v\|_2$;
- `violation(v)`: a scalar, zero iff $v \in S$ (the largest constraint violation).

`Reals`, `Box`, `NonNegative`, `HalfSpace` and `Affine` project in closed form.
`Polyhedron` (intersections of half-spaces, affine sets and boxes, e.g. the joint set
$\{(x, y) : g(x, y) \le 0,\ h(x, y) = 0\}$ of a bilevel problem with affine
constraints) projects with a warm-startable dual accelerated projected-gradient method
on the multipliers, written in JAX (no external QP solver). Polyhedra whose rows
each own a slack variable (soft-margin constraints
$1 - \xi_i - \ell_i(w^\top z_i + b) \le 0$) are projected exactly instead, by
semismooth Newton on the few non-slack variables (`slack_structure`,
`_project_slack`); the bilevel driver detects this structure from concrete data.
"""

import abc

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float, PyTree


class _Rows(eqx.Module):
    """A set in flat coordinates: lo <= v <= hi, G v <= g, E v = e (None: absent)."""

    lo: Array | None
    hi: Array | None
    G: Array | None
    g: Array | None
    E: Array | None
    e: Array | None


def _flat(v):
    flat, unravel = ravel_pytree(v)
    return flat, unravel


class AbstractSet(eqx.Module):
    """A closed convex set of pytrees with a Euclidean projection."""

    @abc.abstractmethod
    def project(self, v: PyTree[Array]) -> PyTree[Array]:
        """The Euclidean projection of `v` onto the set."""

    @abc.abstractmethod
    def violation(self, v: PyTree[Array]) -> Float[Array, ""]:
        """The largest constraint violation of `v` (0 iff `v` lies in the set)."""

    @abc.abstractmethod
    def rows(self, v: PyTree[Array]) -> _Rows:
        """The set in the flat coordinates of `ravel_pytree(v)` (internal)."""


class Reals(AbstractSet):
    """The whole space (no constraint)."""

    def project(self, v):
        return v

    def violation(self, v):
        flat, _ = _flat(v)
        return jnp.zeros((), flat.dtype)

    def rows(self, v):
        return _Rows(None, None, None, None, None, None)


def _broadcast_like(bound, v):
    """A bound given as a scalar or a pytree like `v`, as a flat array like `v`."""
    flat, _ = _flat(v)
    if jtu.tree_structure(bound) == jtu.tree_structure(0.0) or (
        eqx.is_array_like(bound) and jnp.ndim(bound) == 0
    ):
        return jnp.full_like(flat, bound)
    try:
        bound = jtu.tree_map(lambda b, x: jnp.broadcast_to(b, jnp.shape(x)), bound, v)
    except (ValueError, TypeError) as err:
        raise ValueError(
            "A Box bound must be a scalar or a pytree shaped like the variable it "
            f"constrains; got a bound that does not match ({err})."
        ) from None
    return ravel_pytree(bound)[0].astype(flat.dtype)


class Box(AbstractSet):
    r"""The box $\{v : \text{lower} \le v \le \text{upper}\}$ (elementwise).

    **Arguments:**

    - `lower`, `upper`: scalars or pytrees shaped like the variable; `-inf`/`inf`
        for an open side.
    """

    lower: PyTree[ArrayLike]
    upper: PyTree[ArrayLike]

    def __check_init__(self):
        for lo, hi in zip(jtu.tree_leaves(self.lower), jtu.tree_leaves(self.upper)):
            lo_c, hi_c = _concrete(lo), _concrete(hi)
            if lo_c is not None and hi_c is not None and bool(jnp.any(lo_c > hi_c)):
                raise ValueError(
                    "Box(lower, upper) needs lower <= upper elementwise (the set is "
                    "empty otherwise); swap or fix the bounds."
                )

    def project(self, v):
        flat, unravel = _flat(v)
        lo, hi = _broadcast_like(self.lower, v), _broadcast_like(self.upper, v)
        return unravel(jnp.clip(flat, lo, hi))

    def violation(self, v):
        flat, _ = _flat(v)
        lo, hi = _broadcast_like(self.lower, v), _broadcast_like(self.upper, v)
        return jnp.max(jnp.maximum(jnp.maximum(lo - flat, flat - hi), 0), initial=0.0)

    def rows(self, v):
        lo, hi = _broadcast_like(self.lower, v), _broadcast_like(self.upper, v)
        return _Rows(lo, hi, None, None, None, None)


class NonNegative(AbstractSet):
    r"""The non-negative orthant $\{v : v \ge 0\}$."""

    def project(self, v):
        return jtu.tree_map(lambda a: jnp.maximum(a, 0), v)

    def violation(self, v):
        flat, _ = _flat(v)
        return jnp.max(jnp.maximum(-flat, 0), initial=0.0)

    def rows(self, v):
        flat, _ = _flat(v)
        return _Rows(jnp.zeros_like(flat), jnp.full_like(flat, jnp.inf), *[None] * 4)


class HalfSpace(AbstractSet):
    r"""The half-space $\{v : a^\top v \le b\}$, $v$ flattened with `ravel_pytree`.

    Projection: $v - \max(0, a^\top v - b)\, a / \|a\|^2$.
    """

    a: Float[Array, " n"]
    b: Float[Array, ""]

    def __init__(self, a: Float[ArrayLike, " n"], b: Float[ArrayLike, ""]):
        self.a = jnp.asarray(a)
        self.b = jnp.asarray(b, self.a.dtype)
        if self.a.ndim != 1 or self.b.ndim != 0:
            raise ValueError(
                f"HalfSpace(a, b) needs a vector a and a scalar b, got shapes "
                f"{self.a.shape} and {self.b.shape}."
            )
        a_c = _concrete(self.a)
        if a_c is not None and not bool(jnp.any(a_c != 0)):
            raise ValueError("HalfSpace(a, b): a must be non-zero.")

    def project(self, v):
        flat, unravel = _flat(v)
        _check_len(self.a.shape[0], flat, "HalfSpace")
        excess = jnp.maximum(self.a @ flat - self.b, 0)
        return unravel(flat - excess / (self.a @ self.a) * self.a)

    def violation(self, v):
        flat, _ = _flat(v)
        return jnp.maximum(self.a @ flat - self.b, 0) / jnp.linalg.norm(self.a)

    def rows(self, v):
        flat, _ = _flat(v)
        _check_len(self.a.shape[0], flat, "HalfSpace")
        return _Rows(None, None, self.a[None, :], self.b[None], None, None)


class Affine(AbstractSet):
    r"""The affine set $\{v : A v = b\}$, $v$ flattened with `ravel_pytree`.

    Projection in closed form, $v - A^+ (A v - b)$, with the pseudo-inverse computed
    once at construction (rank-deficient $A$ is fine as long as the set is non-empty).
    """

    A: Float[Array, "m n"]
    b: Float[Array, " m"]
    A_pinv: Float[Array, "n m"]

    def __init__(self, A: Float[ArrayLike, "m n"], b: Float[ArrayLike, " m"]):
        self.A = jnp.asarray(A)
        self.b = jnp.asarray(b, self.A.dtype)
        if self.A.ndim != 2 or self.b.shape != (self.A.shape[0],):
            raise ValueError(
                f"Affine(A, b) needs a matrix A of shape (m, n) and b of shape (m,), "
                f"got {self.A.shape} and {self.b.shape}."
            )
        self.A_pinv = jnp.linalg.pinv(self.A)

    def project(self, v):
        flat, unravel = _flat(v)
        _check_len(self.A.shape[1], flat, "Affine")
        return unravel(flat - self.A_pinv @ (self.A @ flat - self.b))

    def violation(self, v):
        flat, _ = _flat(v)
        return jnp.max(jnp.abs(self.A @ flat - self.b), initial=0.0)

    def rows(self, v):
        flat, _ = _flat(v)
        _check_len(self.A.shape[1], flat, "Affine")
        return _Rows(None, None, None, None, self.A, self.b)


def _check_len(n, flat, name):
    if flat.shape[0] != n:
        raise ValueError(
            f"{name} constrains vectors of length {n}, but the variable has "
            f"{flat.shape[0]} entries (flattened). Build the set for the right size."
        )


def _concrete(x):
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return jnp.asarray(x)
    except TypeError:
        return None


class Polyhedron(AbstractSet):
    r"""The polyhedron $\{v : G v \le g,\ E v = e,\ \ell \le v \le u\}$ ($v$ flattened).

    There is no closed-form projection; `project` maximises the dual
    $$D(\mu, \nu) = \min_{\ell \le v \le u} \tfrac12 \|v - w\|^2
      + \mu^\top (G v - g) + \nu^\top (E v - e), \qquad \mu \ge 0,$$
    whose inner minimiser is $v(\mu, \nu) = \operatorname{clip}(w - G^\top \mu - E^\top
    \nu, \ell, u)$, by accelerated projected gradient ascent (FISTA) with step
    $1/\|[G; E]\|_2^2$. The dual is smooth, so the method converges for any data;
    warm-starting from the previous multipliers (what the bilevel solvers do every
    step, see `project_with_duals`) makes a few iterations per call enough when the
    point moves little. The returned point is exactly inside the box; the other
    constraints hold to the accuracy reached (see `violation`).

    **Arguments:**

    - `G`, `g`: inequality rows (or `None`); `E`, `e`: equality rows (or `None`);
    - `lower`, `upper`: flat bounds (or `None` for unbounded);
    - `steps`: dual iterations of a cold `project` call (static).
    """

    G: Float[Array, "m n"] | None
    g: Float[Array, " m"] | None
    E: Float[Array, "q n"] | None
    e: Float[Array, " q"] | None
    lower: Float[Array, " n"] | None
    upper: Float[Array, " n"] | None
    lipschitz: Float[Array, ""]
    steps: int = eqx.field(static=True)

    def __init__(
        self,
        G=None,
        g=None,
        E=None,
        e=None,
        lower=None,
        upper=None,
        *,
        steps: int = 2000,
    ):
        if (G is None) != (g is None) or (E is None) != (e is None):
            raise ValueError(
                "Polyhedron: give G with g and E with e (both or neither)."
            )
        self.G = None if G is None else jnp.asarray(G)
        self.g = None if g is None else jnp.asarray(g)
        self.E = None if E is None else jnp.asarray(E)
        self.e = None if e is None else jnp.asarray(e)
        self.lower = None if lower is None else jnp.asarray(lower)
        self.upper = None if upper is None else jnp.asarray(upper)
        for M, r, name in ((self.G, self.g, "G"), (self.E, self.e, "E")):
            if M is not None and (M.ndim != 2 or r.shape != (M.shape[0],)):
                raise ValueError(
                    f"Polyhedron: {name} must be (m, n) with a right-hand side of "
                    f"shape (m,), got {M.shape} and {r.shape}."
                )
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"Polyhedron(steps=...) must be an int >= 1, got {steps}.")
        self.steps = steps
        mats = [M for M in (self.G, self.E) if M is not None]
        if mats:
            M = jnp.concatenate(mats, axis=0)
            # Spectral norm squared: the Lipschitz constant of the dual gradient.
            self.lipschitz = jnp.linalg.norm(M, 2) ** 2
        else:
            self.lipschitz = jnp.ones(())

    @property
    def num_duals(self) -> int:
        m = 0 if self.G is None else self.G.shape[0]
        q = 0 if self.E is None else self.E.shape[0]
        return m + q

    def primal(self, w, mu, nu):
        v = w
        if self.G is not None:
            v = v - self.G.T @ mu
        if self.E is not None:
            v = v - self.E.T @ nu
        return _clip(v, self.lower, self.upper)

    def project_with_duals(
        self,
        w: Float[Array, " n"],
        duals: Float[Array, " k"],
        steps: int,
        shift_g: Float[Array, " m"] | None = None,
        shift_e: Float[Array, " q"] | None = None,
    ) -> tuple[Float[Array, " n"], Float[Array, " k"]]:
        """Project the flat vector `w` warm-started from `duals` (the multipliers
        `[mu, nu]` of a previous call), with right-hand sides `g + shift_g` and
        `e + shift_e`. Returns `(v, duals)`."""
        m = 0 if self.G is None else self.G.shape[0]
        g = (
            None
            if self.G is None
            else (self.g if shift_g is None else self.g + shift_g)
        )
        e = (
            None
            if self.E is None
            else (self.e if shift_e is None else self.e + shift_e)
        )
        if self.G is None and self.E is None:
            return _clip(w, self.lower, self.upper), duals
        step = 1 / self.lipschitz.astype(w.dtype)

        def grad(d):
            v = self.primal(w, d[:m], d[m:])
            parts = []
            if self.G is not None:
                parts.append(self.G @ v - g)
            if self.E is not None:
                parts.append(self.E @ v - e)
            return jnp.concatenate(parts)

        def proj(d):
            return d.at[:m].set(jnp.maximum(d[:m], 0))

        def body(_, carry):
            d, d_prev, t = carry
            t_next = (1 + jnp.sqrt(1 + 4 * t**2)) / 2
            yk = d + ((t - 1) / t_next) * (d - d_prev)
            d_new = proj(yk + step * grad(yk))
            return d_new, d, t_next

        one = jnp.ones((), w.dtype)
        duals, _, _ = lax.fori_loop(0, steps, body, (duals, duals, one))
        return self.primal(w, duals[:m], duals[m:]), duals

    def project(self, v):
        flat, unravel = _flat(v)
        duals = jnp.zeros((self.num_duals,), flat.dtype)
        out, _ = self.project_with_duals(flat, duals, self.steps)
        return unravel(out)

    def violation(self, v):
        flat, _ = _flat(v)
        return _rows_violation(
            _Rows(self.lower, self.upper, self.G, self.g, self.E, self.e), flat
        )

    def rows(self, v):
        return _Rows(self.lower, self.upper, self.G, self.g, self.E, self.e)


def _clip(v, lo, hi):
    if lo is not None:
        v = jnp.maximum(v, lo)
    if hi is not None:
        v = jnp.minimum(v, hi)
    return v


def _rows_violation(rows: _Rows, flat) -> Array:
    parts = [jnp.zeros((), flat.dtype)]
    if rows.lo is not None:
        parts.append(jnp.max(jnp.maximum(rows.lo - flat, 0), initial=0.0))
    if rows.hi is not None:
        parts.append(jnp.max(jnp.maximum(flat - rows.hi, 0), initial=0.0))
    if rows.G is not None:
        parts.append(jnp.max(jnp.maximum(rows.G @ flat - rows.g, 0), initial=0.0))
    if rows.E is not None:
        parts.append(jnp.max(jnp.abs(rows.E @ flat - rows.e), initial=0.0))
    return jnp.max(jnp.stack(parts))


def _combine(n: int, *pieces: tuple[_Rows, int]) -> _Rows:
    """Stack sets that act on blocks `v[offset : offset + size]` of a flat vector of
    length `n` (`pieces` are `(rows, offset)`; a set's width gives its size)."""
    dtype = None
    for rows, _ in pieces:
        for a in (rows.lo, rows.hi, rows.G, rows.E):
            if a is not None:
                dtype = a.dtype
    lo = hi = None
    Gs, gs, Es, es = [], [], [], []
    for rows, offset in pieces:
        for bound, fill in ((rows.lo, -jnp.inf), (rows.hi, jnp.inf)):
            if bound is None:
                continue
            full = jnp.full((n,), fill, dtype).at[offset : offset + bound.shape[0]]
            if fill < 0:
                lo = (
                    full.set(bound)
                    if lo is None
                    else lo.at[offset : offset + bound.shape[0]].set(bound)
                )
            else:
                hi = (
                    full.set(bound)
                    if hi is None
                    else hi.at[offset : offset + bound.shape[0]].set(bound)
                )
        for M, r, Ms, rs in ((rows.G, rows.g, Gs, gs), (rows.E, rows.e, Es, es)):
            if M is None:
                continue
            size = M.shape[1]
            Ms.append(jnp.pad(M, ((0, 0), (offset, n - offset - size))))
            rs.append(r)
    return _Rows(
        lo,
        hi,
        jnp.concatenate(Gs) if Gs else None,
        jnp.concatenate(gs) if gs else None,
        jnp.concatenate(Es) if Es else None,
        jnp.concatenate(es) if es else None,
    )


def slack_structure(rows: _Rows) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    r"""Detect (from concrete rows) the *slack structure* of a polyhedron
    $\{v : \ell \le v \le u,\ G v \le g\}$: every row $i$ owns a column $s(i)$
    (its slack) that is nonzero in row $i$ only, with $G_{i s(i)} < 0$ and no bounds;
    the other columns met by rows (the core) have no bounds; no equality rows. Soft
    margin constraints $1 - \xi_i - \ell_i (w^\top z_i + b) \le 0$ have it.

    Returns `(slack_columns, core_columns)` (static tuples), or `None` when the rows
    do not have the structure or are traced (then the dual QP is used)."""
    arrays = (rows.lo, rows.hi, rows.G, rows.g)
    if rows.G is None or rows.E is not None:
        return None
    if any(isinstance(a, jax.core.Tracer) for a in arrays if a is not None):
        return None
    G = np.asarray(rows.G)
    m, n = G.shape
    nz = G != 0
    count = nz.sum(axis=0)
    free = np.ones(n, bool)
    if rows.lo is not None:
        free &= ~np.isfinite(np.asarray(rows.lo))
    if rows.hi is not None:
        free &= ~np.isfinite(np.asarray(rows.hi))
    candidate = (count == 1) & free & (G.min(axis=0, initial=0.0) < 0)
    slack = np.full(m, -1)
    for j in np.flatnonzero(candidate):
        i = int(np.flatnonzero(nz[:, j])[0])
        if slack[i] < 0:
            slack[i] = j
    if np.any(slack < 0):
        return None
    used = np.zeros(n, bool)
    used[slack] = True
    core = np.flatnonzero(nz.any(axis=0) & ~used)
    if not np.all(free[core]):
        return None
    return tuple(int(j) for j in slack), tuple(int(j) for j in core)


def _project_slack(rows, slack, core, w, duals, steps, shift_g):
    r"""Exact projection onto $\{G v \le g\}$ with slack structure (see
    `slack_structure`). Writing row $i$ as $a_i^\top u - d_i s_i \le g_i$ ($u$ the
    core, $s_i$ its slack, $d_i > 0$), the optimal slack given $u$ is
    $s_i = \max(w_{s_i}, (a_i^\top u - g_i)/d_i)$, so the projection reduces to the
    strongly convex, piecewise-quadratic problem in the core only,
    $$\min_u \tfrac12 \|u - w_u\|^2 + \tfrac12 \sum_i
      \max\big(0, (a_i^\top u - g_i)/d_i - w_{s_i}\big)^2,$$
    solved by semismooth Newton (Hessian $I + \sum_{\text{active}} a_i a_i^\top /
    d_i^2$, of the core's size) with Armijo backtracking, warm-started from the
    multipliers of the previous call. Multipliers: $\mu_i = (s_i - w_{s_i})/d_i$."""
    slack_idx = np.asarray(slack)
    core_idx = np.asarray(core, dtype=int)
    m = len(slack)
    rows_idx = np.arange(m)
    G = rows.G
    d = -G[rows_idx, slack_idx]
    A = G[:, core_idx] / d[:, None]  # rows scaled by 1/d
    g = rows.g if shift_g is None else rows.g + shift_g
    c = g / d + w[slack_idx]  # residual r(u) = A u - c
    u0 = w[core_idx]
    eye = jnp.eye(core_idx.size, dtype=w.dtype)

    def phi(u):
        r = jnp.maximum(A @ u - c, 0)
        return 0.5 * jnp.sum((u - u0) ** 2) + 0.5 * jnp.sum(r**2)

    def gradient(u):
        return u - u0 + A.T @ jnp.maximum(A @ u - c, 0)

    scale = 1 + jnp.linalg.norm(u0) + jnp.linalg.norm(c)
    tol = 10 * jnp.finfo(w.dtype).eps * scale

    def body(carry):
        u, _, k = carry
        grad = gradient(u)
        active = (A @ u - c > 0).astype(w.dtype)
        H = eye + A.T @ (active[:, None] * A)
        step = -jnp.linalg.solve(H, grad)
        f0, slope = phi(u), jnp.dot(grad, step)

        def ls_cond(t):
            return (phi(u + t * step) > f0 + 1e-4 * t * slope) & (t > 1e-8)

        t = lax.while_loop(ls_cond, lambda t: t / 2, jnp.ones((), w.dtype))
        u = u + t * step
        return u, jnp.linalg.norm(gradient(u)), k + 1

    # Warm start: the core point of the previous multipliers, u = w_u - A^T mu d.
    u_start = u0 - A.T @ (duals[:m] * d)
    u_start = jnp.where(phi(u_start) < phi(u0), u_start, u0)
    init = (u_start, jnp.linalg.norm(gradient(u_start)), jnp.zeros((), jnp.int32))
    u, _, _ = lax.while_loop(
        lambda c_: (c_[1] > tol) & (c_[2] < steps) & jnp.isfinite(c_[1]), body, init
    )
    excess = jnp.maximum(A @ u - c, 0)
    v = _clip(w, rows.lo, rows.hi)
    v = v.at[core_idx].set(u).at[slack_idx].set(w[slack_idx] + excess)
    return v, duals.at[:m].set(excess / d)


class _Projector(eqx.Module):
    """The projection onto a `_Rows` set, choosing closed forms where they exist:
    identity, clipping, the affine pseudo-inverse formula, the slack-structured
    semismooth Newton projection (see `slack_structure`); the dual QP otherwise."""

    rows: _Rows
    kind: str = eqx.field(static=True)
    E_pinv: Array | None
    nu_map: Array | None
    poly: Polyhedron | None
    slack: tuple[int, ...] | None = eqx.field(static=True)
    core: tuple[int, ...] | None = eqx.field(static=True)

    def __init__(
        self,
        rows: _Rows,
        steps: int,
        structure: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
    ):
        self.rows = rows
        bounded = rows.lo is not None or rows.hi is not None
        self.E_pinv = None
        self.nu_map = None
        self.poly = None
        self.slack = self.core = None
        if rows.G is None and rows.E is None:
            self.kind = "clip" if bounded else "identity"
        elif rows.G is None and not bounded:
            self.kind = "affine"
            self.E_pinv = jnp.linalg.pinv(rows.E)
            # (E E^T)^+ = (E^+)^T E^+: maps the residual E w - e to the multipliers.
            self.nu_map = self.E_pinv.T @ self.E_pinv
        elif structure is not None and rows.E is None:
            self.kind = "slack"
            self.slack, self.core = structure
            if len(self.slack) != rows.G.shape[0]:
                raise ValueError("internal: slack structure does not fit the rows")
        else:
            self.kind = "qp"
            self.poly = Polyhedron(
                rows.G, rows.g, rows.E, rows.e, rows.lo, rows.hi, steps=steps
            )

    @property
    def num_duals(self) -> int:
        m = 0 if self.rows.G is None else self.rows.G.shape[0]
        q = 0 if self.rows.E is None else self.rows.E.shape[0]
        return m + q

    def __call__(self, w, duals, steps, shift_g=None, shift_e=None):
        """Returns `(v, duals)`; `duals` are the projection's multipliers (for the
        closed forms too), so that `duals / t` estimates the KKT multipliers of a
        projected-gradient step of length `t`."""
        rows = self.rows
        if self.kind == "identity":
            return w, duals
        if self.kind == "clip":
            return _clip(w, rows.lo, rows.hi), duals
        if self.kind == "affine":
            e = rows.e if shift_e is None else rows.e + shift_e
            # v = w - E^+ (E w - e); multipliers nu with v = w - E^T nu.
            resid = rows.E @ w - e
            return w - self.E_pinv @ resid, self.nu_map @ resid
        if self.kind == "slack":
            return _project_slack(rows, self.slack, self.core, w, duals, steps, shift_g)
        return self.poly.project_with_duals(w, duals, steps, shift_g, shift_e)

    def violation(self, v, shift_g=None, shift_e=None):
        rows = self.rows
        g = (
            None
            if rows.G is None
            else (rows.g if shift_g is None else rows.g + shift_g)
        )
        e = (
            None
            if rows.E is None
            else (rows.e if shift_e is None else rows.e + shift_e)
        )
        return _rows_violation(_Rows(rows.lo, rows.hi, rows.G, g, rows.E, e), v)
