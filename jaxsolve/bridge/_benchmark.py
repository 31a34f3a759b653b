"""Entropic-OT benchmark pairs with a known optimal plan (after Gushchin et al., 2023),
the conditional Bures-Wasserstein UVP metric, and the Gaussian closed-form EOT
baseline."""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._lightsb import _check_positive, LightSB, Mixture, mixture_moments


def _sqrtm(m: Array) -> Array:
    """Square root of symmetric PSD matrices (batched) by eigendecomposition."""
    lam, vec = jnp.linalg.eigh(m)
    lam = jnp.sqrt(jnp.maximum(lam, 0))
    return (vec * lam[..., None, :]) @ jnp.swapaxes(vec, -1, -2)


def _gaussian_logpdf(x: Array, mean: Array, chol: Array) -> Array:
    """log N(x | mean_k, L_k L_k^T) for x (N, D), mean (K, D), Cholesky factors
    chol (K, D, D) -> (N, K)."""
    diff = x[None] - mean[:, None]  # (K, N, D)
    u = jax.scipy.linalg.solve_triangular(chol, jnp.swapaxes(diff, -1, -2), lower=True)
    quad = jnp.sum(u**2, axis=-2)  # (K, N)
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    d = x.shape[-1]
    return (-0.5 * (quad + log_det[:, None] + d * math.log(2 * math.pi))).T


def _sample_mixture(key: PRNGKeyArray, mix: Mixture, chol: Array, n: int) -> Array:
    """n samples of an unconditional mixture with Cholesky factors `chol`."""
    ck, nk = jax.random.split(key)
    comp = jax.random.categorical(ck, jnp.log(mix.weights), shape=(n,))
    noise = jax.random.normal(nk, (n, mix.means.shape[-1]), mix.means.dtype)
    return mix.means[comp] + _select_component(chol, noise, comp)


def _select_component(chol: Array, noise: Array, comp: Array) -> Array:
    """chol[comp[n]] @ noise[n] for every n, without gathering an (n, D, D) array:
    apply every factor (n, K, D) and pick one per row."""
    all_k = jnp.einsum("kij,nj->nki", chol, noise)
    return jnp.take_along_axis(all_k, comp[:, None, None], 1)[:, 0]


def _random_gmm(key, k, d, dtype, mean_range, var_range, diagonal) -> Mixture:
    mk, vk, qk = jax.random.split(key, 3)
    means = jax.random.uniform(mk, (k, d), dtype, -mean_range, mean_range)
    lam = jax.random.uniform(vk, (k, d), dtype, var_range[0], var_range[1])
    if diagonal:
        cov = jax.vmap(jnp.diag)(lam)
    else:
        q, _ = jnp.linalg.qr(jax.random.normal(qk, (k, d, d), dtype))
        cov = (q * lam[:, None, :]) @ jnp.swapaxes(q, -1, -2)
    weights = jnp.full((k,), 1.0 / k, dtype)
    return Mixture(weights, means, cov)


