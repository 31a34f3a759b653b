"""Light Schrödinger Bridge: correctness against closed forms and quadrature, the
solver contract, bad input, save/load."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsolve as js
import jaxsolve.bridge as jb

from .helpers import finite_difference_jvp


def _random_model(key, dim, k, eps, covariance="diagonal", dtype=jnp.float64):
    """A model with non-trivial random parameters."""
    ka, kr, ks, ko = jax.random.split(key, 4)
    model = jb.LightSB(dim, k, eps, key=kr, covariance=covariance, dtype=dtype)
    log_alpha = jax.random.normal(ka, (k,), dtype)
    log_s = 0.5 * jax.random.normal(ks, (k, dim), dtype)
    model = eqx.tree_at(
        lambda m: (m.log_alpha_raw, m.log_s),
        model,
        (log_alpha * model.epsilon, log_s),
    )
    if covariance == "full":
        off = 0.3 * jax.random.normal(ko, (k, dim, dim), dtype)
        model = eqx.tree_at(lambda m: m.offdiag, model, off)
    return model


def _dense_scales(model):
    s = model.scales()
    return jax.vmap(jnp.diag)(s) if s.ndim == 2 else s


@pytest.fixture(scope="module")
def bench2():
    return jb.eot_benchmark(jax.random.key(0), 2, 0.1, num_variance_samples=20_000)


# ------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("eps", [0.1, 1.0, 10.0])
def test_true_potential_reproduces_exact_conditional(eps):
    bench = jb.eot_benchmark(
        jax.random.key(1), 3, eps, n_potential_components=4, num_variance_samples=1000
    )
    model = bench.true_potential()
    assert model.covariance == "full" and model.n_components == 4
    x = bench.sample_source(jax.random.key(2), 50)
    m_true, c_true = jb.mixture_moments(bench.conditional(x))
    m_model, c_model = jb.mixture_moments(model.conditional(x))
    np.testing.assert_allclose(m_model, m_true, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(c_model, c_true, rtol=1e-9, atol=1e-10)
    # Component weights too (they are the same mixture, component by component).
    np.testing.assert_allclose(
        model.conditional(x).weights, bench.conditional(x).weights, atol=1e-10
    )
    assert float(jb.cbw2_uvp(model, bench, jax.random.key(3), num_test=100)) < 1e-8


def test_log_potential_and_normaliser_by_quadrature():
    # 1-D: log v from the mixture density written out, log C by a fine trapezoid
    # rule of exp(x y / eps) v(y) — independent of the model's closed form.
    eps = 0.5
    model = _random_model(jax.random.key(4), 1, 3, eps)
    alpha = np.exp(np.asarray(model.log_alpha))
    r = np.asarray(model.means)[:, 0]
    var = eps * np.asarray(model.scales())[:, 0]
    ys = np.linspace(-40, 40, 400_001)
    dens = (
        alpha * np.exp(-0.5 * (ys[:, None] - r) ** 2 / var) / np.sqrt(2 * np.pi * var)
    ).sum(1)
    np.testing.assert_allclose(
        model.log_potential(jnp.asarray(ys[150_000:250_001:4000, None])),
        np.log(dens[150_000:250_001:4000]),
        rtol=1e-10,
    )
    for x in (-1.3, 0.0, 0.7):
        integral = np.trapezoid(np.exp(x * ys / eps) * dens, ys)
        np.testing.assert_allclose(
            model.log_normaliser(jnp.array([x])), np.log(integral), rtol=1e-8
        )


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_fast_loss_kernels_match_direct_forms(covariance):
    model = _random_model(jax.random.key(5), 4, 6, 0.3, covariance)
    x = jax.random.normal(jax.random.key(6), (30, 4))
    np.testing.assert_allclose(
        model._log_potential_gemm(x), model.log_potential(x), rtol=1e-10
    )
    np.testing.assert_allclose(
        model._log_normaliser_gemm(x), model.log_normaliser(x), rtol=1e-10
    )
    # Conditional = exp(<x,y>/eps) v(y) / C(x), checked pointwise.
    y = jax.random.normal(jax.random.key(7), (30, 4))
    mix = model.conditional(x)
    cov = mix.covariances
    if covariance == "diagonal":
        cov = jnp.vectorize(jnp.diag, signature="(d)->(d,d)")(cov)
    logpdf = jax.vmap(
        lambda yy, w, m, c: jax.nn.logsumexp(
            jnp.log(w) + jax.scipy.stats.multivariate_normal.logpdf(yy[None], m, c)
        )
    )(y, mix.weights, mix.means, cov)
    expected = (
        jnp.sum(x * y, -1) / 0.3 + model.log_potential(y) - model.log_normaliser(x)
    )
    np.testing.assert_allclose(logpdf, expected, rtol=1e-9, atol=1e-9)


def test_gaussian_to_gaussian_matches_closed_form_plan():
    """K = 1, full S: the closed-form entropic OT plan between two Gaussians
    minimises LightSB's exact population loss."""
    d, eps = 3, 0.7
    k1, k2, k3, k4 = jax.random.split(jax.random.key(8), 4)
    q1 = jnp.linalg.qr(jax.random.normal(k1, (d, d)))[0]
    q2 = jnp.linalg.qr(jax.random.normal(k2, (d, d)))[0]
    a = (q1 * jnp.array([[0.5, 1.0, 2.0]])) @ q1.T
    b = (q2 * jnp.array([[0.3, 1.5, 0.8]])) @ q2.T
    m0, m1 = jax.random.normal(k3, (d,)), jax.random.normal(k4, (d,))
    plan = jb.GaussianEOT(m0, a, m1, b, jnp.asarray(eps))
    # The plan's defining property: the joint precision's off-diagonal block is
    # -I/eps (density proportional to exp(x.y/eps) a(x) b(y)), marginals A and B.
    c = plan.cross_covariance()
    joint = jnp.block([[a, c], [c.T, b]])
    prec = jnp.linalg.inv(joint)
    np.testing.assert_allclose(prec[:d, d:], -jnp.eye(d) / eps, atol=1e-10)

    # Exact population loss of a K=1 model: log C and log v are quadratic, so
    # E f(z) = f(m) + tr(Hess f . Cov) / 2.
    def population_loss(model):
        def expect(f, mean, cov):
            return f(mean) + 0.5 * jnp.sum(jax.hessian(f)(mean) * cov)

        return expect(model.log_normaliser, m0, a) - expect(model.log_potential, m1, b)

    # The exact plan as a K=1 full model is a stationary point of the exact
    # population loss (all parameters, weights included)...
    exact = plan.as_lightsb()
    diff, static = jb._fit._trainable(exact)
    loss = lambda p: population_loss(eqx.combine(p, static))
    grad = jax.grad(loss)(diff)
    for g in jax.tree_util.tree_leaves(grad):
        np.testing.assert_allclose(g, 0.0, atol=1e-10)
    # ...and the minimiser: the loss is larger at perturbed parameters (the
    # gradient there is not zero: the check above is not vacuous).
    for k in range(3):
        bumped = jax.tree_util.tree_map(
            lambda p: p + 0.05 * jax.random.normal(jax.random.key(100 + k), p.shape),
            diff,
        )
        assert loss(bumped) > loss(diff)
        g = jax.grad(loss)(bumped)
        assert max(float(jnp.abs(x).max()) for x in jax.tree_util.tree_leaves(g)) > 1e-3
    fitted = exact
    x = jax.random.normal(jax.random.key(10), (5, d))
    m_fit, c_fit = jb.mixture_moments(fitted.conditional(x))
    m_ex, c_ex = jb.mixture_moments(plan.conditional(x))
    np.testing.assert_allclose(m_fit, m_ex, atol=1e-6)
    np.testing.assert_allclose(c_fit, c_ex, atol=1e-6)
    # ...and the conditional covariance is B - C^T A^{-1} C.
    np.testing.assert_allclose(
        c_ex[0], b - c.T @ jnp.linalg.solve(a, c), rtol=1e-10, atol=1e-12
    )


