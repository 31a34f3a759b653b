"""The Light Schrödinger Bridge model: a Gaussian-mixture Schrödinger potential whose
normaliser, conditional plan, bridge marginals and drift are all in closed form."""

import math
from typing import Any, Literal, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import lineax as lx
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core._misc import concrete_value


class Mixture(NamedTuple):
    r"""A Gaussian mixture $\sum_k w_k\,\mathcal N(m_k, \Sigma_k)$ (weights sum to one).

    - `weights`: `(..., K)`.
    - `means`: `(..., K, D)`.
    - `covariances`: `(..., K, D)` (the diagonals, for a diagonal model) or
        `(..., K, D, D)` (full matrices).
    """

    weights: Float[Array, "*batch K"]
    means: Float[Array, "*batch K D"]
    covariances: Float[Array, "*batch K D"] | Float[Array, "*batch K D D"]


def mixture_moments(
    mixture: Mixture,
) -> tuple[Float[Array, "*batch D"], Float[Array, "*batch D D"]]:
    r"""Mean and covariance of a Gaussian mixture:
    $\bar m = \sum_k w_k m_k$,
    $\operatorname{Cov} = \sum_k w_k \Sigma_k + \sum_k w_k (m_k - \bar m)(m_k - \bar m)^\top$.
    Diagonal covariances `(..., K, D)` are expanded to matrices."""
    w, m, c = mixture
    if c.ndim == m.ndim:  # diagonal
        c = jnp.vectorize(jnp.diag, signature="(d)->(d,d)")(c)
    mean = jnp.einsum("...k,...kd->...d", w, m)
    dm = m - mean[..., None, :]
    cov = jnp.einsum("...k,...kij->...ij", w, c) + jnp.einsum(
        "...k,...ki,...kj->...ij", w, dm, dm
    )
    return mean, cov


