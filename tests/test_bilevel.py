"""jaxsolve.bilevel: correctness against closed forms and known toy solutions, the
solver contract, bad input."""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
import scipy.optimize

import jaxsolve as js
import jaxsolve.bilevel as bl

from .helpers import finite_difference_jvp


# ---------------------------------------------------------------- problems --

N = 100  # the LLC toy of the LV-HBA paper


def llc_upper(x, y):
    y1, y2 = y
    return 0.5 * jnp.sum((x - y2) ** 2) + 0.5 * jnp.sum((y1 - 1) ** 2)


def llc_lower(x, y):
    y1, y2 = y
    return 0.5 * jnp.sum(y1**2) - x @ y1 + jnp.sum(y2)


def llc_equality(x, y):
    return jnp.reshape(jnp.sum(x) + jnp.sum(y[0]) + jnp.sum(y[1]), (1,))


LLC = bl.BilevelProblem(llc_upper, llc_lower, equality=llc_equality)


def llc_start(dtype=jnp.float64, n=N):
    return -20 * jnp.ones(n, dtype), (10 * jnp.ones(n, dtype), 10 * jnp.ones(n, dtype))


def rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


# Ridge regression with per-feature regularisation exp(lam): hypergradient of the
# validation loss in closed form.
_k = jax.random.split(jax.random.key(0), 4)
RA = jax.random.normal(_k[0], (30, 5), jnp.float64)
RB = jax.random.normal(_k[1], (30,), jnp.float64)
RAV = jax.random.normal(_k[2], (20, 5), jnp.float64)
RBV = jax.random.normal(_k[3], (20,), jnp.float64)
LAM = jnp.linspace(-1.0, 1.0, 5)


def ridge_upper(lam, w):
    return 0.5 * jnp.sum((RAV @ w - RBV) ** 2)


def ridge_lower(lam, w):
    return 0.5 * jnp.sum((RA @ w - RB) ** 2) + 0.5 * jnp.exp(lam) @ (w**2)


def ridge_phi(lam):
    w = jnp.linalg.solve(RA.T @ RA + jnp.diag(jnp.exp(lam)), RA.T @ RB)
    return ridge_upper(lam, w)


def sum_eq(lam, w):
    return jnp.reshape(jnp.sum(w) - 1.0, (1,))


def sum_ineq(lam, w):
    return jnp.reshape(1.0 - jnp.sum(w), (1,))  # sum(w) >= 1 (active here)


def ridge_phi_eq(lam):
    H = RA.T @ RA + jnp.diag(jnp.exp(lam))
    E = jnp.ones((1, 5))
    K = jnp.block([[H, E.T], [E, jnp.zeros((1, 1))]])
    w = jnp.linalg.solve(K, jnp.concatenate([RA.T @ RB, jnp.ones(1)]))[:5]
    return ridge_upper(lam, w)


hg_rev = jax.jit(
    lambda lam: bl.implicit_hypergradient(ridge_upper, ridge_lower, lam, jnp.zeros(5))
)
hg_fwd = jax.jit(
    lambda lam: bl.implicit_hypergradient(
        ridge_upper, ridge_lower, lam, jnp.zeros(5), mode="forward"
    )
)


@jax.jit
def unrolled(lam):
    H = RA.T @ RA + jnp.diag(jnp.exp(lam))
    step = 1.0 / jnp.linalg.eigvalsh(H)[-1]

    def body(w, _):
        return w - step * jax.grad(ridge_lower, argnums=1)(lam, w), None

    w, _ = jax.lax.scan(body, jnp.zeros(5), None, length=3000)
    return ridge_upper(lam, w)


# ------------------------------------------------------- hypergradients --


def test_ridge_hypergradient_all_agree():
    closed = jax.grad(ridge_phi)(LAM)
    rev, fwd = hg_rev(LAM), hg_fwd(LAM)
    unr = jax.grad(unrolled)(LAM)
    fd = jnp.stack(
        [finite_difference_jvp(ridge_phi, (LAM,), (e,), eps=1e-5) for e in jnp.eye(5)]
    )
    assert np.allclose(rev, closed, rtol=1e-9, atol=1e-12)
    assert np.allclose(fwd, closed, rtol=1e-9, atol=1e-12)
    assert np.allclose(unr, closed, rtol=1e-7, atol=1e-10)
    assert np.allclose(fd, closed, rtol=1e-6, atol=1e-9)
    # vmap over hyper-parameters equals a loop.
    lams = jnp.stack([LAM, LAM + 0.3])
    batched = jax.vmap(hg_rev)(lams)
    assert np.allclose(batched[1], jax.grad(ridge_phi)(LAM + 0.3), rtol=1e-9)