# ------------------------------------------------------------------ bridge and SDE
def test_bridge_marginal_moments():
    model = _random_model(jax.random.key(11), 2, 3, 0.2)
    x0 = jnp.array([0.4, -0.3])
    xs = jnp.broadcast_to(x0, (40_000, 2))
    mean_y, cov_y = jb.mixture_moments(model.conditional(x0))
    for t in (0.0, 0.3, 0.8, 1.0):
        xt = model.bridge_sample(jax.random.key(12), xs, t)
        mean = (1 - t) * x0 + t * mean_y
        cov = t**2 * cov_y + 0.2 * t * (1 - t) * jnp.eye(2)
        stderr = jnp.sqrt(jnp.diag(cov) / xs.shape[0])
        assert jnp.all(jnp.abs(xt.mean(0) - mean) < 5 * stderr + 1e-12)
        np.testing.assert_allclose(jnp.cov(xt.T), cov, rtol=0.05, atol=1e-3)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_drift_is_eps_grad_log_h(covariance):
    """The closed-form drift against eps * grad log h(t, x), h written as a dense
    Gaussian integral (notes: A_k = t/(eps(1-t)) I + (eps S_k)^{-1})."""
    eps = 0.3
    model = _random_model(jax.random.key(13), 3, 4, eps, covariance)
    s = _dense_scales(model)
    r, la = model.means, model.log_alpha
    eye = jnp.eye(3)

    def log_h(x, t):
        es_inv = jnp.linalg.inv(eps * s)
        amat = t / (eps * (1 - t)) * eye[None] + es_inv
        c = x[None] / (eps * (1 - t)) + jnp.einsum("kij,kj->ki", es_inv, r)
        terms = (
            la
            - 0.5 * jnp.linalg.slogdet(eps * s)[1]
            - 0.5 * jnp.linalg.slogdet(amat)[1]
            - 0.5 * jnp.einsum("ki,kij,kj->k", r, es_inv, r)
            + 0.5
            * jnp.einsum("ki,ki->k", c, jnp.linalg.solve(amat, c[..., None])[..., 0])
        )
        return jax.nn.logsumexp(terms) - x @ x / (2 * eps * (1 - t))

    xs = jax.random.normal(jax.random.key(14), (6, 3))
    for t in (0.0, 0.35, 0.9):
        ref = eps * jax.vmap(jax.grad(log_h), in_axes=(0, None))(xs, jnp.asarray(t))
        np.testing.assert_allclose(model.drift(t, xs), ref, rtol=1e-8, atol=1e-10)
    # t = 0: E[y|x] - x; t = 1: finite.
    np.testing.assert_allclose(
        model.drift(0.0, xs),
        jb.mixture_moments(model.conditional(xs))[0] - xs,
        rtol=1e-10,
    )
    assert jnp.all(jnp.isfinite(model.drift(1.0, xs)))


