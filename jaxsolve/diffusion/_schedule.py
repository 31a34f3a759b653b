r"""Variance-preserving noise schedules and the time grids samplers step along.

A VP schedule gives $\alpha_t, \sigma_t$ with $\alpha_t^2 + \sigma_t^2 = 1$ and the
forward marginal $x_t = \alpha_t x_0 + \sigma_t \varepsilon$ for continuous time
$t \in [t_\min, 1]$; $\lambda_t = \log(\alpha_t / \sigma_t)$ (half the log-SNR)
decreases in $t$.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core._misc import concrete_value


_KINDS = ("linear", "cosine", "discrete")
# One of TIME_GRIDS (a plain `str` in signatures: a bad name gets our ValueError).
TimeGrid = str
TIME_GRIDS = ("uniform", "logsnr", "leading", "trailing")


def _as(p, like):
    """`p` in the dtype of `like` (strict promotion: no silent float32/float64 mix)."""
    like = jnp.asarray(like)
    dtype = like.dtype if jnp.issubdtype(like.dtype, jnp.inexact) else p.dtype
    return jnp.asarray(p).astype(dtype)


def _float(x) -> Array:
    return jnp.asarray(x, dtype=jnp.asarray(0.0).dtype)


class VPSchedule(eqx.Module):
    r"""A variance-preserving noise schedule: $\alpha_t$, $\sigma_t = \sqrt{1 -
    \alpha_t^2}$ and $\lambda_t = \log(\alpha_t/\sigma_t)$ on $t \in [t_\min, 1]$.

    Build one with a constructor:

    - `VPSchedule.linear(beta_min=0.1, beta_max=20.0, t_min=1e-3)`: the score-SDE
        linear schedule $\beta(t) = \beta_\min + t(\beta_\max - \beta_\min)$,
        $\log\alpha_t = -\tfrac14 t^2(\beta_\max - \beta_\min) - \tfrac12 t\beta_\min$.
    - `VPSchedule.cosine(s=0.008, t_min=1e-3, max_time=0.9946)`: the iDDPM cosine
        schedule $\alpha_t = \cos(\tfrac\pi2 \frac{\tau + s}{1 + s}) /
        \cos(\tfrac\pi2 \frac{s}{1+s})$ with $\tau = t \cdot$ `max_time` (the cosine
        reaches $\alpha = 0$ at $\tau = 1$, so the end of time is clipped as in
        DPM-Solver).
    - `VPSchedule.discrete(betas)`: the $N$-step schedules of trained models,
        $\bar\alpha_n = \prod_{m \le n}(1 - \beta_m)$, with the discrete step $n$ at
        $t_n = (n + 1)/N$ and $\log \alpha_t$ linear between steps (DPM-Solver's
        convention); $t_\min = 1/N$. `betas` may be `"linear"` (1e-4..0.02, 1000 steps,
        DDPM/ADM/DiT) or `"scaled_linear"` (0.00085..0.012 in $\sqrt\beta$, Stable
        Diffusion).

    All methods take $t$ as an array and return arrays of its dtype.

    !!! example

        ```python
        import jaxsolve as js
        sched = js.diffusion.VPSchedule.linear()
        print(sched.alpha(1.0), sched.lambda_(sched.t_min))
        ```
    """

    kind: str = eqx.field(static=True)
    params: Float[Array, " p"]
    log_alphas: Float[Array, " n"] | None
    t_min: Float[Array, ""]
    num_train_steps: int = eqx.field(static=True)

    def __check_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"Unknown schedule kind {self.kind!r}; use {_KINDS}.")

    # --- constructors -------------------------------------------------------------

    @classmethod
    def linear(
        cls,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        t_min: float = 1e-3,
        num_train_steps: int = 1000,
    ) -> "VPSchedule":
        """The score-SDE linear VP schedule (see the class docstring)."""
        for name, v in (("beta_min", beta_min), ("beta_max", beta_max)):
            if not (v >= 0 and np.isfinite(v)):
                raise ValueError(f"`{name}` must be finite and >= 0, got {v}.")
        if not beta_max + beta_min > 0:
            raise ValueError("`beta_min + beta_max` must be positive.")
        _check_t_min(t_min)
        return cls(
            "linear",
            _float([beta_min, beta_max]),
            None,
            _float(t_min),
            num_train_steps,
        )

    @classmethod
    def cosine(
        cls,
        s: float = 0.008,
        t_min: float = 1e-3,
        max_time: float = 0.9946,
        num_train_steps: int = 1000,
    ) -> "VPSchedule":
        """The iDDPM cosine schedule (see the class docstring)."""
        if not 0 <= s < 1:
            raise ValueError(f"`s` must lie in [0, 1), got {s}.")
        if not 0 < max_time < 1:
            raise ValueError(
                f"`max_time` must lie in (0, 1) (alpha vanishes at 1), got {max_time}."
            )
        _check_t_min(t_min)
        return cls(
            "cosine", _float([s, max_time]), None, _float(t_min), num_train_steps
        )

    @classmethod
    def discrete(cls, betas: Float[ArrayLike, " n"] | str) -> "VPSchedule":
        """A discrete-time schedule from its `betas` (see the class docstring)."""
        if isinstance(betas, str):
            if betas == "linear":
                betas = np.linspace(1e-4, 0.02, 1000)
            elif betas == "scaled_linear":
                betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
            else:
                raise ValueError(
                    f"Unknown named betas {betas!r}; use 'linear', 'scaled_linear' or "
                    "an array of betas."
                )
        b = concrete_value(betas)
        if b is None:
            raise ValueError("`betas` must be concrete (not traced inside jit).")
        b = np.asarray(b, dtype=np.float64)
        if b.ndim != 1 or b.size < 2:
            raise ValueError(
                f"`betas` must be a 1-D array of length >= 2, got {b.shape}."
            )
        if not (np.all(b > 0) and np.all(b < 1)):
            raise ValueError("`betas` must lie in (0, 1).")
        n = b.size
        log_alphas = 0.5 * np.cumsum(np.log1p(-b))
        return cls("discrete", _float([]), _float(log_alphas), _float(1.0 / n), n)

    # --- the schedule -------------------------------------------------------------

    def log_alpha(self, t: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        r"""$\log \alpha_t$."""
        t = jnp.asarray(t)
        if not jnp.issubdtype(t.dtype, jnp.inexact):
            t = t.astype(self.t_min.dtype)
        if self.kind == "linear":
            b0, b1 = _as(self.params[0], t), _as(self.params[1], t)
            return -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
        if self.kind == "cosine":
            s, tmax = _as(self.params[0], t), _as(self.params[1], t)
            f = lambda tau: jnp.log(jnp.cos(0.5 * jnp.pi * (tau + s) / (1 + s)))
            return f(t * tmax) - f(jnp.zeros_like(t))
        n = self.num_train_steps
        grid = jnp.arange(1, n + 1, dtype=t.dtype) / n
        return jnp.interp(t, grid, _as(self.log_alphas, t))

    def alpha(self, t: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        r"""$\alpha_t$ (the signal scale)."""
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        r"""$\sigma_t = \sqrt{1 - \alpha_t^2}$ (the noise scale)."""
        return jnp.sqrt(-jnp.expm1(2 * self.log_alpha(t)))

    def lambda_(self, t: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        r"""$\lambda_t = \log(\alpha_t / \sigma_t)$ (half the log signal-to-noise
        ratio)."""
        la = self.log_alpha(t)
        return la - 0.5 * jnp.log(-jnp.expm1(2 * la))

    def t_of_lambda(self, lam: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        r"""The inverse of $t \mapsto \lambda_t$."""
        lam = jnp.asarray(lam)
        if not jnp.issubdtype(lam.dtype, jnp.inexact):
            lam = lam.astype(self.t_min.dtype)
        # alpha^2 = sigmoid(2 lambda)
        la = -0.5 * jnp.logaddexp(jnp.zeros_like(lam), -2 * lam)
        if self.kind == "linear":
            b0, b1 = _as(self.params[0], lam), _as(self.params[1], lam)
            # Root of (b1 - b0)/4 t^2 + b0/2 t + la = 0, in the cancellation-free form.
            return -2 * la / (0.5 * b0 + jnp.sqrt(0.25 * b0**2 - (b1 - b0) * la))
        if self.kind == "cosine":
            s, tmax = _as(self.params[0], lam), _as(self.params[1], lam)
            c0 = jnp.log(jnp.cos(0.5 * jnp.pi * s / (1 + s)))
            tau = 2 * (1 + s) / jnp.pi * jnp.arccos(jnp.exp(la + c0)) - s
            return tau / tmax
        n = self.num_train_steps
        grid = jnp.arange(1, n + 1, dtype=lam.dtype) / n
        # log alpha decreases in t: interpolate on the reversed arrays.
        return jnp.interp(la, _as(self.log_alphas, lam)[::-1], grid[::-1])


def _check_t_min(t_min):
    if not 0 < t_min < 1:
        raise ValueError(f"`t_min` must lie in (0, 1), got {t_min}.")


def timesteps(
    schedule: VPSchedule,
    num_steps: int,
    time_grid: TimeGrid | Float[ArrayLike, " m"] = "uniform",
) -> Float[Array, " m"]:
    r"""The `num_steps + 1` times a sampler visits, from the first (noisiest) to
    $t_\min$, strictly decreasing.

    - `"uniform"`: uniform in $t$ from 1 to $t_\min$.
    - `"logsnr"`: uniform in $\lambda_t$ from $\lambda_1$ to $\lambda_{t_\min}$
        (DPM-Solver's `"logSNR"` skip type).
    - `"leading"` / `"trailing"`: diffusers' `timestep_spacing` on the lattice of the
        schedule's `num_train_steps` $N$ training steps, step $n$ at $t = (n+1)/N$,
        followed by $t_\min$ (diffusers' final step to $\bar\alpha_0$, i.e.
        `set_alpha_to_one=False`). `"leading"` is $n = i\lfloor N/S \rfloor + 1$ for
        $i = S-1, \dots, 0$ (Stable Diffusion's `steps_offset=1`); `"trailing"` is
        $n = \mathrm{round}(N - iN/S) - 1$ for $i = 0, \dots, S-1$, which starts at
        $t = 1$.
    - an array of `num_steps + 1` strictly decreasing times in $[t_\min, 1]$.
    """
    n = num_steps
    dtype = schedule.t_min.dtype
    t_min = schedule.t_min
    if isinstance(time_grid, str):
        if time_grid == "uniform":
            return jnp.linspace(jnp.ones((), dtype), t_min, n + 1)
        if time_grid == "logsnr":
            one = jnp.ones((), dtype)
            lam = jnp.linspace(schedule.lambda_(one), schedule.lambda_(t_min), n + 1)
            t = schedule.t_of_lambda(lam)
            return t.at[0].set(one).at[-1].set(t_min)
        N = schedule.num_train_steps
        if time_grid == "leading":
            if n >= N:
                raise ValueError(
                    f"'leading' spacing needs num_steps < num_train_steps ({N}), got "
                    f"{n}."
                )
            ks = np.arange(n)[::-1] * (N // n) + 1
        elif time_grid == "trailing":
            if n > N:
                raise ValueError(
                    f"'trailing' spacing needs num_steps <= num_train_steps ({N}), "
                    f"got {n}."
                )
            ks = np.round(np.arange(N, 0, -N / n)).astype(np.int64) - 1
        else:
            raise ValueError(
                f"Unknown time_grid {time_grid!r}; use one of {TIME_GRIDS} or an array "
                "of decreasing times."
            )
        t = jnp.asarray((ks + 1) / N, dtype)
        return jnp.concatenate([t, t_min[None]])
    grid = jnp.asarray(time_grid)
    if not jnp.issubdtype(grid.dtype, jnp.floating):
        raise ValueError(
            f"An explicit `time_grid` must be a floating array, got dtype {grid.dtype}."
        )
    if grid.shape != (n + 1,):
        raise ValueError(
            f"An explicit `time_grid` must have shape (num_steps + 1,) = ({n + 1},), "
            f"got {grid.shape}."
        )
    g = concrete_value(grid)
    tm = concrete_value(t_min)
    if g is not None:
        if not np.all(np.diff(g) < 0):
            raise ValueError(
                "`time_grid` must be strictly decreasing (from noise to data), got "
                f"{g}. Sort it with `jnp.sort(grid)[::-1]` and drop repeated times."
            )
        if tm is not None and (g[-1] < tm * (1 - 1e-6) or g[0] > 1):
            raise ValueError(
                f"`time_grid` must lie in [t_min, 1] = [{float(tm)}, 1], got "
                f"[{g[-1]}, {g[0]}]."
            )
    else:
        # Traced (inside the user's jit): checked at run time instead.
        grid = eqx.error_if(
            grid,
            ~jnp.all(jnp.diff(grid) < 0),
            "`time_grid` must be strictly decreasing (from noise to data).",
        )
    return grid.astype(dtype)