def test_ridge_hypergradient_second_order():
    # The implicit rule is differentiable itself: Hessian-vector product of Phi.
    v = jnp.arange(5.0) / 5
    hvp = jax.jvp(hg_rev, (LAM,), (v,))[1]
    ref = jax.jvp(jax.grad(ridge_phi), (LAM,), (v,))[1]
    assert np.allclose(hvp, ref, rtol=1e-6, atol=1e-9)


def test_kkt_hypergradient_equality_and_active_inequality():
    closed = jax.grad(ridge_phi_eq)(LAM)
    # The unconstrained ridge solution has sum(w) < 1, so sum(w) >= 1 is active.
    w_free = jnp.linalg.solve(RA.T @ RA + jnp.diag(jnp.exp(LAM)), RA.T @ RB)
    assert float(jnp.sum(w_free)) < 1
    g_eq = bl.implicit_hypergradient(
        ridge_upper, ridge_lower, LAM, jnp.zeros(5), equality=sum_eq
    )
    g_in = bl.implicit_hypergradient(
        ridge_upper, ridge_lower, LAM, jnp.zeros(5), inequality=sum_ineq
    )
    assert np.allclose(g_eq, closed, rtol=1e-6, atol=1e-9)
    assert np.allclose(g_in, closed, rtol=1e-6, atol=1e-9)


def test_llsc_hypergradient_closed_form():
    # LLSC toy (small): F = sin(c.x + d.y) + log(||x + y||^2 + 1), f = ||x - y||^2/2,
    # A y + H x = 0. y*(x) = x - A^+ (A + H) x, so grad Phi has a closed form.
    k = jax.random.split(jax.random.key(3), 4)
    A = jax.random.uniform(k[0], (4, 6), jnp.float64)
    H = jax.random.uniform(k[1], (4, 6), jnp.float64)
    c, d = jax.random.normal(k[2], (2, 6), jnp.float64)
    x = jax.random.normal(k[3], (6,), jnp.float64)

    def F(x, y):
        return jnp.sin(c @ x + d @ y) + jnp.log(jnp.sum((x + y) ** 2) + 1)

    def f(x, y):
        return 0.5 * jnp.sum((x - y) ** 2)

    def h(x, y):
        return A @ y + H @ x

    J = jnp.eye(6) - jnp.linalg.pinv(A) @ (A + H)  # dy*/dx
    closed = jax.grad(lambda x: F(x, J @ x))(x)
    g = bl.implicit_hypergradient(F, f, x, jnp.zeros(6), equality=h)
    assert np.allclose(g, closed, rtol=1e-6, atol=1e-9)


def test_hypergradient_lower_failure_raises_or_nan():
    newton = bl.Newton(max_steps=1, rtol=1e-14, atol=0.0)

    def lower(lam, w):  # not quadratic: one Newton step does not converge
        return jnp.sum(jnp.cosh(w - lam)) + 0.1 * jnp.sum(w**4)

    lam = jnp.array([3.0, -2.0])
    with pytest.raises(Exception, match="maximum number of steps"):
        jax.block_until_ready(
            bl.implicit_hypergradient(
                ridge_upper_2, lower, lam, jnp.zeros(2), lower_solver=newton
            )
        )
    sol = bl.implicit_hypergradient(
        ridge_upper_2,
        lower,
        lam,
        jnp.zeros(2),
        lower_solver=newton,
        throw=False,
        full_output=True,
    )
    assert sol.result == js.RESULTS.max_steps_reached
    assert bool(jnp.all(jnp.isnan(sol.value)))


def ridge_upper_2(lam, w):
    return jnp.sum(w**2)


# --------------------------------------------------------------- solvers --