def test_sde_reproduces_conditional_moments():
    eps = 0.2
    model = _random_model(jax.random.key(15), 2, 3, eps)
    x0 = jnp.array([0.5, -0.2])
    xs = jnp.broadcast_to(x0, (2000, 2))
    mean, cov = jb.mixture_moments(model.conditional(x0))
    traj = jax.jit(lambda k, ts: model.trajectory(k, xs, ts))
    errors = []
    for n in (4, 40):
        ts = jnp.linspace(0.0, 1.0, n + 1)
        path = traj(jax.random.key(16), ts)
        assert path.shape == (2000, n + 1, 2)
        np.testing.assert_array_equal(path[:, 0], xs)
        y = path[:, -1]
        errors.append(
            float(jnp.linalg.norm(y.mean(0) - mean))
            + float(jnp.linalg.norm(jnp.cov(y.T) - cov))
        )
    stderr = float(jnp.sqrt(jnp.trace(cov) / 2000))
    assert errors[1] < 0.5 * errors[0]
    assert errors[1] < 4 * stderr + 0.02


# ------------------------------------------------------------------ fitting
def test_fit_d2_reaches_small_cbw_uvp(bench2):
    model = jb.LightSB(2, 50, bench2.epsilon, key=jax.random.key(17))
    fitted, losses = jb.fit(
        model,
        bench2.sample_source,
        bench2.sample_target,
        jax.random.key(18),
        steps=3000,
    )
    assert losses.shape == (3000,) and jnp.all(jnp.isfinite(losses))
    assert losses[-300:].mean() < losses[:30].mean()
    uvp = float(jb.cbw2_uvp(fitted, bench2, jax.random.key(19), num_test=300))
    assert uvp < 2.0, uvp
    # The sampled (paper protocol) variant agrees with the closed form roughly.
    mc = float(
        jb.cbw2_uvp(fitted, bench2, jax.random.key(19), num_test=100, num_samples=2000)
    )
    assert mc < 3.0