class EOTBenchmark(eqx.Module):
    r"""An entropic-OT pair $(p_0, p_1)$ whose optimal plan is known in closed form.

    For the cost $\tfrac12\|x-y\|^2$ with entropy weight $\varepsilon$, pick a
    Gaussian-mixture source $p_0$ and a positive function
    $\psi = \sum_k p_k \mathcal N(\mu_k, \Sigma_k)$. The plan
    $\pi^\star(x, y) = p_0(x)\,\mathcal N(y\mid x, \varepsilon I)\,\psi(y) / Z(x)$
    factorises as $a(x)\, e^{-\|x-y\|^2/(2\varepsilon)}\, b(y)$, so it *is* the EOT
    plan between $p_0$ and its own $y$-marginal $p_1$ (Gushchin et al., 2023). Its
    conditional is the Gaussian mixture
    $$\pi^\star(y\mid x) = \sum_k w_k(x)\,\mathcal N\big(y \mid C_k(\Sigma_k^{-1}\mu_k
      + x/\varepsilon),\ C_k\big),\quad C_k = (\Sigma_k^{-1} + I/\varepsilon)^{-1},
      \quad w_k(x) \propto p_k\,\mathcal N(x\mid \mu_k, \Sigma_k + \varepsilon I).$$

    Build one with [`jaxsolve.bridge.eot_benchmark`][]. **These instances are drawn
    by our own generator; they are not the paper's downloadable instances** (whose
    parameters are only distributed as files), so figures on them are not
    comparable one-to-one with the paper's tables.

    **Attributes:** `epsilon`, `source` and `potential` (the mixtures $p_0$ and
    $\psi$, full covariances) and `target_variance` (the total variance
    $\operatorname{tr}\operatorname{Cov}(y)$ of $p_1$, estimated once from
    $10^5$ samples; it normalises the UVP metric).
    """

    epsilon: Float[Array, ""]
    source: Mixture
    potential: Mixture
    target_variance: Float[Array, ""]
    # Derived matrices, factorised once at construction (eagerly): XLA:CPU can
    # deadlock when several LAPACK factorisations of 64x64+ matrices run inside one
    # compiled sampler, and factorising per call would be wasted work anyway.
    source_chol: Float[Array, "K0 D D"]
    cond_cov: Float[Array, "K D D"]
    cond_chol: Float[Array, "K D D"]
    cond_base: Float[Array, "K D"]
    weight_chol: Float[Array, "K D D"]

    def __init__(self, epsilon, source, potential, target_variance=None):
        """Usually built by [`jaxsolve.bridge.eot_benchmark`][]: the entropy weight
        and the two mixtures (`Mixture(weights, means, covariances)`, full
        covariances)."""
        self.epsilon = jnp.asarray(epsilon, source.means.dtype)
        self.source = source
        self.potential = potential
        d = source.means.shape[-1]
        eye = jnp.eye(d, dtype=source.means.dtype)
        self.source_chol = jnp.linalg.cholesky(source.covariances)
        prec = jnp.linalg.inv(potential.covariances)
        c = jnp.linalg.inv(prec + eye[None] / self.epsilon)
        self.cond_cov = 0.5 * (c + jnp.swapaxes(c, -1, -2))
        self.cond_chol = jnp.linalg.cholesky(self.cond_cov)
        self.cond_base = jnp.einsum("kij,kj->ki", prec, potential.means)
        self.weight_chol = jnp.linalg.cholesky(
            potential.covariances + self.epsilon * eye[None]
        )
        self.target_variance = (
            jnp.asarray(1.0, self.epsilon.dtype)
            if target_variance is None
            else jnp.asarray(target_variance, self.epsilon.dtype)
        )

    @property
    def dim(self) -> int:
        return self.source.means.shape[-1]

    @property
    def dtype(self) -> Any:
        return self.source.means.dtype

    def sample_source(self, key: PRNGKeyArray, n: int) -> Float[Array, "n D"]:
        """`n` samples of $p_0$."""
        return _sample_mixture(key, self.source, self.source_chol, n)

    def _cond_params(self):
        return self.cond_cov, self.cond_base

    def _weights_means(self, flat: Array) -> tuple[Array, Array]:
        """Component weights (N, K) and means (N, K, D) of pi*(.|x) for x (N, D)
        (the covariances do not depend on x: never broadcast them per point)."""
        c, base = self._cond_params()
        logw = jnp.log(self.potential.weights)[None] + _gaussian_logpdf(
            flat, self.potential.means, self.weight_chol
        )
        w = jax.nn.softmax(logw, axis=-1)
        means = jnp.einsum("kij,nkj->nki", c, base[None] + flat[:, None] / self.epsilon)
        return w, means

    def conditional(self, x: Float[ArrayLike, "*batch D"]) -> Mixture:
        r"""The exact conditional plan $\pi^\star(\cdot\mid x)$ (full covariances)."""
        x = jnp.asarray(x, self.dtype)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"`x` must have shape (..., {self.dim}), got {x.shape}.")
        batch = x.shape[:-1]
        flat = x.reshape(-1, self.dim)
        c, _ = self._cond_params()
        w, means = self._weights_means(flat)
        k = c.shape[0]
        covs = jnp.broadcast_to(c[None], (flat.shape[0],) + c.shape)
        return Mixture(
            w.reshape(batch + (k,)),
            means.reshape(batch + (k, self.dim)),
            covs.reshape(batch + c.shape),
        )

    def sample_conditional(
        self, key: PRNGKeyArray, x: Float[ArrayLike, "*batch D"]
    ) -> Float[Array, "*batch D"]:
        r"""One draw $y \sim \pi^\star(\cdot\mid x)$ per point."""
        x = jnp.asarray(x, self.dtype)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"`x` must have shape (..., {self.dim}), got {x.shape}.")
        flat_w, means = self._weights_means(x.reshape(-1, self.dim))
        ck, nk = jax.random.split(key)
        comp = jax.random.categorical(ck, jnp.log(flat_w), axis=-1)
        chol = self.cond_chol
        noise = jax.random.normal(nk, (flat_w.shape[0], self.dim), self.dtype)
        y = jnp.take_along_axis(means, comp[:, None, None], 1)[:, 0] + (
            _select_component(chol, noise, comp)
        )
        return y.reshape(x.shape)

    def sample_plan(
        self, key: PRNGKeyArray, n: int
    ) -> tuple[Float[Array, "n D"], Float[Array, "n D"]]:
        r"""`n` pairs $(x, y) \sim \pi^\star$."""
        xk, yk = jax.random.split(key)
        x = self.sample_source(xk, n)
        return x, self.sample_conditional(yk, x)

    def sample_target(self, key: PRNGKeyArray, n: int) -> Float[Array, "n D"]:
        """`n` samples of $p_1$ (the $y$-marginal of the plan)."""
        return self.sample_plan(key, n)[1]

    def true_potential(self) -> LightSB:
        r"""The exact LightSB potential of this instance (full covariances):
        $v^\star(y) = e^{-\|y\|^2/(2\varepsilon)}\psi(y) = \sum_k \alpha_k^\star
        \mathcal N(y\mid r_k^\star, \varepsilon S_k^\star)$ with
        $\varepsilon S_k^\star = C_k$, $r_k^\star = C_k\Sigma_k^{-1}\mu_k$,
        $\alpha^\star_k = p_k\,\mathcal N(0\mid\mu_k, \Sigma_k + \varepsilon I)
        (2\pi\varepsilon)^{D/2}$."""
        c, base = self._cond_params()
        zero = jnp.zeros((1, self.dim), self.dtype)
        log_alpha = (
            jnp.log(self.potential.weights)
            + _gaussian_logpdf(zero, self.potential.means, self.weight_chol)[0]
            + 0.5 * self.dim * jnp.log(2 * jnp.pi * self.epsilon)
        )
        r = jnp.einsum("kij,kj->ki", c, base)
        return LightSB.from_parameters(log_alpha, r, c / self.epsilon, self.epsilon)


