"""The diffusion family: schedules, exact mixture test bed, samplers (reductions,
order, stability), the driver's contract and bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxsolve as js
import jaxsolve.diffusion as jd

from .helpers import finite_difference_jvp


SCHED = jd.VPSchedule.linear()
GM = jd.GaussianMixture.example(dim=2)
X_T = jax.random.normal(jax.random.key(3), (8, 2))
LABELS = jnp.arange(8) % 2
COND = GM.model(SCHED, LABELS)
UNCOND = GM.model(SCHED)


def _err(x, ref):
    return float(jnp.sqrt(jnp.mean(jnp.sum((x - ref) ** 2, axis=-1))))


# --- schedules -----------------------------------------------------------------------


def test_linear_schedule_closed_form():
    t = jnp.linspace(1e-3, 1.0, 7)
    # score-SDE: alpha_t = exp(-1/4 t^2 (b1 - b0) - 1/2 t b0)
    alpha = np.exp(-0.25 * t**2 * 19.9 - 0.5 * t * 0.1)
    np.testing.assert_allclose(SCHED.alpha(t), alpha, rtol=1e-14)
    np.testing.assert_allclose(SCHED.alpha(t) ** 2 + SCHED.sigma(t) ** 2, 1.0)
    np.testing.assert_allclose(
        SCHED.lambda_(t), np.log(alpha / np.sqrt(1 - alpha**2)), rtol=1e-12
    )


@pytest.mark.parametrize(
    "sched",
    [
        jd.VPSchedule.linear(),
        jd.VPSchedule.cosine(),
        jd.VPSchedule.discrete("linear"),
        jd.VPSchedule.discrete("scaled_linear"),
    ],
    ids=["linear", "cosine", "discrete", "scaled_linear"],
)
def test_schedule_inverse_and_monotone(sched):
    t = jnp.linspace(float(sched.t_min), 1.0, 101)
    lam = sched.lambda_(t)
    assert np.all(np.diff(lam) < 0)
    np.testing.assert_allclose(sched.t_of_lambda(lam), t, rtol=1e-9, atol=1e-12)


def test_discrete_schedule_matches_cumprod():
    betas = np.linspace(1e-4, 0.02, 1000)
    sched = jd.VPSchedule.discrete(betas)
    abar = np.cumprod(1 - betas)
    k = np.array([0, 1, 10, 500, 999])
    np.testing.assert_allclose(sched.alpha((k + 1) / 1000) ** 2, abar[k], rtol=1e-12)
    assert float(sched.t_min) == 1e-3


def test_time_grids():
    n = 8
    uni = jd.timesteps(SCHED, n, "uniform")
    np.testing.assert_allclose(uni, np.linspace(1, 1e-3, n + 1))
    ls = jd.timesteps(SCHED, n, "logsnr")
    dl = np.diff(SCHED.lambda_(ls))
    np.testing.assert_allclose(dl, dl[0], rtol=1e-9)
    assert ls[0] == 1.0 and ls[-1] == SCHED.t_min
    # diffusers' spacings on the 1000-step lattice (t = (k + 1) / 1000), then t_min
    lead = np.arange(0, n)[::-1] * (1000 // n) + 1
    np.testing.assert_allclose(
        jd.timesteps(SCHED, n, "leading"), np.r_[(lead + 1) / 1000, 1e-3]
    )
    trail = np.round(np.arange(1000, 0, -1000 / n)) - 1
    np.testing.assert_allclose(
        jd.timesteps(SCHED, n, "trailing"), np.r_[(trail + 1) / 1000, 1e-3]
    )


def test_time_grids_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for spacing in ("leading", "trailing"):
        sch = diffusers.DDIMScheduler(
            timestep_spacing=spacing,
            steps_offset=1 if spacing == "leading" else 0,
            set_alpha_to_one=False,
        )
        sch.set_timesteps(10)
        ks = sch.timesteps.numpy()
        grid = jd.timesteps(SCHED, 10, spacing)
        np.testing.assert_allclose(grid[:-1], (ks + 1) / 1000)


# --- exact test bed ------------------------------------------------------------------


def test_mixture_eps_is_minus_sigma_score():
    x = jax.random.normal(jax.random.key(0), (5, 2))
    a, s = SCHED.alpha(0.4), SCHED.sigma(0.4)
    for label in (None, 1):
        score = jax.vmap(jax.grad(lambda y: GM.log_prob(y, a, s, label)))(x)
        np.testing.assert_allclose(GM.eps(x, a, s, label), -s * score, rtol=1e-10)
    # the class-conditional density integrates the right components: at t ~ 0 the
    # denoiser of class c lands on a mean of class c.
    d = GM.denoise(GM.means[4][None] + 0.3, SCHED.alpha(0.02), SCHED.sigma(0.02), 1)
    dist = jnp.linalg.norm(GM.means - d, axis=-1)
    assert int(GM.classes[jnp.argmin(dist)]) == 1


def test_reference_matches_closed_form():
    # One Gaussian N(mu, s^2 I): in the DDIM variables xbar - mu = C sqrt(s^2 + sbar^2).
    mu, s = jnp.array([[0.3, -0.5]]), 0.5
    g = jd.GaussianMixture(mu, s)
    x_T = jax.random.normal(jax.random.key(1), (4, 2))
    ref = g.reference(x_T, SCHED)
    sb = lambda t: SCHED.sigma(t) / SCHED.alpha(t)
    a0, a1 = SCHED.alpha(1.0), SCHED.alpha(SCHED.t_min)
    exact = mu + (x_T / a0 - mu) * jnp.sqrt(s**2 + sb(SCHED.t_min) ** 2) / jnp.sqrt(
        s**2 + sb(1.0) ** 2
    )
    np.testing.assert_allclose(ref, a1 * exact, rtol=1e-8, atol=1e-9)


# --- samplers: reductions, order, stability ------------------------------------------


@eqx.filter_jit
def _run(sampler, x_T, w, n, grid="logsnr"):
    sol = jd.sample(
        COND,
        x_T,
        SCHED,
        sampler,
        n,
        guidance=jd.Guidance(UNCOND, w),
        time_grid=grid,
        throw=False,
    )
    return sol.value, sol.stats["num_diverged"]


@pytest.mark.parametrize(
    "momentum, base",
    [
        (jd.HeavyBall(jd.PLMS(4), 1.0), jd.PLMS(4)),
        (jd.HeavyBall(jd.DPMSolverPP(), 1.0), jd.DPMSolverPP()),
        (jd.Nesterov(jd.PLMS(3), 1.0), jd.PLMS(3)),
        (jd.GHVB(4, 1.0), jd.PLMS(4)),
        (jd.GHVB(2, 1.0), jd.PLMS(2)),
        (jd.GHVB(1, 0.7), jd.HeavyBall(jd.DDIM(), 0.7)),
        (jd.PLMS(1), jd.DDIM()),
    ],
    ids=["hb-plms4", "hb-dpm", "nesterov-plms3", "ghvb4", "ghvb2", "ghvb1-hb", "plms1"],
)
def test_beta_one_recovers_base(momentum, base):
    x1, _ = _run(momentum, X_T, 3.0, 12)
    x2, _ = _run(base, X_T, 3.0, 12)
    np.testing.assert_allclose(x1, x2, rtol=1e-12, atol=1e-12)


def test_momentum_changes_the_result():
    # the reductions above are not vacuous: beta < 1 does change the endpoint
    x1, _ = _run(jd.HeavyBall(jd.PLMS(4), 0.8), X_T, 3.0, 12)
    x2, _ = _run(jd.PLMS(4), X_T, 3.0, 12)
    assert _err(x1, x2) > 1e-4


def test_ghvb_coefficients_order_conditions():
    # x_{n+1} - x_n - (1-b)(x_n - x_{n-1}) = h b sum_j c_j f_{n-j} must be exact for
    # polynomials of degree <= k (order k); checked on x = t^(q+1)/(q+1), f = t^q.
    for k in range(1, 5):
        for b in (1.0, 0.8, 0.5, 0.3):
            c = np.asarray(jd.ab_coefficients(k, b))[k - 1]
            for q in range(k + 1):
                x = lambda t: t ** (q + 1) / (q + 1)
                lhs = x(1.0) - x(0.0) - (1 - b) * (x(0.0) - x(-1.0))
                rhs = b * sum(c[j] * float(-j) ** q for j in range(k))
                residual = lhs - rhs
                if q < k:
                    assert abs(residual) < 1e-12, (k, b, q)
                else:
                    assert abs(residual) > 1e-3, (k, b, q)  # exactly order k


# A smooth problem in the DDIM variables with a closed-form solution: data N(mu, s^2)
# gives eps = sbar (xbar - mu) / (s^2 + sbar^2), xbar(sbar) = mu + C sqrt(s^2 + sbar^2).
_MU, _S = 0.3, 1.0


def _exact(sb, c=1.0):
    return _MU + c * np.sqrt(_S**2 + sb**2)


def _coeff(sb):
    a = 1 / jnp.sqrt(1 + sb**2)
    return a, sb * a


@eqx.filter_jit
def _one_step(sampler, state, xbar, sb, sb_next, index):
    a, s = _coeff(sb)
    an, sn = _coeff(sb_next)
    x = a * xbar
    eps = sb * (xbar - _MU) / (_S**2 + sb**2)
    x, state = sampler.step(state, x, eps, jd.Coefficients(a, s, an, sn), index, 10_000)
    return x / an, state


def _global_error(sampler, n, exact_start=40, lo=1.0, hi=3.0):
    """Uniform steps in sbar from `hi` to `lo`; the first `exact_start` steps (before
    `hi`) overwrite x with the exact solution (an exact start for the history)."""
    h = (hi - lo) / n
    grid = hi + h * np.arange(exact_start, -n - 1, -1.0)
    xbar = jnp.full((1, 1), _exact(grid[0]))
    state = sampler.init(xbar)
    for i in range(len(grid) - 1):
        xbar, state = _one_step(
            sampler, state, xbar, grid[i], grid[i + 1], jnp.array(i, jnp.int32)
        )
        if i + 1 <= exact_start:
            xbar = jnp.full((1, 1), _exact(grid[i + 1]))
    return abs(float(xbar[0, 0]) - _exact(lo))


@pytest.mark.parametrize(
    "sampler, order",
    [
        (jd.GHVB(1, 0.5), 1),
        (jd.GHVB(2, 0.5), 2),
        (jd.GHVB(3, 0.8), 3),
        (jd.GHVB(4, 0.8), 4),
        (jd.GHVB(4, 0.5), 4),
        (jd.PLMS(4), 4),
        (jd.HeavyBall(jd.PLMS(4), 0.8), 1),
        (jd.HeavyBall(jd.PLMS(2), 0.5), 1),
    ],
    ids=["ghvb1", "ghvb2", "ghvb3", "ghvb4-0.8", "ghvb4-0.5", "plms4", "hb4", "hb2"],
)
def test_convergence_order_from_exact_start(sampler, order):
    e1, e2 = _global_error(sampler, 32), _global_error(sampler, 64)
    observed = np.log2(e1 / e2)
    assert abs(observed - order) < 0.2, (e1, e2, observed)


def _stability_interval(sampler, z_max):
    """Largest L with the step's amplification matrix of spectral radius <= 1 on
    [-L, 0], for the test equation dxbar/dsbar = z xbar (unit steps), built from the
    implementation by forward-mode differentiation of one step."""
    x0 = jnp.zeros((1, 1))
    state0 = sampler.init(x0)
    arrays, static = eqx.partition(state0, eqx.is_inexact_array)
    flat0, unravel = ravel_pytree((x0, arrays))
    one = jnp.ones(())
    c = jd.Coefficients(one, one, one, 2 * one)  # alpha = 1, sbar: 1 -> 2 (h = 1)
    index = jnp.array(10, jnp.int32)  # past the warm start: full order

    def step(flat, z):
        x, arr = unravel(flat)
        st = eqx.combine(arr, static)
        st = jax.tree.map(
            lambda a: (
                jnp.full_like(a, 10) if eqx.is_array(a) and a.dtype == jnp.int32 else a
            ),
            st,
        )
        x, st = sampler.step(st, x, z * x, c, index, 10_000)
        return ravel_pytree((x, eqx.filter(st, eqx.is_inexact_array)))[0]

    @jax.jit
    def rho(zs):
        mats = jax.vmap(lambda z: jax.jacfwd(step)(flat0, z))(zs)
        return jnp.max(jnp.abs(jnp.linalg.eigvals(mats)), axis=-1)

    # Locate the first unstable z on a 64-point grid, refined three times.
    lo, hi = 0.0, z_max
    for _ in range(3):
        zs = jnp.linspace(lo, hi, 65)[1:]
        unstable = np.nonzero(np.asarray(rho(-zs)) > 1 + 1e-9)[0]
        if unstable.size == 0:
            return np.inf
        j = unstable[0]
        lo, hi = (float(zs[j - 1]) if j > 0 else lo), float(zs[j])
    return lo


def test_stability_intervals():
    ab = {k: _stability_interval(jd.PLMS(k), 2.2) for k in (2, 4)}
    # Adams-Bashforth real stability intervals: AB2 [-1, 0], AB4 [-0.3, 0].
    assert abs(ab[2] - 1.0) < 1e-3 and abs(ab[4] - 0.3) < 1e-3
    for k in (2, 4):
        for beta in (0.8, 0.5):
            hb = _stability_interval(jd.HeavyBall(jd.PLMS(k), beta), 3.2)
            assert abs(hb / ab[k] - (2 - beta) / beta) < 2e-3, (k, beta, hb)
    # GHVB buys much less (research note table 4.2): AB4 0.300 -> 0.353 at beta 0.8
    assert abs(_stability_interval(jd.GHVB(4, 0.8), 0.6) - 0.353) < 2e-3


ALL_SAMPLERS = [
    jd.DDIM(),
    jd.DPMSolverPP(),
    jd.PLMS(4),
    jd.HeavyBall(jd.PLMS(4), 0.8),
    jd.HeavyBall(jd.DPMSolverPP(), 0.8),
    jd.Nesterov(jd.PLMS(4), 0.8),
    jd.GHVB(4, 0.8),
    jd.GHVB(2, 0.5),
]
ALL_IDS = [
    "ddim",
    "dpm2m",
    "plms4",
    "hb-plms4",
    "hb-dpm",
    "nt-plms4",
    "ghvb3.8",
    "ghvb1.5",
]


@pytest.fixture(scope="module")
def guided_reference():
    return GM.reference(X_T, SCHED, label=LABELS, guidance_scale=3.0)


@pytest.mark.parametrize("sampler", ALL_SAMPLERS, ids=ALL_IDS)
def test_converges_to_reference(sampler, guided_reference):
    errs = [_err(_run(sampler, X_T, 3.0, n)[0], guided_reference) for n in (20, 80)]
    assert errs[1] < errs[0]
    assert errs[1] < 2e-2, errs


# --- the driver's contract -----------------------------------------------------------


def test_jit_no_retrace_on_guidance_and_beta():
    traces = []

    @eqx.filter_jit
    def f(w, beta):
        traces.append(1)
        return jd.sample(
            COND,
            X_T,
            SCHED,
            jd.GHVB(3, beta),
            6,
            guidance=jd.Guidance(UNCOND, w),
        ).value

    a = f(jnp.array(7.5), jnp.array(0.8))
    b = f(jnp.array(15.0), jnp.array(0.5))
    assert len(traces) == 1
    assert not np.allclose(a, b)
    eager = jd.sample(
        COND, X_T, SCHED, jd.GHVB(3, 0.5), 6, guidance=jd.Guidance(UNCOND, 15.0)
    ).value
    np.testing.assert_allclose(b, eager, rtol=1e-12)


def test_vmap_over_seeds_equals_loop():
    keys = jax.random.split(jax.random.key(7), 3)
    xs = jax.vmap(lambda k: jax.random.normal(k, (8, 2)))(keys)
    sampler = jd.HeavyBall(jd.DPMSolverPP(), 0.8)

    def one(x):
        sol = jd.sample(COND, x, SCHED, sampler, 6, throw=False)
        return sol.value, sol.result, sol.stats["diverged"]

    vals, results, div = jax.vmap(one)(xs)
    for i in range(3):
        v, r, d = one(xs[i])
        np.testing.assert_allclose(vals[i], v, rtol=1e-12)
        assert bool((results == r)[i]) and np.array_equal(div[i], d)


def test_grad_wrt_model_parameters():
    def loss(means):
        gm = jd.GaussianMixture(means, GM.stds, None, GM.classes)
        sol = jd.sample(
            gm.model(SCHED, LABELS),
            X_T,
            SCHED,
            jd.GHVB(3, 0.8),
            6,
            guidance=jd.Guidance(gm.model(SCHED), 2.0),
        )
        return jnp.sum(sol.value**2)

    direction = jax.random.normal(jax.random.key(0), GM.means.shape)
    g = jax.grad(loss)(GM.means)
    fd = finite_difference_jvp(loss, (GM.means,), (direction,))
    np.testing.assert_allclose(jnp.vdot(g, direction), fd, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtypes(dtype):
    sol = jd.sample(COND, X_T.astype(dtype), SCHED, jd.DPMSolverPP(), 5)
    assert sol.value.dtype == dtype


def test_prediction_types_agree():
    # x0- and v-prediction of the same exact model give the eps-model's sample.
    def x0_model(x, t):
        return GM.denoise(x, SCHED.alpha(t), SCHED.sigma(t), LABELS)

    def v_model(x, t):
        a, s = SCHED.alpha(t), SCHED.sigma(t)
        e = GM.eps(x, a, s, LABELS)
        return a * e - s * (x - s * e) / a

    base = jd.sample(COND, X_T, SCHED, jd.DDIM(), 6).value
    for model, pred in ((x0_model, "x0"), (v_model, "v")):
        val = jd.sample(model, X_T, SCHED, jd.DDIM(), 6, prediction=pred).value
        np.testing.assert_allclose(val, base, rtol=1e-9, atol=1e-9)


def test_pndm_start_is_a_heun_first_step():
    # PLMS(1, start="pndm"): Heun's step, then Euler (DDIM) steps; 1 extra NFE.
    grid = jd.timesteps(SCHED, 3, "uniform")
    sol = jd.sample(COND, X_T, SCHED, jd.PLMS(1, start="pndm"), 3)
    assert int(sol.stats["num_model_evaluations"]) == 4

    def ddim(x, t, tn, e):
        a, s, an, sn = SCHED.alpha(t), SCHED.sigma(t), SCHED.alpha(tn), SCHED.sigma(tn)
        return an * (x - s * e) / a + sn * e

    e0 = COND(X_T, grid[0])
    pred = ddim(X_T, grid[0], grid[1], e0)
    x = ddim(X_T, grid[0], grid[1], 0.5 * (e0 + COND(pred, grid[1])))
    for i in (1, 2):
        x = ddim(x, grid[i], grid[i + 1], COND(x, grid[i]))
    np.testing.assert_allclose(sol.value, x, rtol=1e-12)


def test_divergence_reported_per_sample():
    gm = jd.GaussianMixture.example(dim=64)
    x = jax.random.normal(jax.random.key(1), (64, 64))
    lab = jnp.arange(64) % 2
    kwargs = dict(
        guidance=jd.Guidance(gm.model(SCHED), 15.0), time_grid="logsnr", throw=False
    )
    bad = jd.sample(gm.model(SCHED, lab), x, SCHED, jd.PLMS(4), 8, **kwargs)
    good = jd.sample(
        gm.model(SCHED, lab), x, SCHED, jd.HeavyBall(jd.PLMS(4), 0.5), 8, **kwargs
    )
    assert bad.stats["diverged"].shape == (64,)
    # PLMS4 on the log-SNR grid at 8 NFE, w = 15 blows up (research note 4.3) ...
    assert int(bad.stats["num_diverged"]) > 32
    big = bad.stats["max_abs"] > 3 * jnp.maximum(1.0, jnp.max(jnp.abs(x), axis=1))
    np.testing.assert_array_equal(bad.stats["diverged"], big)
    # ... heavy ball with beta = 0.5 does not.
    assert int(good.stats["num_diverged"]) == 0


def test_progress_meter(capfd):
    jd.sample(COND, X_T, SCHED, jd.DDIM(), 4, progress_meter=js.TextProgressMeter())
    jax.effects_barrier()
    assert "100.00%" in capfd.readouterr().out


# --- bad input -----------------------------------------------------------------------


def test_bad_static_input():
    with pytest.raises(ValueError, match="num_steps"):
        jd.sample(COND, X_T, SCHED, jd.DDIM(), 0)
    for beta in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"beta.*\(0, 1\]"):
            jd.HeavyBall(jd.PLMS(4), beta)
        with pytest.raises(ValueError, match=r"beta.*\(0, 1\]"):
            jd.GHVB(3, beta)
    with pytest.raises(ValueError, match="order"):
        jd.PLMS(5)
    with pytest.raises(ValueError, match="order"):
        jd.GHVB(0, 0.5)
    with pytest.raises(ValueError, match="order"):
        jd.DPMSolverPP(order=3)
    with pytest.raises(ValueError, match="order number"):
        jd.GHVB.from_order_number(4.5)
    with pytest.raises(ValueError, match="strictly decreasing"):
        jd.sample(
            COND, X_T, SCHED, jd.DDIM(), 3, time_grid=jnp.array([1.0, 0.2, 0.5, 0.001])
        )
    with pytest.raises(ValueError, match="shape"):
        jd.sample(
            COND, X_T, SCHED, jd.DDIM(), 3, time_grid=jnp.array([1.0, 0.5, 0.001])
        )
    with pytest.raises(ValueError, match="time_grid"):
        jd.sample(COND, X_T, SCHED, jd.DDIM(), 3, time_grid="karras")
    with pytest.raises(ValueError, match="returned shape"):
        jd.sample(lambda x, t: x[:, :1], X_T, SCHED, jd.DDIM(), 3)
    with pytest.raises(ValueError, match="leading sample axis"):
        jd.sample(COND, X_T[0], SCHED, jd.DDIM(), 3)
    with pytest.raises(ValueError, match="prediction"):
        jd.sample(COND, X_T, SCHED, jd.DDIM(), 3, prediction="score")
    with pytest.raises(ValueError, match="wraps"):
        jd.HeavyBall(jd.GHVB(2, 0.5), 0.5)
    with pytest.raises(ValueError, match="start"):
        jd.HeavyBall(jd.PLMS(4, start="pndm"), 0.5)
    with pytest.raises(ValueError, match="not classes"):
        GM.model(SCHED, 5)


def test_order_number():
    g = jd.GHVB.from_order_number(3.8)
    assert g.order == 4 and abs(float(g.beta) - 0.8) < 1e-12
    assert jd.GHVB.from_order_number(4).order == 4
    assert float(jd.GHVB.from_order_number(1.5).beta) == 0.5
    assert abs(g.order_number - 3.8) < 1e-12


def test_nonfinite_model_and_input():
    nan_model = lambda x, t: x * jnp.nan
    sol = jd.sample(nan_model, X_T, SCHED, jd.DDIM(), 3, throw=False)
    assert sol.result == js.RESULTS.nonfinite
    assert bool(jnp.all(sol.stats["diverged"]))
    with pytest.raises(Exception, match="NaN or Inf"):
        jd.sample(nan_model, X_T, SCHED, jd.DDIM(), 3).value.block_until_ready()
    sol = jd.sample(COND, X_T.at[0, 0].set(jnp.nan), SCHED, jd.DDIM(), 3, throw=False)
    assert sol.result == js.RESULTS.nonfinite_input