def test_fit_full_covariance_gaussian():
    """K = 1 full-S fit from samples approaches the closed-form Gaussian plan."""
    eps = 0.5
    a = jnp.array([[1.0, 0.6], [0.6, 1.0]])
    b = jnp.array([[0.5, -0.2], [-0.2, 0.8]])
    la, lb = jnp.linalg.cholesky(a), jnp.linalg.cholesky(b)
    m1 = jnp.array([1.0, -1.0])
    xs = lambda k, n: jax.random.normal(k, (n, 2)) @ la.T
    ys = lambda k, n: m1[None] + jax.random.normal(k, (n, 2)) @ lb.T
    model = jb.LightSB(2, 1, eps, key=jax.random.key(21), covariance="full")
    fitted, _ = jb.fit(
        model, xs, ys, jax.random.key(22), steps=3000, optimizer=optax.adam(1e-2)
    )
    exact = jb.GaussianEOT(jnp.zeros(2), a, m1, b, jnp.asarray(eps)).as_lightsb()
    np.testing.assert_allclose(fitted.scales(), exact.scales(), atol=0.08)
    np.testing.assert_allclose(fitted.means, exact.means, atol=0.08)


def test_fit_nonfinite_loss_names_the_step():
    def nan_after_5():
        def init(params):
            return jnp.zeros((), jnp.int32)

        def update(updates, count, params=None):
            bad = jnp.where(count >= 5, jnp.nan, 0.0)
            return jax.tree_util.tree_map(lambda u: u * 0.0 + bad, updates), count + 1

        return optax.GradientTransformation(init, update)

    opt = nan_after_5()
    x = jax.random.normal(jax.random.key(23), (100, 2))
    model = jb.LightSB(2, 3, 1.0, key=jax.random.key(24))
    with pytest.raises(RuntimeError, match="non-finite at step 5 of 20"):
        jb.fit(model, x, x + 1.0, jax.random.key(25), steps=20, optimizer=opt)
    fitted, losses = jb.fit(
        model, x, x + 1.0, jax.random.key(25), steps=20, optimizer=opt, throw=False
    )
    assert jnp.all(jnp.isfinite(losses[:6])) and jnp.all(jnp.isnan(losses[6:]))
    assert not js._core.any_nonfinite(fitted)
    # Under an outer jit the error is raised at run time.
    jitted = eqx.filter_jit(
        lambda m, x: jb.fit(m, x, x + 1.0, jax.random.key(25), steps=20, optimizer=opt)
    )
    with pytest.raises(Exception, match="non-finite"):
        jax.block_until_ready(jitted(model, x))