def test_llc_lvhba_reaches_known_solution_and_no_retrace():
    x0, y0 = llc_start()
    traces = []

    def upper(x, y):
        traces.append(1)
        return llc_upper(x, y)

    problem = bl.BilevelProblem(upper, llc_lower, equality=llc_equality)
    sol = bl.solve(problem, bl.LVHBA(), x0, y0, max_steps=20_000)
    x, (y1, y2) = sol.value
    assert rel(x, -0.3 * jnp.ones(N)) < 1e-2
    assert rel(y1, 0.7 * jnp.ones(N)) < 1e-2
    assert rel(y2, -0.4 * jnp.ones(N)) < 1e-2
    assert float(sol.stats["constraint_violation"]) < 1e-9
    assert int(sol.stats["num_steps"]) == 20_000
    assert sol.result == js.RESULTS.successful
    n_traces = len(traces)
    # The reference script's defaults (gamma2 = 10, c = 0.025) do not converge
    # (our finding, the note's 1.19e2 after 1500 steps); new values: no retrace.
    bad = bl.LVHBA(gamma2=10.0, c=0.025)
    sol_bad = bl.solve(problem, bad, x0, y0, max_steps=20_000)
    assert len(traces) == n_traces
    assert rel(sol_bad.value[0], -0.3 * jnp.ones(N)) > 10


def test_llc_penalty_methods_biased_towards_solution():
    x0, y0 = llc_start()
    xs = -0.3 * jnp.ones(N)
    pen = bl.solve(LLC, bl.Penalty(sigma=0.01, alpha=0.005), x0, y0, max_steps=3000)
    vp = bl.solve(LLC, bl.VPBGD(gamma=50.0), x0, y0, max_steps=3000)
    err_pen, err_vp = rel(pen.value[0], xs), rel(vp.value[0], xs)
    assert err_pen < 1e-2
    assert err_vp < 1e-2
    for sol in (pen, vp):
        assert float(sol.stats["constraint_violation"]) < 1e-9


def _box_problem():
    # LL: min ||y - x||^2 / 2 s.t. y <= 1 (an affine inequality, so the joint
    # projection is the dual QP); UL: ||y - 2||^2/2 + ||x - 3||^2/2. y*(x) =
    # min(x, 1), so Phi(x) = 1/2 + ||x - 3||^2/2 for x >= 1: x* = 3, y* = 1.
    return bl.BilevelProblem(
        lambda x, y: 0.5 * jnp.sum((y - 2) ** 2) + 0.5 * jnp.sum((x - 3) ** 2),
        lambda x, y: 0.5 * jnp.sum((y - x) ** 2),
        inequality=lambda x, y: y - 1.0,
    )


BOX = _box_problem()


def test_inequality_qp_projection_path():
    sol = bl.solve(
        BOX, bl.LVHBA(alpha=0.1, c=0.25), jnp.zeros(3), jnp.zeros(3), max_steps=3000
    )
    x, y = sol.value
    assert np.allclose(x, 3.0, atol=1e-2) and np.allclose(y, 1.0, atol=1e-6)
    assert float(sol.stats["constraint_violation"]) < 1e-6


def test_vmap_over_starts_and_step_sizes_and_dtypes():
    def run(x0, alpha):
        return bl.solve(
            BOX, bl.LVHBA(alpha=alpha, c=0.25), x0, jnp.zeros(3), max_steps=500
        )

    x0s = jnp.stack([jnp.zeros(3), jnp.full(3, 0.5)])
    alphas = jnp.array([0.1, 0.05])
    batched = jax.vmap(run)(x0s, alphas)
    for i in range(2):
        single = run(x0s[i], alphas[i])
        assert np.allclose(batched.value[0][i], single.value[0], rtol=1e-10)
        assert int(batched.stats["num_steps"][i]) == int(single.stats["num_steps"])
    sol32 = bl.solve(
        BOX,
        bl.LVHBA(alpha=0.1, c=0.25),
        jnp.zeros(3, jnp.float32),
        jnp.zeros(3, jnp.float32),
        max_steps=200,
    )
    assert sol32.value[0].dtype == jnp.float32
    assert sol32.stats["stationarity"].dtype == jnp.float32


