r"""An exact test bed: isotropic Gaussian mixtures, whose noised marginals, denoiser
and noise prediction under a VP process are closed form (unconditional and
class-conditional, hence exact classifier-free guidance), and a float64 reference
endpoint of the probability-flow ODE."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._core._misc import concrete_value
from ._sample import Guidance, ode_reference
from ._schedule import VPSchedule


def _labels_like(label, batch_shape):
    return jnp.broadcast_to(jnp.asarray(label), batch_shape)


class GaussianMixture(eqx.Module):
    r"""An isotropic Gaussian mixture $p_0 = \sum_k \pi_k \mathcal N(\mu_k, s_k^2 I)$
    in $\mathbb R^D$ whose components carry class labels.

    Under the VP forward process $x_t = \alpha x_0 + \sigma\varepsilon$ the marginal
    is $p_t = \sum_k \pi_k \mathcal N(\alpha\mu_k, v_k I)$, $v_k = \alpha^2 s_k^2 +
    \sigma^2$, so with posterior weights $w_k(x) \propto \pi_k\mathcal N(x;
    \alpha\mu_k, v_k I)$ the exact noise prediction and denoiser are

    $$\hat\varepsilon(x) = -\sigma\nabla\log p_t(x) = \sigma\sum_k w_k(x)
    \frac{x - \alpha\mu_k}{v_k}, \qquad \hat x_0 = \frac{x - \sigma\hat\varepsilon}
    {\alpha}.$$

    The class-conditional versions restrict the sum to the components of the class
    (weights renormalised), so classifier-free guidance
    $\hat\varepsilon_u + w(\hat\varepsilon_c - \hat\varepsilon_u)$ is exact too.

    **Arguments:** `means` `(K, D)`; `stds` `(K,)` (or a scalar); `weights` `(K,)`
    (positive, normalised here); `classes` `(K,)` non-negative integer labels
    (default: all 0).

    !!! example

        ```python
        import jax, jaxsolve as js
        gm = js.diffusion.GaussianMixture.example(dim=2)
        sched = js.diffusion.VPSchedule.linear()
        eps = gm.model(sched, label=0)(jax.numpy.zeros((4, 2)), 0.5)
        ```
    """

    means: Float[Array, "k d"]
    stds: Float[Array, " k"]
    log_weights: Float[Array, " k"]
    classes: Int[Array, " k"]

    def __init__(
        self,
        means: Float[ArrayLike, "k d"],
        stds: Float[ArrayLike, "*k"],
        weights: Float[ArrayLike, " k"] | None = None,
        classes: Int[ArrayLike, " k"] | None = None,
    ):
        means = jnp.asarray(means)
        if means.ndim != 2:
            raise ValueError(f"`means` must be (K, D), got shape {means.shape}.")
        if not jnp.issubdtype(means.dtype, jnp.floating):
            means = means.astype(jnp.asarray(0.0).dtype)
        k = means.shape[0]
        stds = jnp.broadcast_to(jnp.asarray(stds, means.dtype), (k,))
        weights = (
            jnp.ones((k,), means.dtype)
            if weights is None
            else jnp.asarray(weights, means.dtype)
        )
        classes = (
            jnp.zeros((k,), jnp.int32) if classes is None else jnp.asarray(classes)
        )
        if weights.shape != (k,) or classes.shape != (k,):
            raise ValueError(
                f"`weights` and `classes` must have shape (K,) = ({k},), got "
                f"{weights.shape} and {classes.shape}."
            )
        if not jnp.issubdtype(classes.dtype, jnp.integer):
            raise ValueError(f"`classes` must be integers, got {classes.dtype}.")
        for name, v in (("stds", stds), ("weights", weights)):
            c = concrete_value(v)
            if c is not None and not np.all(c > 0):
                raise ValueError(f"`{name}` must be positive, got {c}.")
        c = concrete_value(classes)
        if c is not None and np.any(c < 0):
            raise ValueError(f"`classes` must be non-negative, got {c}.")
        self.means = means
        self.stds = stds
        self.log_weights = jnp.log(weights) - jnp.log(jnp.sum(weights))
        self.classes = classes

    @classmethod
    def example(
        cls,
        dim: int = 2,
        *,
        num_classes: int = 2,
        components_per_class: int = 3,
        std: float = 0.05,
        spread: float = 0.8,
        seed: int = 0,
    ) -> "GaussianMixture":
        """The test bed of the research note: `num_classes` x `components_per_class`
        equal-weight components, means uniform in `[-spread, spread]^dim` (drawn from
        `seed`), common std `std`."""
        k = num_classes * components_per_class
        means = jax.random.uniform(
            jax.random.key(seed),
            (k, dim),
            jnp.asarray(0.0).dtype,
            -spread,
            spread,
        )
        classes = jnp.repeat(jnp.arange(num_classes), components_per_class)
        return cls(means, std, None, classes)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # --- exact quantities ---------------------------------------------------------

    def _logits(self, x, alpha, sigma, label):
        dt = x.dtype
        lead = (1,) * (x.ndim - 1)  # explicit broadcasting (no rank promotion)
        mu = self.means.astype(dt).reshape(lead + self.means.shape)
        v = alpha**2 * self.stds.astype(dt) ** 2 + sigma**2  # (K,)
        v = v.reshape(lead + v.shape)
        diff = x[..., None, :] - alpha * mu  # (..., K, D)
        d = self.dim
        logits = (
            self.log_weights.astype(dt).reshape(lead + self.log_weights.shape)
            - 0.5 * d * jnp.log(2 * jnp.pi * v)
            - 0.5 * jnp.sum(diff**2, axis=-1) / v
        )
        if label is not None:
            lab = _labels_like(label, x.shape[:-1])
            mask = self.classes.reshape(lead + self.classes.shape) == lab[..., None]
            logits = jnp.where(mask, logits, -jnp.inf)
        return logits, diff, v

    def _check(self, x, alpha, sigma):
        x = jnp.asarray(x)
        if x.shape[-1:] != (self.dim,):
            raise ValueError(
                f"x must end in the mixture's dimension {self.dim}, got {x.shape}."
            )
        alpha = jnp.asarray(alpha, x.dtype)
        sigma = jnp.asarray(sigma, x.dtype)
        return x, alpha, sigma

    def log_prob(
        self,
        x: Float[ArrayLike, "*batch d"],
        alpha: Float[ArrayLike, ""],
        sigma: Float[ArrayLike, ""],
        label: Int[ArrayLike, "*#batch"] | None = None,
    ) -> Float[Array, "*batch"]:
        r"""$\log p_t(x)$ (or $\log p_t(x \mid c)$ with `label`) for the noise level
        $(\alpha, \sigma)$."""
        x, alpha, sigma = self._check(x, alpha, sigma)
        logits, _, _ = self._logits(x, alpha, sigma, label)
        lse = jax.nn.logsumexp(logits, axis=-1)
        if label is None:
            return lse
        lab = _labels_like(label, x.shape[:-1])
        lead = (1,) * lab.ndim
        mask = self.classes.reshape(lead + self.classes.shape) == lab[..., None]
        logw = self.log_weights.astype(x.dtype).reshape(lead + self.classes.shape)
        norm = jax.nn.logsumexp(jnp.where(mask, logw, -jnp.inf), axis=-1)
        return lse - norm

    def eps(
        self,
        x: Float[ArrayLike, "*batch d"],
        alpha: Float[ArrayLike, ""],
        sigma: Float[ArrayLike, ""],
        label: Int[ArrayLike, "*#batch"] | None = None,
    ) -> Float[Array, "*batch d"]:
        r"""The exact noise prediction $\hat\varepsilon = -\sigma\nabla_x\log p_t$."""
        x, alpha, sigma = self._check(x, alpha, sigma)
        logits, diff, v = self._logits(x, alpha, sigma, label)
        w = jax.nn.softmax(logits, axis=-1)
        return sigma * jnp.sum((w / v)[..., None] * diff, axis=-2)

    def denoise(
        self,
        x: Float[ArrayLike, "*batch d"],
        alpha: Float[ArrayLike, ""],
        sigma: Float[ArrayLike, ""],
        label: Int[ArrayLike, "*#batch"] | None = None,
    ) -> Float[Array, "*batch d"]:
        r"""The exact denoiser $E[x_0 \mid x_t = x]$."""
        x, alpha, sigma = self._check(x, alpha, sigma)
        return (x - sigma * self.eps(x, alpha, sigma, label)) / alpha

    def model(
        self,
        schedule: VPSchedule,
        label: Int[ArrayLike, "*#batch"] | None = None,
    ) -> "MixtureModel":
        """The exact noise-prediction model `(x, t) -> eps` for `schedule`
        (class-conditional with `label`: an int or one per sample)."""
        if label is not None:
            lab = concrete_value(label)
            if lab is not None:
                known = set(np.asarray(self.classes).tolist())
                bad = set(np.unique(lab).tolist()) - known
                if bad:
                    raise ValueError(
                        f"label(s) {sorted(bad)} are not classes of the mixture "
                        f"({sorted(known)})."
                    )
            label = jnp.asarray(label)
        return MixtureModel(self, schedule, label)

    def sample(
        self,
        key: Array,
        num: int,
        label: Int[ArrayLike, ""] | None = None,
    ) -> tuple[Float[Array, "num d"], Int[Array, " num"]]:
        """`num` exact samples of the data (of class `label` if given) and their
        class labels."""
        kc, kn = jax.random.split(key)
        logits = self.log_weights
        if label is not None:
            logits = jnp.where(self.classes == label, logits, -jnp.inf)
        comp = jax.random.categorical(kc, logits, shape=(num,))
        noise = jax.random.normal(kn, (num, self.dim), self.means.dtype)
        x = self.means[comp] + self.stds[comp][:, None] * noise
        return x, self.classes[comp]

    def reference(
        self,
        x_T: Float[ArrayLike, "batch d"],
        schedule: VPSchedule,
        *,
        label: Int[ArrayLike, "*#batch"] | None = None,
        guidance_scale: float | Float[ArrayLike, ""] | None = None,
        t_start: float | Float[ArrayLike, ""] = 1.0,
        t_end: float | Float[ArrayLike, ""] | None = None,
        rtol: float = 1e-10,
        atol: float = 1e-10,
        max_steps: int = 100_000,
    ) -> Float[Array, "batch d"]:
        r"""The probability-flow ODE's endpoint at `t_end` (default `t_min`) from
        `x_T` at `t_start` with the exact model, in float64 with diffrax (Dopri8, PID
        step control, `rtol`/`atol` 1e-10): [`jaxsolve.diffusion.ode_reference`][].
        With `label` the conditional model; with `guidance_scale` $w$ (needs `label`)
        the guided $\hat\varepsilon_u + w(\hat\varepsilon_c -
        \hat\varepsilon_u)$.
        """
        if guidance_scale is not None and label is None:
            raise ValueError("`guidance_scale` needs a `label` (the guided class).")
        model = self.model(schedule, label)
        guidance = (
            None
            if guidance_scale is None
            else Guidance(self.model(schedule), guidance_scale)
        )
        return ode_reference(
            model,
            x_T,
            schedule,
            guidance=guidance,
            t_start=t_start,
            t_end=t_end,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
        )


class MixtureModel(eqx.Module):
    """`GaussianMixture.model(schedule, label)`: the exact `(x, t) -> eps`."""

    mixture: GaussianMixture
    schedule: VPSchedule
    label: Int[Array, "*b"] | None

    def __call__(self, x: Float[Array, "*batch d"], t: Float[ArrayLike, ""]):
        t = jnp.asarray(t, x.dtype)
        return self.mixture.eps(
            x, self.schedule.alpha(t), self.schedule.sigma(t), self.label
        )