# ------------------------------------------------------------------ contract
def test_jit_no_retrace_for_new_epsilon_and_values():
    traces = []

    def counting_adam():
        base = optax.adam(1e-2)

        def update(u, s, p=None):
            traces.append(1)
            return base.update(u, s, p)

        return optax.GradientTransformation(base.init, update)

    opt = counting_adam()
    x = jax.random.normal(jax.random.key(26), (64, 2))
    for eps in (0.1, 1.0, 10.0):
        model = jb.LightSB(2, 3, eps, key=jax.random.key(27))
        jb.fit(model, x, x * 0.5, jax.random.key(28), steps=5, optimizer=opt)
    assert len(traces) == 1

    calls = []

    @eqx.filter_jit
    def methods(m, x, t):
        calls.append(1)
        return (
            m.conditional(x),
            m.sample(jax.random.key(0), x),
            m.bridge_sample(jax.random.key(1), x, t),
            m.drift(t, x),
        )

    for eps, t in ((0.1, 0.2), (3.0, 0.7)):
        model = _random_model(jax.random.key(29), 2, 3, eps)
        out = methods(model, x, jnp.asarray(t))
        eager = (
            model.conditional(x),
            model.sample(jax.random.key(0), x),
            model.bridge_sample(jax.random.key(1), x, t),
            model.drift(t, x),
        )
        for a, b in zip(
            jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(eager)
        ):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert len(calls) == 1


def test_vmap_equals_loop():
    model = _random_model(jax.random.key(30), 2, 3, 0.4)
    xs = jax.random.normal(jax.random.key(31), (5, 2))
    keys = jax.random.split(jax.random.key(32), 5)
    batched = jax.vmap(lambda k, x: model.sample(k, x))(keys, xs)
    loop = jnp.stack([model.sample(k, x) for k, x in zip(keys, xs)])
    np.testing.assert_allclose(batched, loop, rtol=1e-12)
    # Leading batch axes: same as per-point calls.
    mix = model.conditional(xs)
    for i in range(5):
        one = model.conditional(xs[i])
        np.testing.assert_allclose(mix.weights[i], one.weights, rtol=1e-12)
        np.testing.assert_allclose(model.drift(0.4, xs)[i], model.drift(0.4, xs[i]))
    # fit per lane.
    data = jax.random.normal(jax.random.key(33), (64, 2))
    fit = lambda k: jb.fit(model, data, data + 1.0, k, steps=10, batch_size=16)
    fkeys = jax.random.split(jax.random.key(34), 3)
    bm, bl = jax.vmap(fit)(fkeys)
    for i, k in enumerate(fkeys):
        m, losses = fit(k)
        np.testing.assert_allclose(bl[i], losses, rtol=1e-10)
        np.testing.assert_allclose(bm.means[i], m.means, rtol=1e-10)


def test_grad_through_sample_matches_finite_differences():
    model = _random_model(jax.random.key(35), 2, 3, 0.5)
    x = jax.random.normal(jax.random.key(36), (20, 2))
    key = jax.random.key(37)

    def f(means, log_s, x):
        m = eqx.tree_at(lambda m: (m.means, m.log_s), model, (means, log_s))
        return jnp.sum(jnp.sin(m.sample(key, x, num_samples=3)))

    primals = (model.means, model.log_s, x)
    tangents = tuple(
        jax.random.normal(k, p.shape) for k, p in zip(jax.random.split(key, 3), primals)
    )
    _, jvp = jax.jvp(f, primals, tangents)
    fd = finite_difference_jvp(f, primals, tangents)
    np.testing.assert_allclose(jvp, fd, rtol=1e-6)
    grads = jax.grad(f, argnums=(0, 1, 2))(*primals)
    np.testing.assert_allclose(
        sum(jnp.sum(g * t) for g, t in zip(grads, tangents)), jvp, rtol=1e-10
    )
    # The loss is differentiable in every parameter, epsilon included.
    g = jax.grad(lambda m: jb.lightsb_loss(m, x, x + 1.0))(model)
    assert all(jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(g))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtypes(dtype):
    model = _random_model(jax.random.key(38), 2, 3, 0.5, dtype=dtype)
    x = jnp.ones((4, 2), dtype)
    for out in (
        model.log_potential(x),
        model.log_normaliser(x),
        *model.conditional(x),
        model.sample(jax.random.key(0), x),
        model.bridge_sample(jax.random.key(0), x, 0.5),
        model.drift(0.5, x),
        model.trajectory(jax.random.key(0), x, jnp.linspace(0, 1, 3, dtype=dtype)),
    ):
        assert out.dtype == dtype
    fitted, losses = jb.fit(model, x, x, jax.random.key(1), steps=3, batch_size=4)
    assert losses.dtype == dtype and fitted.means.dtype == dtype
    other = jnp.float64 if dtype == jnp.float32 else jnp.float32
    with pytest.raises(ValueError, match="dtype"):
        model.sample(jax.random.key(0), x.astype(other))
    with pytest.raises(ValueError, match="dtype"):
        jb.fit(model, x.astype(other), x, jax.random.key(1), steps=3)
    assert model.astype(other).means.dtype == other