def test_tol_stops_early_and_max_steps_code():
    solver = bl.VPBGD(gamma=10.0, tol=1e-3)
    sol = bl.solve(BOX, solver, jnp.zeros(3), jnp.zeros(3), max_steps=5000)
    assert sol.result == js.RESULTS.successful
    assert 0 < int(sol.stats["num_steps"]) < 5000
    sol = bl.solve(BOX, solver, jnp.zeros(3), jnp.zeros(3), max_steps=3, throw=False)
    assert sol.result == js.RESULTS.max_steps_reached
    with pytest.raises(Exception, match="maximum number of steps"):
        jax.block_until_ready(
            bl.solve(BOX, solver, jnp.zeros(3), jnp.zeros(3), max_steps=3)
        )


def test_vpbgd_toy_local_minima():
    # Shen & Chen's toy: every run ends at a local minimiser of
    # phi(x) = cos(2 - 4x)/(1 + e^{2 - 4x}) + log((4x - 2)^2 + 1)/2 on [0, 3].
    problem = bl.BilevelProblem(
        lambda x, y: jnp.sum(
            jnp.cos(4 * y + 2) / (1 + jnp.exp(2 - 4 * x))
            + 0.5 * jnp.log((4 * x - 2) ** 2 + 1)
        ),
        lambda x, y: jnp.sum((x + y) ** 2 + x * jnp.sin(x + y) ** 2),
        x_set=bl.Box(0.0, 3.0),
    )
    keys = jax.random.split(jax.random.key(1), 2)
    x0 = jax.random.uniform(keys[0], (16, 1), jnp.float64, 0.0, 3.0)
    y0 = jax.random.uniform(keys[1], (16, 1), jnp.float64, -5.0, 5.0)
    solver = bl.VPBGD(gamma=10.0, inner_lr=0.05)
    sol = jax.vmap(lambda a, b: bl.solve(problem, solver, a, b, max_steps=3000))(x0, y0)
    x, y = sol.value
    assert float(jnp.max(jnp.abs(x + y))) < 5e-2  # O(1/gamma) bias

    def phi(x):
        return jnp.cos(2 - 4 * x) / (1 + jnp.exp(2 - 4 * x)) + 0.5 * jnp.log(
            (4 * x - 2) ** 2 + 1
        )

    grid = jnp.linspace(0.0, 3.0, 30001)
    vals = phi(grid)
    interior = (vals[1:-1] < vals[:-2]) & (vals[1:-1] < vals[2:])
    minima = jnp.concatenate([grid[1:-1][interior], grid[:1]])
    dist = jnp.min(jnp.abs(x - minima[None, :]), axis=1)
    assert float(jnp.max(dist)) < 5e-2  # the same O(1/gamma) penalty bias


# ---------------------------------------------------------- projections --


def _cases():
    return [
        (bl.Box(-1.0, 0.5), jnp.linspace(-3, 3, 6)),
        (bl.NonNegative(), jnp.linspace(-3, 3, 6)),
        (bl.HalfSpace(jnp.arange(1.0, 7.0), 1.0), jnp.linspace(-3, 3, 6)),
        (
            bl.Affine(jnp.ones((2, 6)).at[1, :3].set(0.0), jnp.array([1.0, 2.0])),
            jnp.linspace(-3, 3, 6),
        ),
        (
            bl.Polyhedron(
                G=jnp.array([[1.0, 2, 0, 0, 1, 0], [0, 1.0, -1, 1, 0, 0]]),
                g=jnp.array([0.5, -1.0]),
                E=jnp.ones((1, 6)),
                e=jnp.array([1.0]),
                lower=jnp.full(6, -1.0),
                upper=jnp.full(6, 2.0),
                steps=20_000,
            ),
            jnp.linspace(-3, 3, 6),
        ),
    ]