@eqx.filter_jit
def _target_variance(bench: EOTBenchmark, key: PRNGKeyArray, n: int) -> Array:
    return jnp.sum(jnp.var(bench.sample_target(key, n), axis=0))


def eot_benchmark(
    key: PRNGKeyArray,
    dim: int,
    eps: float,
    *,
    n_source_components: int = 3,
    n_potential_components: int = 5,
    diagonal: bool = False,
    mean_range: float = 2.0,
    variance_range: tuple[float, float] = (0.1, 1.0),
    dtype: Any = None,
    num_variance_samples: int = 100_000,
) -> EOTBenchmark:
    r"""A random entropic-OT benchmark instance with known optimal plan
    ([`jaxsolve.bridge.EOTBenchmark`][]).

    Both $p_0$ and $\psi$ are equal-weight Gaussian mixtures
    (`n_source_components`, `n_potential_components` components) with means
    uniform in $[-m, m]^D$ (`mean_range` $= m$) and covariances
    $Q\operatorname{diag}(\lambda)Q^\top$, $\lambda$ uniform in `variance_range`, $Q$
    a random rotation (`diagonal=True`: $Q = I$, which makes a diagonal LightSB
    well-specified). After Gushchin et al. (2023); our instances, not theirs.
    The target variance (the UVP normaliser) is estimated from
    `num_variance_samples` samples.

    ??? cite "References"

        ```bibtex
        @inproceedings{gushchin2023building,
          title={Building the Bridge of {S}chr{\"o}dinger: A Continuous Entropic
                 Optimal Transport Benchmark},
          author={Gushchin, Nikita and Kolesov, Alexander and Mokrov, Petr and
                  Karpikova, Polina and Spiridonov, Andrey and Burnaev, Evgeny and
                  Korotin, Alexander},
          booktitle={NeurIPS Datasets and Benchmarks Track},
          year={2023}
        }
        ```

    !!! example

        ```python
        import jax, jaxsolve as js
        bench = js.bridge.eot_benchmark(jax.random.key(0), 2, 0.1)
        x, y = bench.sample_plan(jax.random.key(1), 1000)
        uvp = js.bridge.cbw2_uvp(bench.true_potential(), bench, jax.random.key(2))
        ```
    """
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"`dim` must be a positive integer, got {dim!r}.")
    for name, k in (
        ("n_source_components", n_source_components),
        ("n_potential_components", n_potential_components),
    ):
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {k!r}.")
    _check_positive(eps, "eps", "Use e.g. eps=0.1.")
    _check_positive(mean_range, "mean_range", "Use e.g. mean_range=2.0.")
    lo, hi = variance_range
    if not 0 < lo <= hi:
        raise ValueError(
            f"`variance_range` must satisfy 0 < low <= high, got {variance_range}."
        )
    dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
    sk, pk, vk = jax.random.split(key, 3)
    bench = EOTBenchmark(
        epsilon=jnp.asarray(eps, dtype),
        source=_random_gmm(
            sk, n_source_components, dim, dtype, mean_range, (lo, hi), diagonal
        ),
        potential=_random_gmm(
            pk, n_potential_components, dim, dtype, mean_range, (lo, hi), diagonal
        ),
        target_variance=jnp.asarray(1.0, dtype),
    )
    variance = _target_variance(bench, vk, int(num_variance_samples))
    return eqx.tree_at(lambda b: b.target_variance, bench, variance)