def test_explicit_keys_determinism():
    model = _random_model(jax.random.key(39), 2, 3, 0.5)
    x = jnp.ones((4, 2))
    a = model.sample(jax.random.key(5), x)
    np.testing.assert_array_equal(a, model.sample(jax.random.key(5), x))
    assert not np.allclose(a, model.sample(jax.random.key(6), x))


# ------------------------------------------------------------------ bad input
def test_bad_input():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="epsilon"):
        jb.LightSB(2, 3, 0.0, key=key)
    with pytest.raises(ValueError, match="epsilon"):
        jb.LightSB(2, 3, -1.0, key=key)
    with pytest.raises(ValueError, match="n_components"):
        jb.LightSB(2, 0, 1.0, key=key)
    with pytest.raises(ValueError, match="covariance"):
        jb.LightSB(2, 3, 1.0, key=key, covariance="dense")
    with pytest.raises(ValueError, match="eps"):
        jb.eot_benchmark(key, 2, 0.0)
    model = jb.LightSB(2, 3, 1.0, key=key)
    x = jnp.ones((10, 2))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        model.sample(key, jnp.ones((10, 3)))
    with pytest.raises(ValueError, match=r"x_data.*\(N, 2\)"):
        jb.fit(model, jnp.ones((10, 3)), x, key, steps=2)
    with pytest.raises(ValueError, match="y_data.*NaN"):
        jb.fit(model, x, x.at[3, 1].set(jnp.nan), key, steps=2)
    with pytest.raises(ValueError, match=r"sampler `x_data`.*\(n, 2\)"):
        jb.fit(model, lambda k, n: jnp.ones((n, 5)), x, key, steps=2)
    with pytest.raises(ValueError, match="steps"):
        jb.fit(model, x, x, key, steps=0)
    with pytest.raises(ValueError, match=r"`t` must lie in \[0, 1\]"):
        model.bridge_sample(key, x, 1.5)
    with pytest.raises(ValueError, match=r"`t` must lie in \[0, 1\]"):
        model.drift(-0.1, x)
    with pytest.raises(ValueError, match="strictly increasing"):
        model.trajectory(key, x, jnp.array([0.0, 0.5, 0.4]))
    # Traced t outside [0, 1]: a run-time error, never silent samples.
    with pytest.raises(Exception, match=r"\[0, 1\]"):
        jax.block_until_ready(
            jax.jit(lambda t: model.bridge_sample(key, x, t))(jnp.asarray(2.0))
        )


def test_save_load_round_trip(tmp_path):
    for covariance in ("diagonal", "full"):
        model = _random_model(jax.random.key(40), 3, 4, 0.7, covariance)
        path = js.save(
            tmp_path / f"m_{covariance}.jsv",
            model,
            hyperparameters=model.hyperparameters(),
        )
        hp = js.load_header(path)["hyperparameters"]
        loaded = js.load(path, like=jb.LightSB.from_hyperparameters(hp))
        assert loaded.covariance == covariance
        for a, b in zip(
            jax.tree_util.tree_leaves(model), jax.tree_util.tree_leaves(loaded)
        ):
            np.testing.assert_array_equal(a, b)
        x = jnp.ones((2, 3))
        np.testing.assert_array_equal(
            loaded.sample(jax.random.key(0), x), model.sample(jax.random.key(0), x)
        )
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    bad = tmp_path / "corrupt.jsv"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt.jsv"):
        js.load(bad, like=jb.LightSB.from_hyperparameters(hp))
    with pytest.raises(ValueError, match="hyper-parameters"):
        jb.LightSB.from_hyperparameters({"dim": 3})