def _check_positive(value: Any, name: str, fix: str) -> None:
    v = concrete_value(value)
    if v is not None and not (np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError(f"`{name}` must be positive and finite, got {v}. {fix}")


def _check_time(t: Any, model_dtype: Any) -> Array:
    v = concrete_value(t)
    if v is not None and not (np.all(v >= 0) and np.all(v <= 1)):
        raise ValueError(
            f"`t` must lie in [0, 1] (0 is the source, 1 the target), got {v}."
        )
    t = jnp.asarray(t, model_dtype) if isinstance(t, (int, float)) else jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(model_dtype)
    if t.dtype != model_dtype:
        raise ValueError(
            f"`t` has dtype {t.dtype} but the model has dtype {model_dtype}; cast it "
            f"(`t.astype(jnp.{model_dtype})`): jaxsolve does not promote silently."
        )
    if t.ndim != 0:
        raise ValueError(
            f"`t` must be a scalar, got shape {t.shape}; use `jax.vmap` over times."
        )
    if v is None:
        # Traced time: an out-of-range value raises at run time instead of giving
        # silently wrong samples.
        t = eqx.error_if(t, (t < 0) | (t > 1), "`t` must lie in [0, 1].")
    return t


class LightSB(eqx.Module):
    r"""Light Schrödinger Bridge: entropic optimal transport / the Schrödinger bridge
    between a source $p_0$ and a target $p_1$ with a Gaussian-mixture potential.

    For the cost $\tfrac12\|x-y\|^2$ with entropy weight $\varepsilon$ (equivalently
    the Schrödinger bridge with Wiener prior $\sqrt{\varepsilon}\,W_t$), the optimal
    conditional plan has the form
    $\pi(y\mid x) = \exp(\langle x, y\rangle/\varepsilon)\, v(y) / C(x)$. LightSB
    takes the potential to be a mixture
    $$v(y) = \sum_{k=1}^K \alpha_k\, \mathcal N(y \mid r_k, \varepsilon S_k),$$
    so that everything is closed form:
    $$\log C(x) = \operatorname{LSE}_k\Big[\log\alpha_k +
      \frac{x^\top S_k x + 2 r_k^\top x}{2\varepsilon}\Big],\qquad
      \pi(y \mid x) = \sum_k w_k(x)\,\mathcal N(y \mid r_k + S_k x, \varepsilon S_k),$$
    with $w_k(x) = \operatorname{softmax}_k[\log\alpha_k + (x^\top S_k x +
    2 r_k^\top x)/(2\varepsilon)]$. The bridge between $x$ and $y \sim \pi(\cdot\mid
    x)$ is Brownian, and the SB drift is (our closed form, no autodiff)
    $$g(t, x) = \sum_k \tilde w_k(t, x)\, Q_k^{-1}\big((S_k - I)x + r_k\big),\quad
      Q_k = (1-t) I + t S_k,$$
    $\tilde w_k \propto \alpha_k |Q_k|^{-1/2} \exp\big([x^\top Q_k^{-1}(S_k - I)x +
    2 x^\top Q_k^{-1} r_k - t\, r_k^\top Q_k^{-1} r_k]/(2\varepsilon)\big)$; it equals
    $\varepsilon\nabla_x \log h(t, x)$ with $h(t,x) = \int \mathcal N(y\mid x,
    (1-t)\varepsilon I)\, e^{\|y\|^2/(2\varepsilon)} v(y)\,dy$ and is finite on the
    whole of $[0, 1]$.

    **Parameterisation** (as in the authors' code): the learnable weights are stored
    as $\varepsilon\log\alpha_k$ (`log_alpha_raw`, so Adam moves $\log\alpha$ by
    about lr$/\varepsilon$), $r_k$ (`means`), and `log_s`. With
    `covariance="diagonal"`, $S_k = \operatorname{diag}(e^{s_k})$. With
    `covariance="full"`, $S_k = L_k L_k^\top$ with the Cholesky factor
    $L_k = \operatorname{diag}(e^{s_k/2}) + \operatorname{tril}(B_k, -1)$ (`offdiag`
    holds $B_k$); every SPD matrix has exactly one such factor, and all
    operations are triangular solves and matrix products. $\varepsilon$ is an array
    (a new value does not recompile) and is not trained by [`jaxsolve.bridge.fit`][].

    All methods take points of shape `(..., dim)` (any number of leading batch
    axes) and work under `jit`, `vmap` and `grad`.

    ??? cite "References"

        ```bibtex
        @inproceedings{korotin2024light,
          title={Light {S}chr{\"o}dinger Bridge},
          author={Korotin, Alexander and Gushchin, Nikita and Burnaev, Evgeny},
          booktitle={International Conference on Learning Representations},
          year={2024}
        }
        ```

    !!! example

        ```python
        import jax, jax.numpy as jnp, jaxsolve as js
        model = js.bridge.LightSB(2, 8, 0.1, key=jax.random.key(0))
        x = jnp.zeros((5, 2), model.epsilon.dtype)
        y = model.sample(jax.random.key(1), x)                 # (5, 2)
        xt = model.bridge_sample(jax.random.key(2), x, 0.5)    # (5, 2)
        ```
    """

    log_alpha_raw: Float[Array, " K"]
    means: Float[Array, "K D"]
    log_s: Float[Array, "K D"]
    offdiag: Float[Array, "K D D"] | None
    epsilon: Float[Array, ""]
    covariance: Literal["diagonal", "full"] = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        n_components: int,
        epsilon: float | Float[ArrayLike, ""],
        *,
        key: PRNGKeyArray,
        covariance: str = "diagonal",
        scale_init: float = 1.0,
        dtype: Any = None,
    ):
        r"""**Arguments:**

        - `dim`: the dimension $D$ of the data.
        - `n_components`: the number $K$ of Gaussian components of the potential.
        - `epsilon`: the entropy weight $\varepsilon > 0$ (the bridge's noise
            variance per unit time).
        - `key`: initialises $r_k \sim \mathcal N(0, I)$ (overwrite them with target
            samples, as the paper does: [`jaxsolve.bridge.fit`][] does it by
            default).
        - `covariance`: `"diagonal"` (default, as in the paper's experiments) or
            `"full"` (Cholesky parameterisation).
        - `scale_init`: initial $S_k = $ `scale_init` $\cdot I$ (the authors use 1
            on the EOT benchmark, 0.1 elsewhere).
        - `dtype`: a floating dtype (default: JAX's default float).
        """
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"`dim` must be a positive integer, got {dim!r}.")
        if (
            not isinstance(n_components, (int, np.integer))
            or isinstance(n_components, bool)
            or n_components < 1
        ):
            raise ValueError(
                f"`n_components` (K) must be a positive integer, got {n_components!r}."
            )
        if covariance not in ("diagonal", "full"):
            raise ValueError(
                f"`covariance` must be 'diagonal' or 'full', got {covariance!r}."
            )
        _check_positive(epsilon, "epsilon", "Use e.g. epsilon=0.1.")
        _check_positive(scale_init, "scale_init", "Use e.g. scale_init=1.0.")
        dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"`dtype` must be a floating dtype, got {dtype}.")
        eps = jnp.asarray(epsilon, dtype)
        k = int(n_components)
        self.epsilon = eps
        # Uniform weights alpha_k = 1/K, stored as eps * log(alpha) (authors' choice).
        self.log_alpha_raw = jnp.full((k,), -math.log(k), dtype) * eps
        self.means = jax.random.normal(key, (k, int(dim)), dtype)
        self.log_s = jnp.full((k, int(dim)), math.log(float(scale_init)), dtype)
        self.offdiag = (
            jnp.zeros((k, int(dim), int(dim)), dtype) if covariance == "full" else None
        )
        self.covariance = covariance

    def __check_init__(self):
        if self.epsilon.ndim != 0:
            raise ValueError(
                f"`epsilon` must be a scalar, got shape {self.epsilon.shape}."
            )
        _check_positive(self.epsilon, "epsilon", "Use e.g. epsilon=0.1.")

    # ------------------------------------------------------------------ helpers
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dtype(self) -> Any:
        return self.means.dtype

    @property
    def log_alpha(self) -> Float[Array, " K"]:
        r"""$\log\alpha_k$ (the raw parameter divided by $\varepsilon$)."""
        return self.log_alpha_raw / self.epsilon

    def cholesky(self) -> Float[Array, "K D D"]:
        """The Cholesky factors $L_k$ of $S_k$ (full covariance only)."""
        if self.offdiag is None:
            raise ValueError("`cholesky()` is only defined for covariance='full'.")
        diag = jnp.exp(0.5 * self.log_s)
        return jnp.tril(self.offdiag, -1) + jax.vmap(jnp.diag)(diag)

    def scales(self) -> Float[Array, "K D"] | Float[Array, "K D D"]:
        """The matrices $S_k$: `(K, D)` diagonals or `(K, D, D)` matrices."""
        if self.offdiag is None:
            return jnp.exp(self.log_s)
        chol = self.cholesky()
        return chol @ jnp.swapaxes(chol, -1, -2)

    def astype(self, dtype: Any) -> "LightSB":
        """The same model with parameters cast to `dtype`."""
        return jax.tree_util.tree_map(
            lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, self
        )

    def hyperparameters(self) -> dict[str, Any]:
        """The static configuration, JSON-able: pass it as `hyperparameters=` to
        `jaxsolve.save` and rebuild a skeleton for `jaxsolve.load` with
        [`jaxsolve.bridge.LightSB.from_hyperparameters`][]:

        ```python
        js.save(path, model, hyperparameters=model.hyperparameters())
        hp = js.load_header(path)["hyperparameters"]
        model = js.load(path, like=js.bridge.LightSB.from_hyperparameters(hp))
        ```
        """
        return {
            "dim": self.dim,
            "n_components": self.n_components,
            "covariance": self.covariance,
            "dtype": str(jnp.dtype(self.dtype)),
        }

    @classmethod
    def from_hyperparameters(cls, hyperparameters: dict[str, Any]) -> "LightSB":
        """A skeleton model (placeholder values) with the given configuration."""
        try:
            hp = dict(hyperparameters)
            return cls(
                int(hp["dim"]),
                int(hp["n_components"]),
                1.0,
                key=jax.random.key(0),
                covariance=hp["covariance"],
                dtype=hp["dtype"],
            )
        except (KeyError, TypeError) as e:
            raise ValueError(
                "LightSB hyper-parameters need the keys 'dim', 'n_components', "
                f"'covariance' and 'dtype' (see `model.hyperparameters()`); got "
                f"{hyperparameters!r}."
            ) from e

    @classmethod
    def from_parameters(
        cls,
        log_alpha: Float[ArrayLike, " K"],
        means: Float[ArrayLike, "K D"],
        scales: Float[ArrayLike, "K D"] | Float[ArrayLike, "K D D"],
        epsilon: float | Float[ArrayLike, ""],
    ) -> "LightSB":
        r"""A model with given $\log\alpha_k$, $r_k$ and $S_k$ (`scales`: `(K, D)`
        positive diagonals, giving a diagonal model, or `(K, D, D)` SPD matrices,
        giving a full one). E.g. the exact potential of a benchmark instance."""
        means = jnp.asarray(means)
        dtype = means.dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"`means` must be floating, got dtype {dtype}.")
        k, d = means.shape
        scales = jnp.asarray(scales, dtype)
        full = scales.ndim == 3
        expected = (k, d, d) if full else (k, d)
        if scales.shape != expected:
            raise ValueError(
                f"`scales` must have shape {(k, d)} (diagonals) or {(k, d, d)} "
                f"(matrices), got {scales.shape}."
            )
        model = cls(
            d,
            k,
            jnp.asarray(epsilon, dtype),
            key=jax.random.key(0),
            covariance="full" if full else "diagonal",
            dtype=dtype,
        )
        log_alpha = jnp.asarray(log_alpha, dtype)
        if full:
            chol = jnp.linalg.cholesky(scales)
            log_s = 2 * jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1))
            offdiag = jnp.tril(chol, -1)
        else:
            log_s, offdiag = jnp.log(scales), None
        return eqx.tree_at(
            lambda m: (m.log_alpha_raw, m.means, m.log_s, m.offdiag),
            model,
            (log_alpha * model.epsilon, means, log_s, offdiag),
            is_leaf=lambda x: x is None,
        )

    def _points(self, x: Any, name: str) -> Array:
        try:
            x = jnp.asarray(x)
        except TypeError:
            raise ValueError(f"`{name}` must be an array, got {type(x).__name__}.")
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"`{name}` must have shape (..., {self.dim}) (the model's dimension),"
                f" got {x.shape}."
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(self.dtype)
        if x.dtype != self.dtype:
            raise ValueError(
                f"`{name}` has dtype {x.dtype} but the model has dtype {self.dtype}. "
                f"Cast one of them (`{name}.astype(jnp.{self.dtype})` or "
                f"`model.astype(jnp.{x.dtype})`): jaxsolve does not promote silently."
            )
        return x

    # Batched kernels on (N, D) arrays; the public methods reshape around them.
    def _log_potential(self, y: Array) -> Array:
        eps = self.epsilon
        d = self.dim
        if self.offdiag is None:
            s = jnp.exp(self.log_s)  # (K, D)
            z = (y[:, None, :] - self.means[None]) ** 2 / s[None]  # (N, K, D)
            quad = jnp.sum(z, axis=-1)
        else:
            chol = self.cholesky()
            diff = y[None, :, :] - self.means[:, None, :]  # (K, N, D)
            u = jsl.solve_triangular(chol, jnp.swapaxes(diff, -1, -2), lower=True)
            quad = jnp.swapaxes(jnp.sum(u**2, axis=-2), 0, 1)  # (N, K)
        log_det = jnp.sum(self.log_s, axis=-1)  # log|S_k|
        log_norm = -0.5 * (d * jnp.log(2 * jnp.pi * eps) + log_det)
        log_comp = log_norm[None] - 0.5 * quad / eps
        return jax.nn.logsumexp(self.log_alpha[None] + log_comp, axis=-1)

    def _log_potential_gemm(self, y: Array) -> Array:
        """`_log_potential` with the diagonal quadratic forms expanded into matrix
        products: sum_d (y_d - r_kd)^2 / s_kd = y^2 @ (1/s)^T - 2 y @ (r/s)^T +
        sum_d r_kd^2 / s_kd. One GEMM instead of an (N, K, D) temporary: 10x faster
        at D = 128 on CPU, at the price of cancellation (about 1e-7 of the squared
        norms in float32), harmless for stochastic training."""
        if self.offdiag is not None:
            return self._log_potential(y)
        eps = self.epsilon
        inv_s = jnp.exp(-self.log_s)
        quad = (
            (y * y) @ inv_s.T
            - 2 * y @ (self.means * inv_s).T
            + jnp.sum(self.means**2 * inv_s, axis=-1)[None]
        )
        log_det = jnp.sum(self.log_s, axis=-1)
        log_norm = -0.5 * (self.dim * jnp.log(2 * jnp.pi * eps) + log_det)
        return jax.nn.logsumexp(
            self.log_alpha[None] + log_norm[None] - 0.5 * quad / eps, -1
        )

    def _log_normaliser_gemm(self, x: Array) -> Array:
        if self.offdiag is not None:
            return jax.nn.logsumexp(self._logits(x)[0], axis=-1)
        quad = (x * x) @ jnp.exp(self.log_s).T + 2 * x @ self.means.T
        return jax.nn.logsumexp(self.log_alpha[None] + quad / (2 * self.epsilon), -1)

    def _scale_times(self, x: Array) -> Array:
        """S_k x for x (N, D): (N, K, D)."""
        if self.offdiag is None:
            return jnp.exp(self.log_s)[None] * x[:, None, :]
        return jnp.einsum("kij,nj->nki", self.scales(), x)

    def _logits(self, x: Array) -> tuple[Array, Array]:
        """Per-component logits of pi(.|x) and S_k x."""
        sx = self._scale_times(x)  # (N, K, D)
        quad = jnp.einsum("nkd,nd->nk", sx, x) + 2 * x @ self.means.T
        return self.log_alpha[None] + quad / (2 * self.epsilon), sx

    def _reshape(self, fn, x: Array, *trailing: tuple[int, ...]):
        batch = x.shape[:-1]
        out = fn(x.reshape(-1, self.dim))
        if len(trailing) == 1:
            return out.reshape(batch + trailing[0])
        return tuple(o.reshape(batch + t) for o, t in zip(out, trailing))

    # ------------------------------------------------------------------ public
    def log_potential(self, y: Float[ArrayLike, "*batch D"]) -> Float[Array, "*batch"]:
        r"""$\log v(y) = \log\sum_k \alpha_k\,\mathcal N(y\mid r_k, \varepsilon S_k)$
        (unnormalised: the $\alpha_k$ need not sum to one)."""
        y = self._points(y, "y")
        return self._reshape(self._log_potential, y, ())

    def log_normaliser(self, x: Float[ArrayLike, "*batch D"]) -> Float[Array, "*batch"]:
        r"""$\log C(x) = \log\int e^{\langle x,y\rangle/\varepsilon} v(y)\,dy =
        \operatorname{LSE}_k[\log\alpha_k + (x^\top S_k x + 2r_k^\top x)/(2\varepsilon)]$."""
        x = self._points(x, "x")
        return self._reshape(
            lambda z: jax.nn.logsumexp(self._logits(z)[0], axis=-1), x, ()
        )

    def conditional(self, x: Float[ArrayLike, "*batch D"]) -> Mixture:
        r"""The conditional plan $\pi(\cdot\mid x) = \sum_k w_k(x)\,
        \mathcal N(r_k + S_k x, \varepsilon S_k)$ as a [`jaxsolve.bridge.Mixture`][]
        (covariances `(..., K, D)` diagonals or `(..., K, D, D)` matrices)."""
        x = self._points(x, "x")
        k, d = self.n_components, self.dim

        def fn(z):
            logits, sx = self._logits(z)
            weights = jax.nn.softmax(logits, axis=-1)
            means = self.means[None] + sx
            cov = self.epsilon * self.scales()
            cov = jnp.broadcast_to(cov[None], (z.shape[0],) + cov.shape)
            return Mixture(weights, means, cov)

        cov_shape = (k, d) if self.offdiag is None else (k, d, d)
        return Mixture(*self._reshape(fn, x, (k,), (k, d), cov_shape))

    def _sample_one(self, key: PRNGKeyArray, x: Array) -> Array:
        """One draw from pi(.|x) for each row of x (N, D)."""
        ckey, nkey = jax.random.split(key)
        logits, sx = self._logits(x)
        comp = jax.random.categorical(ckey, logits, axis=-1)  # (N,)
        noise = jax.random.normal(nkey, x.shape, self.dtype)
        mean = self.means[comp] + jnp.take_along_axis(sx, comp[:, None, None], 1)[:, 0]
        sqrt_eps = jnp.sqrt(self.epsilon)
        if self.offdiag is None:
            std = jnp.exp(0.5 * self.log_s[comp])
            return mean + sqrt_eps * std * noise
        # L_k xi for every k, then one per row: no (N, D, D) gather.
        all_k = jnp.einsum("kij,nj->nki", self.cholesky(), noise)
        picked = jnp.take_along_axis(all_k, comp[:, None, None], 1)[:, 0]
        return mean + sqrt_eps * picked

    def sample(
        self,
        key: PRNGKeyArray,
        x: Float[ArrayLike, "*batch D"],
        num_samples: int | None = None,
    ) -> Float[Array, "..."]:
        r"""Draw $y \sim \pi(\cdot\mid x)$: a component $k \sim w(x)$, then
        $y = r_k + S_k x + \sqrt{\varepsilon} L_k \xi$. Differentiable in the model's
        parameters and in `x` by reparameterisation (the discrete component choice
        carries no gradient).

        Returns shape `x.shape` (one draw per point), or
        `(num_samples, *x.shape)` when `num_samples` is given."""
        x = self._points(x, "x")
        if num_samples is None:
            return self._reshape(lambda z: self._sample_one(key, z), x, (self.dim,))
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(
                f"`num_samples` must be a positive integer, got {num_samples!r}."
            )
        keys = jax.random.split(key, int(num_samples))
        return jax.vmap(
            lambda k: self._reshape(lambda z: self._sample_one(k, z), x, (self.dim,))
        )(keys)

    def bridge_sample(
        self,
        key: PRNGKeyArray,
        x: Float[ArrayLike, "*batch D"],
        t: float | Float[ArrayLike, ""],
    ) -> Float[Array, "*batch D"]:
        r"""A draw from the bridge marginal at time $t \in [0, 1]$:
        $x_t = (1-t)\,x + t\,y + \sqrt{\varepsilon t(1-t)}\,\xi$ with
        $y \sim \pi(\cdot\mid x)$, $\xi \sim \mathcal N(0, I)$ (the Brownian bridge of
        the Wiener prior with variance $\varepsilon$ per unit time)."""
        x = self._points(x, "x")
        t = _check_time(t, self.dtype)
        ykey, nkey = jax.random.split(key)
        y = self.sample(ykey, x)
        noise = jax.random.normal(nkey, x.shape, self.dtype)
        return (1 - t) * x + t * y + jnp.sqrt(self.epsilon * t * (1 - t)) * noise

    def _drift(self, t: Array, x: Array) -> Array:
        eps = self.epsilon
        eye = jnp.eye(self.dim, dtype=self.dtype)
        if self.offdiag is None:
            s = jnp.exp(self.log_s)  # (K, D)
            q = (1 - t) + t * s
            u = ((s - 1)[None] * x[:, None, :] + self.means[None]) / q[None]
            log_det_q = jnp.sum(jnp.log(q), axis=-1)
            qr = self.means / q  # Q^{-1} r
        else:
            s = self.scales()
            q = (1 - t) * eye[None] + t * s  # (K, D, D), SPD for t in [0, 1]
            cq = jnp.linalg.cholesky(q)
            rhs = jnp.einsum("kij,nj->kni", s - eye[None], x) + self.means[:, None, :]
            u = jax.vmap(lambda c, b: jsl.cho_solve((c, True), b.T).T)(cq, rhs)
            u = jnp.swapaxes(u, 0, 1)  # (N, K, D)
            log_det_q = 2 * jnp.sum(
                jnp.log(jnp.diagonal(cq, axis1=-2, axis2=-1)), axis=-1
            )
            qr = jax.vmap(lambda c, r: jsl.cho_solve((c, True), r))(cq, self.means)
        # x^T Q^{-1}(S - I) x + 2 x^T Q^{-1} r = x^T (u + Q^{-1} r) since
        # u = Q^{-1}((S - I)x + r) and Q^{-1} is symmetric.
        quad = (
            jnp.einsum("nd,nkd->nk", x, u + qr[None])
            - t * jnp.sum(self.means * qr, axis=-1)[None]
        )
        logits = self.log_alpha[None] - 0.5 * log_det_q[None] + quad / (2 * eps)
        w = jax.nn.softmax(logits, axis=-1)
        return jnp.einsum("nk,nkd->nd", w, u)

    def drift(
        self, t: float | Float[ArrayLike, ""], x: Float[ArrayLike, "*batch D"]
    ) -> Float[Array, "*batch D"]:
        r"""The Schrödinger-bridge drift $g(t, x)$ of
        $dX_t = g(t, X_t)\,dt + \sqrt{\varepsilon}\,dW_t$, $X_0 \sim p_0$, in
        closed form (see the class docstring); finite for all $t \in [0, 1]$. At
        $t = 0$ it is $\mathbb E_\pi[y\mid x] - x$."""
        x = self._points(x, "x")
        t = _check_time(t, self.dtype)
        return self._reshape(lambda z: self._drift(t, z), x, (self.dim,))

    def trajectory(
        self,
        key: PRNGKeyArray,
        x: Float[ArrayLike, "*batch D"],
        ts: Float[ArrayLike, " T"],
        *,
        solver: diffrax.AbstractSolver | None = None,
    ) -> Float[Array, "*batch T D"]:
        r"""Simulate the SB SDE $dX_t = g(t, X_t)\,dt + \sqrt{\varepsilon}\,dW_t$ from
        $X_{t_0} = x$ with diffrax, stepping exactly on the increasing grid `ts`
        (in $[0, 1]$) and returning $X_t$ at every `ts`. `solver` defaults to
        `diffrax.Euler()` (Euler-Maruyama; the noise is additive, so it has strong
        order 1); the Brownian motion is a `diffrax.VirtualBrownianTree` (independent per
        point of the batch; reverse-mode differentiable)."""
        x = self._points(x, "x")
        ts = jnp.asarray(ts)
        if not jnp.issubdtype(ts.dtype, jnp.floating):
            ts = ts.astype(self.dtype)
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(
                f"`ts` must be a 1-D grid of at least 2 times, got shape {ts.shape}."
            )
        if ts.dtype != self.dtype:
            raise ValueError(
                f"`ts` has dtype {ts.dtype} but the model has dtype {self.dtype}."
            )
        v = concrete_value(ts)
        if v is not None and (
            np.any(v < 0) or np.any(v > 1) or np.any(np.diff(v) <= 0)
        ):
            raise ValueError(f"`ts` must be strictly increasing in [0, 1], got {v}.")
        solver = diffrax.Euler() if solver is None else solver
        sqrt_eps = jnp.sqrt(self.epsilon)
        d = self.dim

        dtype = self.dtype

        def drift(t, y, args):
            # diffrax may carry times in float64 under x64: keep the model's dtype.
            return self._drift(jnp.asarray(t, dtype), y[None])[0]

        def diffusion(t, y, args):
            return lx.DiagonalLinearOperator(jnp.full((d,), sqrt_eps))

        tol = jnp.min(jnp.diff(ts)) / 16

        def one(k, x0):
            # A virtual Brownian tree (not UnsafeBrownianPath) so that reverse-mode
            # differentiation through the trajectory works; its resolution is far
            # below the step size.
            bm = diffrax.VirtualBrownianTree(
                ts[0], ts[-1], tol, jax.ShapeDtypeStruct((d,), dtype), k
            )
            terms = diffrax.MultiTerm(
                diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm)
            )
            # diffrax mixes its float64 time bookkeeping with float32 states:
            # allow that under strict dtype promotion.
            with jax.numpy_dtype_promotion("standard"):
                sol = diffrax.diffeqsolve(
                    terms,
                    solver,
                    ts[0],
                    ts[-1],
                    None,
                    x0,
                    saveat=diffrax.SaveAt(ts=ts),
                    stepsize_controller=diffrax.StepTo(ts),
                    max_steps=ts.shape[0],
                )
            return sol.ys.astype(dtype)

        flat = x.reshape(-1, d)
        keys = jax.random.split(key, flat.shape[0])
        out = jax.vmap(one)(keys, flat)
        return out.reshape(x.shape[:-1] + (ts.shape[0], d))