def bures_wasserstein(
    mean1: Float[Array, "*batch D"],
    cov1: Float[Array, "*batch D D"],
    mean2: Float[Array, "*batch D"],
    cov2: Float[Array, "*batch D D"],
) -> Float[Array, "*batch"]:
    r"""The squared 2-Wasserstein distance between Gaussians,
    $\|m_1 - m_2\|^2 + \operatorname{tr} C_1 + \operatorname{tr} C_2
     - 2\operatorname{tr}(C_1^{1/2} C_2 C_1^{1/2})^{1/2}$."""
    s1 = _sqrtm(cov1)
    cross = jnp.linalg.eigvalsh(s1 @ cov2 @ s1)
    cross = jnp.sum(jnp.sqrt(jnp.maximum(cross, 0)), axis=-1)
    tr = jnp.trace(cov1, axis1=-2, axis2=-1) + jnp.trace(cov2, axis1=-2, axis2=-1)
    return jnp.maximum(jnp.sum((mean1 - mean2) ** 2, axis=-1) + tr - 2 * cross, 0)


ConditionalModel = Any  # anything with .conditional(x) -> Mixture, or .sample


def cbw2_uvp(
    model: ConditionalModel | Callable[[Array], tuple[Array, Array]],
    benchmark: EOTBenchmark,
    key: PRNGKeyArray,
    *,
    num_test: int = 1000,
    num_samples: int | None = None,
) -> Float[Array, ""]:
    r"""Conditional Bures-Wasserstein UVP of a fitted plan, in percent:
    $$\text{cBW}_2^2\text{-UVP} = \frac{100}{\operatorname{tr}\operatorname{Cov}(y)}
      \,\mathbb E_{x\sim p_0}\,\mathrm{BW}_2^2\big(\hat\pi(\cdot\mid x),\
      \pi^\star(\cdot\mid x)\big),$$
    where $\mathrm{BW}_2^2$ is the squared 2-Wasserstein distance between the
    Gaussians with the two conditionals' means and covariances (the true ones in
    closed form). The expectation is over `num_test` source samples drawn with
    `key`. (Gushchin et al. use halved $\mathrm{BW}_2^2$ and half the variance:
    the same ratio.)

    `model`: a [`jaxsolve.bridge.LightSB`][] or anything with `conditional(x) ->`
    [`jaxsolve.bridge.Mixture`][] (moments in closed form: no sampling noise), or a
    callable `x -> (means, covariances)` for batches `x` of shape `(n, D)`. With
    `num_samples` the model's moments are instead estimated from that many draws of
    `model.sample(key, x, num_samples)` per test point (the paper's protocol: 1000
    x 1000).
    """
    if not isinstance(num_test, (int, np.integer)) or num_test < 1:
        raise ValueError(f"`num_test` must be a positive integer, got {num_test!r}.")
    tk, sk = jax.random.split(key)
    x = benchmark.sample_source(tk, int(num_test))
    true_mean, true_cov = mixture_moments(benchmark.conditional(x))
    if num_samples is not None:
        ys = model.sample(sk, x, int(num_samples))  # (S, n, D)
        mean = jnp.mean(ys, axis=0)
        dev = ys - mean[None]
        cov = jnp.einsum("sni,snj->nij", dev, dev) / (ys.shape[0] - 1)
    elif hasattr(model, "conditional"):
        mean, cov = mixture_moments(model.conditional(x))
    else:
        mean, cov = model(x)
    bw = bures_wasserstein(mean, cov, true_mean, true_cov)
    return 100 * jnp.mean(bw) / benchmark.target_variance


