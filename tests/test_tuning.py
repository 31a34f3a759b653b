"""jaxsolve.tuning: omega policies (Tsallis-INF, Tsallis-INF-CB, ChebCB), the
sequence driver and the oracles, against independent NumPy references, simulations
and hand-built cost tables."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jaxsolve as js
import jaxsolve.tuning as jt
from jaxsolve.tuning._chebcb import _box_lstsq, _min_norm_lstsq


RANGE = (-0.15, 0.65)
GRID = jnp.linspace(1.0, 1.9, 10)


def make_policies(omegas=GRID):
    return {
        "TsallisINF": jt.TsallisINF(omegas),
        "TsallisINFCB": jt.TsallisINFCB(omegas, bins=3, context_range=RANGE),
        "ChebCB": jt.ChebCB(omegas, degree=3, context_range=RANGE),
    }


POLICY_NAMES = ["TsallisINF", "TsallisINFCB", "ChebCB"]


# Compiled once per policy structure and shared by the tests (eager op-by-op
# dispatch of a policy step is slow).
def _arr(c):
    return c if c is None else jnp.asarray(c, jnp.float64)


@eqx.filter_jit
def _jselect(policy, state, c):
    return policy.select(state, c)


@eqx.filter_jit
def _jupdate(policy, state, arm, cost, c):
    return policy.update(state, arm, cost, c)


@eqx.filter_jit
def _jprobs(policy, state, c):
    return policy.probabilities(state, c)


def select(policy, state, c=None):
    return _jselect(policy, state, _arr(c))


def update(policy, state, arm, cost, c=None):
    return _jupdate(policy, state, arm, jnp.asarray(cost, jnp.float64), _arr(c))


def probabilities(policy, state, c=None):
    return _jprobs(policy, state, _arr(c))


# -- Tsallis-INF: the normalisation and the estimator ---------------------------


def numpy_tsallis(losses, eta):
    """Independent reference: the normaliser by bisection on sum(p(x)) = 1."""
    losses = np.asarray(losses, np.float64)
    lo = losses.min() - 2 * np.sqrt(len(losses)) / eta - 1.0
    hi = losses.min() - 1e-300
    p = lambda x: 4 / (eta * (losses - x)) ** 2
    for _ in range(400):
        mid = 0.5 * (lo + hi)
        if p(mid).sum() > 1:
            hi = mid
        else:
            lo = mid
    return p(0.5 * (lo + hi))


@pytest.mark.parametrize("d", [1, 2, 20, 200])
def test_tsallis_probabilities_match_bisection(d):
    rng = np.random.default_rng(d)
    for eta in (2.0, 0.3, 0.02):
        losses = rng.exponential(5.0, d) * rng.integers(0, 2, d)
        ours = np.asarray(jt.tsallis_inf_probabilities(losses, eta))
        ref = numpy_tsallis(losses, eta)
        assert abs(ours.sum() - 1) < 1e-12
        # The reference is exact up to bisection: the renormalised Newton iterate
        # agrees to near machine precision.
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-14)
        assert np.all(ours > 0)


def test_tsallis_newton_converges_without_renormalising():
    # 20 Newton steps already put sum(p) within 1e-6 of 1 (the authors' claim),
    # checked on the un-normalised iterate.
    rng = np.random.default_rng(0)
    losses = jnp.asarray(rng.exponential(3.0, 20))
    eta = 0.05
    x = jnp.min(losses) - 2 / eta
    for _ in range(20):
        p = 4 / (eta * (losses - x)) ** 2
        x = x - (p.sum() - 1) / (eta * jnp.sum(p**1.5))
    p = 4 / (eta * (losses - x)) ** 2
    assert abs(float(p.sum()) - 1) < 1e-6
    np.testing.assert_allclose(jt.tsallis_inf_probabilities(losses, eta), p, rtol=1e-6)


@pytest.mark.parametrize("reduced_variance", [False, True])
def test_importance_weighted_estimator_is_unbiased(reduced_variance):
    grid = jnp.linspace(1.0, 1.8, 5)
    policy = jt.TsallisINF(grid, reduced_variance=reduced_variance)
    table = jnp.asarray([30.0, 12.0, 7.0, 9.0, 50.0])
    # A non-uniform state: a few rounds of play first.
    state = policy.init(jax.random.key(0))
    for _ in range(6):
        arm, _, state = select(policy, state)
        state = update(policy, state, arm, table[arm])
    probs = probabilities(policy, state)
    assert float(probs.max() / probs.min()) > 1.5

    @jax.jit
    @jax.vmap
    def increment(key):
        s = state._replace(key=key)
        arm, _, s = policy.select(s)
        return policy.update(s, arm, table[arm]).loss_sum - state.loss_sum

    n = 20_000
    inc = increment(jax.random.split(jax.random.key(1), n))
    mean = np.asarray(inc.mean(0))
    stderr = np.asarray(inc.std(0)) / np.sqrt(n)
    # E[1{I = i} (l_i - 1) / p_i] = l_i - 1 for every arm.
    assert np.all(np.abs(mean - (np.asarray(table) - 1)) < 5 * stderr + 1e-12)


# -- properties shared by the policies -----------------------------------------


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_probabilities_are_a_distribution(name, getkey):
    policy = make_policies()[name]
    state = policy.init(getkey())
    rng = np.random.default_rng(0)
    for t in range(40):
        c = float(rng.uniform(*RANGE))
        probs = probabilities(policy, state, c)
        assert probs.shape == (10,)
        assert bool(jnp.all(probs >= 0)) and bool(jnp.all(jnp.isfinite(probs)))
        assert abs(float(probs.sum()) - 1) < 1e-12
        arm, omega, state = select(policy, state, c)
        assert omega == GRID[arm]
        state = update(policy, state, arm, 10 + 5 * int(arm) + t % 3, c)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_one_arm_is_always_chosen(name, getkey):
    policy = make_policies(jnp.asarray([1.5]))[name]
    state = policy.init(getkey())
    for t in range(30):
        c = 0.3 * np.sin(t)
        arm, omega, state = select(policy, state, c)
        assert int(arm) == 0 and float(omega) == 1.5
        assert float(probabilities(policy, state, c)[0]) == 1.0
        state = update(policy, state, arm, 5 + 100 * (t % 2), c)


def _replay(policy, table, key, contexts):
    return jt.replay(policy, table, key, contexts)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_same_key_same_choices_and_vmap(name):
    policy = make_policies()[name]
    rng = np.random.default_rng(0)
    table = jnp.asarray(rng.integers(5, 60, (50, 10)))
    contexts = jnp.asarray(rng.uniform(*RANGE, 50))
    run = jax.jit(functools.partial(_replay, policy))
    keys = jax.random.split(jax.random.key(3), 3)
    a = run(table, keys[0], contexts)
    b = run(table, keys[0], contexts)
    c = run(table, keys[1], contexts)
    np.testing.assert_array_equal(a.arms, b.arms)
    assert not np.array_equal(a.arms, c.arms)
    batched = jax.vmap(run, in_axes=(None, 0, None))(table, keys, contexts)
    for i in range(3):
        np.testing.assert_array_equal(
            batched.arms[i], run(table, keys[i], contexts).arms
        )


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_jit_does_not_retrace(name):
    traces = []

    @eqx.filter_jit
    def run(policy, table, key, contexts):
        traces.append(1)
        return jt.replay(policy, table, key, contexts).costs.sum()

    rng = np.random.default_rng(1)
    for i in range(3):
        # New grid values, costs, contexts and key each time: same shapes.
        grid = jnp.linspace(1.0 + 0.01 * i, 1.9, 10)
        policy = make_policies(grid)[name]
        table = jnp.asarray(rng.integers(5, 60, (20, 10)))
        run(policy, table, jax.random.key(i), jnp.asarray(rng.uniform(*RANGE, 20)))
    assert len(traces) == 1


# -- regret on hand-built cost tables --------------------------------------------


def test_tsallis_inf_regret_on_a_stochastic_table():
    # 8 arms, mean costs with a unique best arm (index 5), noisy draws.
    T, d = 3000, 8
    means = np.array([90, 70, 55, 45, 38, 30, 42, 80], float)
    rng = np.random.default_rng(0)
    table = np.maximum(1, np.round(means + rng.normal(0, 8, (T, d)))).astype(np.int64)
    policy = jt.TsallisINF(jnp.linspace(1.0, 1.7, d))
    keys = jax.random.split(jax.random.key(0), 4)
    run = jax.jit(jax.vmap(lambda k: jt.replay(policy, table, k)))
    out = run(keys)
    _, best = jt.best_fixed(table)
    ratio = np.asarray(out.costs.sum(1)) / float(best)
    # Regret O(sqrt(d T)) against a unit-scale gap: well under 15% here, and the
    # best arm dominates the last rounds.
    assert np.all(ratio < 1.15), ratio
    late = np.asarray(out.arms[:, -500:])
    assert np.mean(late == 5) > 0.6


def _contextual_table(T, seed):
    # The best arm moves smoothly with the context c in [-0.15, 0.65].
    rng = np.random.default_rng(seed)
    c = rng.uniform(*RANGE, T)
    w = np.linspace(1.0, 1.9, 10)
    target = 1.1 + (c - RANGE[0]) / (RANGE[1] - RANGE[0]) * 0.7
    cost = 20 + 400 * (w[None, :] - target[:, None]) ** 2
    return np.round(cost + rng.uniform(0, 2, (T, 10))).astype(np.int64), c


def test_contextual_policies_beat_best_fixed():
    table, c = _contextual_table(3000, 0)
    _, best = jt.best_fixed(table)
    _, opt = jt.instance_optimal(table)
    assert float(best) > 1.5 * float(opt)  # context matters in this table
    policies = make_policies()
    key = jax.random.key(0)
    totals = {}
    for name in ("TsallisINFCB", "ChebCB"):
        totals[name] = int(jt.replay(policies[name], table, key, c).costs.sum())
    assert totals["TsallisINFCB"] < 0.95 * float(best)
    # ChebCB learns the smooth map: close to the instance optimum.
    assert totals["ChebCB"] < 1.15 * float(opt), (totals, float(opt))


# -- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "omegas, match",
    [
        ([], "non-empty"),
        ([[1.0, 1.2]], "1-D"),
        ([1.2, 1.0], "increasing"),
        ([1.0, 1.0], "increasing"),
        ([1.0, 2.0], r"\(0, 2\)"),
        ([0.0, 1.0], r"\(0, 2\)"),
        ([1.0, float("nan")], r"\(0, 2\)"),
    ],
)
@pytest.mark.parametrize("cls", [jt.TsallisINF, jt.TsallisINFCB, jt.ChebCB])
def test_bad_omega_grid(cls, omegas, match):
    kwargs = {} if cls is jt.TsallisINF else {"context_range": RANGE}
    with pytest.raises(ValueError, match=match):
        cls(jnp.asarray(omegas, dtype=jnp.float64), **kwargs)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="context_range"):
        jt.ChebCB(GRID)
    with pytest.raises(ValueError, match="low < high"):
        jt.ChebCB(GRID, context_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="low < high"):
        jt.TsallisINFCB(GRID, context_range=(0.0, float("inf")))
    with pytest.raises(ValueError, match="bins"):
        jt.TsallisINFCB(GRID, bins=0, context_range=RANGE)
    with pytest.raises(ValueError, match="degree"):
        jt.ChebCB(GRID, degree=-1, context_range=RANGE)
    policy = jt.ChebCB(GRID, context_range=RANGE)
    state = policy.init(jax.random.key(0))
    with pytest.raises(ValueError, match="contextual"):
        policy.select(state)
    # (under pytest, jaxtyping's TypeCheckError, a TypeError, may fire first)
    with pytest.raises((ValueError, TypeError)):
        policy.select(state, jnp.zeros(2))
    with pytest.raises(ValueError, match="arm"):
        policy.update(state, 10, 5.0, 0.0)
    with pytest.raises((ValueError, TypeError)):
        policy.update(state, 1.0, 5.0, 0.0)


@pytest.mark.parametrize("name", POLICY_NAMES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -3.0])
def test_invalid_cost_is_ignored(name, bad):
    policy = make_policies()[name]
    state = policy.init(jax.random.key(0))
    for t in range(5):
        arm, _, state = select(policy, state, 0.1)
        state = update(policy, state, arm, 20 + t, 0.1)
    arm, _, state = select(policy, state, 0.1)
    new = update(policy, state, arm, bad, 0.1)
    assert int(new.num_invalid) == 1
    for field in state._fields:
        if field not in ("num_invalid", "key"):
            np.testing.assert_array_equal(getattr(new, field), getattr(state, field))
    probs = probabilities(policy, new, 0.1)
    assert bool(jnp.all(jnp.isfinite(probs))) and abs(float(probs.sum()) - 1) < 1e-12


@pytest.mark.parametrize("name", ["TsallisINFCB", "ChebCB"])
def test_context_outside_range_is_clipped(name):
    policy = make_policies()[name]
    state = policy.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    for t in range(30):
        c = float(rng.uniform(*RANGE))
        arm, _, state = select(policy, state, c)
        state = update(policy, state, arm, int(10 + 30 * abs(c - 0.2)) + int(arm), c)
    for outside, edge in ((-5.0, RANGE[0]), (3.0, RANGE[1])):
        np.testing.assert_array_equal(
            probabilities(policy, state, outside), probabilities(policy, state, edge)
        )
        a1, _, _ = select(policy, state, outside)
        a2, _, _ = select(policy, state, edge)
        assert int(a1) == int(a2)
    # A non-finite context carries no information: uniform play, no update.
    np.testing.assert_allclose(probabilities(policy, state, float("nan")), 0.1)
    arm, _, s2 = select(policy, state, float("nan"))
    s3 = update(policy, s2, arm, 50, float("nan"))
    assert int(s3.num_invalid) == 1


def test_tsallis_inf_cb_bins_match_nearest_centre():
    policy = jt.TsallisINFCB(GRID, bins=5, context_range=RANGE)
    centres = RANGE[0] + (RANGE[1] - RANGE[0]) * np.linspace(0.1, 0.9, 5)
    for c in np.linspace(-0.3, 0.8, 45):
        expected = np.argmin(np.abs(centres - np.clip(c, *RANGE)))
        assert int(policy.bin_of(c)) == expected


# -- ChebCB internals against NumPy/SciPy ---------------------------------------


def test_chebyshev_features():
    z = np.linspace(-1, 1, 7)
    ours = np.stack([np.asarray(jt.chebyshev_features(v, 6)) for v in z])
    ref = np.polynomial.chebyshev.chebvander(z, 5)
    np.testing.assert_allclose(ours, ref, atol=1e-14)


def test_least_squares_from_sufficient_statistics():
    rng = np.random.default_rng(0)
    for n in (2, 6, 40):  # rank-deficient, square and over-determined
        z = rng.uniform(-1, 1, n)
        x = np.polynomial.chebyshev.chebvander(z, 5)
        y = rng.normal(size=n)
        ours = _min_norm_lstsq(jnp.asarray(x.T @ x), jnp.asarray(x.T @ y))
        ref = np.linalg.lstsq(x, y, rcond=None)[0]
        np.testing.assert_allclose(ours, ref, atol=1e-6)
        bound = np.full(6, 0.3)
        boxed = _box_lstsq(
            jnp.asarray(x.T @ x), jnp.asarray(x.T @ y), jnp.asarray(bound), 3000
        )
        ref = scipy.optimize.lsq_linear(x, y, bounds=(-bound, bound)).x
        assert np.all(np.abs(np.asarray(boxed)) <= bound + 1e-12)
        # Compare objective values (the minimiser need not be unique).
        obj = lambda t: np.sum((x @ t - y) ** 2)
        assert obj(np.asarray(boxed)) <= obj(ref) * (1 + 1e-6) + 1e-9


# -- the driver and the oracles -------------------------------------------------


N = 6


def sor(omega=1.0, **kw):
    kw = {"rtol": 1e-8, "ordering": "natural", **kw}
    return js.linear.SOR(omega, **kw)


def small_sequence(T=24, seed=0):
    rng = np.random.default_rng(seed)
    c = jnp.asarray(-0.1 + 0.5 * rng.beta(0.5, 1.5, T))
    ops = jax.vmap(lambda s: js.linear.poisson((N, N), shift=s))(c)
    bs = jnp.asarray(rng.normal(size=(T, N, N)))
    return c, ops, bs


@pytest.fixture(scope="module")
def sequence():
    return small_sequence()


@pytest.fixture(scope="module")
def table(sequence):
    c, ops, bs = sequence
    return jax.jit(lambda o, b: jt.cost_table(sor(), (o, b), GRID))(ops, bs)


def test_cost_table_matches_single_solves(sequence, table):
    c, ops, bs = sequence
    for t, i in ((5, 9), (17, 4)):
        op = js.linear.poisson((N, N), shift=c[t])
        sol = js.linear.solve(op, bs[t], sor(GRID[i]))
        assert int(table.costs[t, i]) == int(sol.stats["num_steps"])
    assert bool(table.successful.all())
    # A permutation of the pairs changes nothing but the batching.
    order = np.random.default_rng(0).permutation(c.shape[0] * GRID.shape[0])
    again = jt.cost_table(sor(), (ops, bs), GRID, order=order, batch_size=64)
    np.testing.assert_array_equal(again.costs, table.costs)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_solve_sequence_equals_replay_and_loop(name, sequence, table):
    c, ops, bs = sequence
    policy = make_policies()[name]
    key = jax.random.key(5)
    run = jax.jit(
        lambda ops, bs, c, key: jt.solve_sequence(sor(), (ops, bs), policy, key, c)
    )
    out = run(ops, bs, c, key)
    rep = jt.replay(policy, table.costs, key, c)
    np.testing.assert_array_equal(out.arms, rep.arms)
    np.testing.assert_array_equal(out.costs, rep.costs)
    np.testing.assert_array_equal(out.omegas, GRID[out.arms])
    assert bool(jnp.all(out.result == js.RESULTS.successful))
    # The same thing as a plain Python loop over the public pieces.
    state = policy.init(key)
    for t in range(4):
        arm, omega, state = select(policy, state, c[t])
        op = js.linear.poisson((N, N), shift=c[t])
        cost = js.linear.solve(op, bs[t], sor(omega)).stats["num_steps"]
        state = update(policy, state, arm, cost, c[t])
        assert int(arm) == int(out.arms[t]) and int(cost) == int(out.costs[t])


def test_solve_sequence_factory_warm_start_and_ssor(sequence):
    c, ops, bs = sequence
    policy = jt.TsallisINF(GRID)
    key = jax.random.key(0)
    # The same right-hand side every step: after the first solve, a warm start
    # leaves little to do.
    same = jnp.broadcast_to(bs[0], bs.shape)
    a = jt.solve_sequence(sor(), (ops, same), policy, key)
    b = jt.solve_sequence(lambda w: sor(w), (ops, same), policy, key)
    np.testing.assert_array_equal(a.costs, b.costs)
    warm = jt.solve_sequence(sor(), (ops, same), policy, key, warm_start=True)
    assert int(warm.costs[1:].sum()) < int(a.costs[1:].sum())
    ssor = js.linear.SSORPCG(1.0, rtol=1e-8, ordering="natural")
    out = jt.solve_sequence(ssor, (ops, bs), policy, key, warm_start=True)
    assert bool(jnp.all(out.result == js.RESULTS.successful))
    x = js.linear.solve(_last(ops), bs[-1], ssor).value
    np.testing.assert_allclose(out.value, x, atol=1e-6)


def _last(ops):
    return jax.tree.map(lambda x: x[-1], ops)


def test_solve_sequence_rhs_fn_and_vmap(sequence):
    c, ops, bs = sequence
    policy = jt.TsallisINF(GRID)

    # A "time stepper": b_t = x_{t-1} + f_t.
    def run(key):
        return jt.solve_sequence(
            sor(),
            (ops, bs),
            policy,
            key,
            rhs_fn=lambda x, f: x + f,
            x0=jnp.zeros((N, N)),
            warm_start=True,
        )

    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.jit(jax.vmap(run))(keys)
    single = run(keys[1])
    np.testing.assert_array_equal(batched.costs[1], single.costs)
    # Check the recursion with a direct solve of the last two steps.
    x_prev = jnp.zeros((N, N))
    for t in range(c.shape[0]):
        op = js.linear.poisson((N, N), shift=c[t])
        x_prev = js.linear.solve(op, x_prev + bs[t], sor(1.5)).value
    np.testing.assert_allclose(single.value, x_prev, rtol=1e-6)


def test_failed_solves_cost_max_steps(sequence):
    c, ops, bs = sequence
    policy = jt.TsallisINF(GRID)
    out = jt.solve_sequence(sor(max_steps=20), (ops, bs), policy, jax.random.key(0))
    failed = np.asarray(out.result != js.RESULTS.successful)
    assert failed.any()
    np.testing.assert_array_equal(np.asarray(out.costs)[failed], 20)


def test_driver_bad_input(sequence):
    c, ops, bs = sequence
    policy = jt.TsallisINF(GRID)
    with pytest.raises(ValueError, match="leading axis"):
        jt.solve_sequence(sor(), (ops, bs[:5]), policy, jax.random.key(0))
    with pytest.raises(ValueError, match="pair"):
        jt.solve_sequence(sor(), ops, policy, jax.random.key(0))
    with pytest.raises((ValueError, TypeError)):
        jt.solve_sequence(sor(), (ops, bs), "TsallisINF", jax.random.key(0))
    with pytest.raises(ValueError, match="contextual"):
        jt.solve_sequence(
            sor(), (ops, bs), make_policies()["ChebCB"], jax.random.key(0)
        )
    with pytest.raises(ValueError, match="shape"):
        jt.replay(policy, jnp.ones((5, 3)), jax.random.key(0))


def test_oracles(table):
    costs = np.asarray(table.costs)
    arm, total = jt.best_fixed(costs)
    assert int(arm) == int(np.argmin(costs.sum(0))) and int(total) == costs.sum(0).min()
    arms, total = jt.instance_optimal(costs)
    np.testing.assert_array_equal(arms, costs.argmin(1))
    assert int(total) == costs.min(1).sum()
    ratio = np.asarray(jt.hindsight_ratio(costs[:, 3], costs))
    expected = np.cumsum(costs[:, 3]) / np.cumsum(costs, 0).min(1)
    np.testing.assert_allclose(ratio, expected)


def test_young_omega_is_near_the_grid_optimum():
    # For the shifted 5-point Laplacian (consistently ordered), Young's omega is
    # the per-instance optimum of the asymptotic rate: it lands within one grid
    # step of the best grid omega, and costs no more than it (a few sweeps slack).
    shifts = jnp.asarray([0.0, 0.3])
    ops = jax.vmap(lambda s: js.linear.poisson((10, 10), shift=s))(shifts)
    omega = np.asarray(jt.young_omegas(ops))
    rho = 4 * np.cos(np.pi / 11) / (4 + np.asarray(shifts))
    np.testing.assert_allclose(omega, 2 / (1 + np.sqrt(1 - rho**2)), rtol=1e-12)
    fine = jnp.linspace(1.2, 1.95, 16)
    bs = jnp.asarray(np.random.default_rng(0).normal(size=(2, 10, 10)))
    tab = np.asarray(jt.cost_table(sor(), (ops, bs), fine).costs)
    step = float(fine[1] - fine[0])
    for t in range(2):
        best = float(fine[tab[t].argmin()])
        assert abs(best - omega[t]) <= 2 * step
        young = js.linear.solve(_index(ops, t), bs[t], sor(omega[t]))
        assert int(young.stats["num_steps"]) <= tab[t].min() + 5


def _index(ops, t):
    return jax.tree.map(lambda x: x[t], ops)


@pytest.mark.slow
def test_demo_rows():
    from jaxsolve.tuning._demo import demo_rows

    rows = demo_rows(T=200)
    by_method = {r["method"].split(" (")[0]: r for r in rows}
    assert {r["family"] for r in rows} == {"tuning"}
    for name in ("Tsallis-INF", "Tsallis-INF-CB", "ChebCB", "instance-optimal omega"):
        assert isinstance(by_method[name]["iterations"], int)
    # Every learner beats Gauss-Seidel by far; the instance optimum bounds them.
    gs = by_method["omega = 1"]["iterations"]
    opt = by_method["instance-optimal omega"]["iterations"]
    for name in ("Tsallis-INF", "Tsallis-INF-CB", "ChebCB"):
        assert opt <= by_method[name]["iterations"] < gs / 2


# -- ChebCB: cached refits, the rate regression, the exploration parameter -------


def test_chebcb_cached_refit_equals_refitting_every_arm():
    # An update refits only the played arm unless the scale grew; the cached
    # coefficients must equal a from-scratch fit of every arm.
    table, c = _contextual_table(400, 3)
    policy = jt.ChebCB(GRID, degree=3, context_range=RANGE)
    out = jt.replay(policy, table, jax.random.key(0), c)
    st = out.policy_state
    m = policy.num_features
    bound = st.max_cost * jnp.concatenate([jnp.ones(1), 2 / jnp.arange(1, m)])
    raw = jax.vmap(_min_norm_lstsq)(st.gram, st.moment)
    bad = jnp.any(jnp.abs(raw) > bound[None], axis=1)
    boxed = jax.vmap(lambda g, h: _box_lstsq(g, h, bound, policy.box_steps))(
        st.gram, st.moment
    )
    expected = jnp.where(bad[:, None], boxed, raw)
    np.testing.assert_allclose(st.raw, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        st.theta, expected / (st.max_cost * policy._norm_const())
    )


def _rate_table(T, seed):
    # SOR-like costs: a rate (like -log rho) that grows with the context and peaks
    # at a best omega moving with it; cost = const / rate blows up at the low end.
    rng = np.random.default_rng(seed)
    c = rng.uniform(*RANGE, T)
    w = np.linspace(1.0, 1.9, 10)
    best = 1.85 - 0.6 * (c - RANGE[0]) / (RANGE[1] - RANGE[0])
    rate = (0.02 + 0.3 * (c[:, None] + 0.16)) * np.exp(
        -2.0 * np.abs(w[None, :] - best[:, None])
    )
    return np.round(10 / rate + rng.uniform(0, 3, (T, 10))).astype(np.int64), c


def test_chebcb_rate_regression_learns_an_sor_like_table():
    table, c = _rate_table(3000, 0)
    _, best = jt.best_fixed(table)
    _, opt = jt.instance_optimal(table)
    assert float(best) > 1.2 * float(opt)  # context matters
    policy = jt.ChebCB(GRID, degree=4, context_range=RANGE, regress="rate")
    total = int(jt.replay(policy, table, jax.random.key(0), c).costs.sum())
    # Measured 1.03-1.05x over three keys.
    assert total < 1.10 * float(opt), (total, float(opt), float(best))


def test_chebcb_exploration_is_an_array_field():
    traces = []

    @eqx.filter_jit
    def run(policy, table, key, contexts):
        traces.append(1)
        return jt.replay(policy, table, key, contexts).costs.sum()

    table, c = _contextual_table(300, 1)
    totals = []
    for e in (1.0, 0.25, 4.0):
        policy = jt.ChebCB(GRID, degree=3, context_range=RANGE, exploration=e)
        totals.append(int(run(policy, table, jax.random.key(0), c)))
    assert len(traces) == 1
    assert len(set(totals)) > 1  # the parameter reaches the policy


def test_chebcb_bad_options():
    with pytest.raises(ValueError, match="regress.*'cost' or 'rate'.*'log'"):
        jt.ChebCB(GRID, context_range=RANGE, regress="log")
    with pytest.raises(ValueError, match="exploration.*positive"):
        jt.ChebCB(GRID, context_range=RANGE, exploration=0.0)