@pytest.mark.parametrize("index", range(5))
def test_projection_idempotent_feasible_optimal(index):
    s, v = _cases()[index]
    p = s.project(v)
    assert float(s.violation(p)) < 1e-7
    assert np.allclose(s.project(p), p, atol=1e-7)
    assert float(s.violation(v)) > 0
    # Optimality against an independent QP solve (SciPy SLSQP).
    cons, bounds = [], None
    if isinstance(s, bl.Box):
        bounds = [(-1.0, 0.5)] * 6
    elif isinstance(s, bl.NonNegative):
        bounds = [(0.0, None)] * 6
    elif isinstance(s, bl.HalfSpace):
        cons = [{"type": "ineq", "fun": lambda u: float(s.b) - np.asarray(s.a) @ u}]
    elif isinstance(s, bl.Affine):
        cons = [{"type": "eq", "fun": lambda u: np.asarray(s.A) @ u - np.asarray(s.b)}]
    else:
        G, g, E, e = map(np.asarray, (s.G, s.g, s.E, s.e))
        cons = [
            {"type": "ineq", "fun": lambda u: g - G @ u},
            {"type": "eq", "fun": lambda u: E @ u - e},
        ]
        bounds = [(-1.0, 2.0)] * 6
    vn = np.asarray(v)
    ref = scipy.optimize.minimize(
        lambda u: 0.5 * np.sum((u - vn) ** 2),
        np.zeros(6),
        jac=lambda u: u - vn,
        constraints=cons,
        bounds=bounds,
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    ).x
    assert np.allclose(p, ref, atol=1e-5)


def test_slack_projection_exact_against_slsqp_and_in_svm_solve():
    """Soft-margin rows 1 - xi_i - l_i (z_i.w + b) <= 0: the structure is detected,
    the semismooth-Newton projection is feasible, idempotent, KKT-optimal and equals
    an independent SLSQP solve; a column outside the rows is clipped to its box."""
    from jaxsolve.bilevel._sets import _Projector, _Rows, slack_structure

    rng = np.random.default_rng(3)
    m, d = 12, 3
    Z, lab = rng.standard_normal((m, d)), np.sign(rng.standard_normal(m))
    n = 1 + d + 1 + m  # (c, w, b, xi); c in a box, in no row
    G = np.zeros((m, n))
    G[:, 1 : 1 + d] = -lab[:, None] * Z
    G[:, 1 + d] = -lab
    G[:, 2 + d :] = -np.eye(m)
    g = -np.ones(m)
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    lo[0], hi[0] = -1.0, 1.0
    rows = _Rows(
        jnp.asarray(lo), jnp.asarray(hi), jnp.asarray(G), jnp.asarray(g), None, None
    )
    structure = slack_structure(rows)
    assert structure is not None
    assert structure[0] == tuple(range(2 + d, n))
    assert structure[1] == tuple(range(1, 2 + d))
    # A boxed core column or a shared slack breaks the structure: dual QP instead.
    assert (
        slack_structure(
            _Rows(jnp.asarray(lo).at[1].set(0.0), rows.hi, rows.G, rows.g, None, None)
        )
        is None
    )
    G2 = G.copy()
    G2[0, n - 1] = -1.0
    assert (
        slack_structure(_Rows(rows.lo, rows.hi, jnp.asarray(G2), rows.g, None, None))
        is None
    )
    proj = _Projector(rows, 50, structure)
    w = jnp.asarray(3 * rng.standard_normal(n))
    v, duals = proj(w, jnp.zeros(m), 50)
    assert float(proj.violation(v)) < 1e-12
    assert np.allclose(proj(v, duals, 50)[0], v, atol=1e-12)
    # KKT: v = clip_box(w) - G^T mu on the free columns, mu >= 0, complementarity.
    mu = np.asarray(duals)
    assert np.all(mu >= 0)
    free = np.arange(1, n)
    assert np.allclose(
        np.asarray(v)[free], np.asarray(w)[free] - (G.T @ mu)[free], atol=1e-10
    )
    assert np.allclose(mu * (G @ np.asarray(v) - g), 0, atol=1e-10)
    assert float(v[0]) == float(jnp.clip(w[0], -1, 1))
    wn = np.asarray(w)
    ref = scipy.optimize.minimize(
        lambda u: 0.5 * np.sum((u - wn) ** 2),
        np.zeros(n),
        jac=lambda u: u - wn,
        constraints=[{"type": "ineq", "fun": lambda u: g - G @ u, "jac": lambda u: -G}],
        bounds=[(-1.0, 1.0)] + [(None, None)] * (n - 1),
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 500},
    ).x
    assert np.allclose(v, ref, atol=1e-6)
    # Warm start from the multipliers reproduces the same point.
    v2, _ = proj(w, duals, 50)
    assert np.allclose(v2, v, atol=1e-12)