class GaussianEOT(eqx.Module):
    r"""The closed-form entropic OT plan between two Gaussians
    $\mathcal N(m_0, A)$ and $\mathcal N(m_1, B)$ (cost $\tfrac12\|x-y\|^2$, entropy
    weight $\varepsilon$): the plan is Gaussian with cross-covariance
    $$C = \tfrac12\big(A^{1/2}(4A^{1/2}BA^{1/2} + \varepsilon^2 I)^{1/2}A^{-1/2}
      - \varepsilon I\big),$$
    so $y\mid x \sim \mathcal N(m_1 + C^\top A^{-1}(x - m_0),\ B - C^\top A^{-1}C)$.
    Used as a baseline (fit to sample moments by [`jaxsolve.bridge.gaussian_eot`][])
    and as an exact reference: it is LightSB with $K=1$,
    $S = C^\top A^{-1}$, $r = m_1 - S m_0$ (`as_lightsb()`).

    ??? cite "References"

        Janati, Muzellec, Peyré, Cuturi, *Entropic optimal transport between
        unbalanced Gaussian measures has a closed form*, NeurIPS 2020.
    """

    mean0: Float[Array, " D"]
    cov0: Float[Array, "D D"]
    mean1: Float[Array, " D"]
    cov1: Float[Array, "D D"]
    epsilon: Float[Array, ""]

    def cross_covariance(self) -> Float[Array, "D D"]:
        a_half = _sqrtm(self.cov0)
        a_mhalf = jnp.linalg.inv(a_half)
        d = self.cov0.shape[0]
        eye = jnp.eye(d, dtype=self.cov0.dtype)
        inner = _sqrtm(4 * a_half @ self.cov1 @ a_half + self.epsilon**2 * eye)
        return 0.5 * (a_half @ inner @ a_mhalf - self.epsilon * eye)

    def _s(self) -> Array:
        c = self.cross_covariance()
        s = jnp.linalg.solve(self.cov0, c).T  # C^T A^{-1} (A symmetric)
        return 0.5 * (s + s.T)

    def conditional(self, x: Float[ArrayLike, "*batch D"]) -> Mixture:
        """$\\pi(\\cdot\\mid x)$ as a one-component mixture (full covariance)."""
        x = jnp.asarray(x, self.mean0.dtype)
        s = self._s()
        lead = (1,) * (x.ndim - 1)
        mean0 = self.mean0.reshape(lead + self.mean0.shape)
        mean1 = self.mean1.reshape(lead + self.mean1.shape)
        mean = mean1 + (x - mean0) @ s.T
        cov = self.epsilon * s
        batch = x.shape[:-1]
        d = x.shape[-1]
        return Mixture(
            jnp.ones(batch + (1,), x.dtype),
            mean[..., None, :],
            jnp.broadcast_to(cov, batch + (1, d, d)),
        )

    def as_lightsb(self) -> LightSB:
        s = self._s()
        r = self.mean1 - s @ self.mean0
        dtype = self.mean0.dtype
        return LightSB.from_parameters(
            jnp.zeros((1,), dtype), r[None], s[None], self.epsilon
        )


def gaussian_eot(
    x: Float[ArrayLike, "N D"],
    y: Float[ArrayLike, "M D"],
    epsilon: float | Float[ArrayLike, ""],
) -> GaussianEOT:
    """The Gaussian closed-form EOT plan between the Gaussians with the sample means
    and covariances of `x` and `y` (a baseline: exact when both are Gaussian)."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"`x` and `y` must be (N, D) and (M, D) arrays, got {x.shape}, {y.shape}."
        )
    _check_positive(epsilon, "epsilon", "Use e.g. epsilon=0.1.")
    return GaussianEOT(
        x.mean(0),
        jnp.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]),
        y.mean(0),
        jnp.cov(y, rowvar=False).reshape(y.shape[1], y.shape[1]),
        jnp.asarray(epsilon, x.dtype),
    )