def test_sets_on_pytrees():
    v = {"a": jnp.array([-2.0, 3.0]), "b": jnp.array(5.0)}
    p = bl.Box({"a": jnp.array([-1.0, -1.0]), "b": 0.0}, 1.0).project(v)
    assert np.allclose(p["a"], [-1.0, 1.0]) and float(p["b"]) == 1.0


# ------------------------------------------------------------ bad input --


def test_bad_static_input():
    with pytest.raises(TypeError, match="upper"):
        bl.BilevelProblem(3.0, llc_lower)
    with pytest.raises(TypeError, match="x_set"):
        bl.BilevelProblem(llc_upper, llc_lower, x_set="box")
    with pytest.raises(ValueError, match="alpha"):
        bl.LVHBA(alpha=-0.1)
    with pytest.raises(ValueError, match=r"p=.*\(0, 1/2\)"):
        bl.LVHBA(p=0.5)
    with pytest.raises(ValueError, match="sigma"):
        bl.Penalty(sigma=0.0)
    with pytest.raises(ValueError, match="inner_steps"):
        bl.VPBGD(inner_steps=0)
    with pytest.raises(ValueError, match="lower <= upper"):
        bl.Box(1.0, 0.0)
    x0, y0 = llc_start()
    with pytest.raises(ValueError, match="x0 and y0"):
        bl.solve(LLC, bl.LVHBA(), x0, y0[0], max_steps=10)  # y must be a pair
    with pytest.raises(ValueError, match="max_steps"):
        bl.solve(LLC, bl.LVHBA(), x0, y0, max_steps=0)
    with pytest.raises(ValueError, match="one floating dtype"):
        bl.solve(LLC, bl.LVHBA(), x0.astype(jnp.float32), y0, max_steps=10)
    nonaffine = bl.BilevelProblem(
        llc_upper, llc_lower, equality=lambda x, y: jnp.reshape(jnp.sum(x**2), (1,))
    )
    with pytest.raises(ValueError, match="not affine"):
        bl.solve(nonaffine, bl.LVHBA(), x0, y0, max_steps=10)
    with pytest.raises(Exception, match="mode"):
        bl.implicit_hypergradient(
            ridge_upper, ridge_lower, LAM, jnp.zeros(5), mode="sideways"
        )


def test_infeasible_start_projected_and_nan_codes():
    # An infeasible start is projected; stats say how far.
    sol = bl.solve(
        BOX, bl.LVHBA(alpha=0.1, c=0.25), jnp.zeros(3), jnp.full(3, 4.0), max_steps=10
    )
    assert float(sol.stats["start_projection"]) > 1.0
    # NaN objective at the start: nonfinite_input.
    nan_problem = bl.BilevelProblem(
        lambda x, y: jnp.sum(jnp.log(x)) + jnp.sum(y**2),
        lambda x, y: 0.5 * jnp.sum((y - x) ** 2),
    )
    sol = bl.solve(
        nan_problem, bl.VPBGD(), -jnp.ones(2), jnp.zeros(2), max_steps=10, throw=False
    )
    assert sol.result == js.RESULTS.nonfinite_input
    # Divergence (a far too large step): nonfinite, and the loop stops early.
    sol = bl.solve(
        BOX,
        bl.VPBGD(gamma=10.0, alpha=5.0),
        jnp.ones(3),
        jnp.zeros(3),
        max_steps=2000,
        throw=False,
    )
    assert sol.result == js.RESULTS.nonfinite
    assert int(sol.stats["num_steps"]) < 2000
    with pytest.raises(Exception, match="NaN or Inf"):
        jax.block_until_ready(
            bl.solve(
                BOX,
                bl.VPBGD(gamma=10.0, alpha=5.0),
                jnp.ones(3),
                jnp.zeros(3),
                max_steps=2000,
            )
        )


def test_lineax_cg_operator_is_spd_tagged():
    # The implicit system is solved by lineax CG on HVPs: a user-supplied solver is
    # honoured (here a dense LU gives the same answer).
    g = bl.implicit_hypergradient(
        ridge_upper, ridge_lower, LAM, jnp.zeros(5), adjoint_solver=lx.LU()
    )
    assert np.allclose(g, jax.grad(ridge_phi)(LAM), rtol=1e-9)
