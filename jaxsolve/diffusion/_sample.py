"""`jaxsolve.diffusion.sample`: the driver of the diffusion family."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from .._core import AbstractProgressMeter, finalise, NoProgressMeter, RESULTS, Solution
from .._core._misc import concrete_value
from ._samplers import AbstractSampler, as_number, Coefficients
from ._schedule import TimeGrid, timesteps, VPSchedule


_PREDICTIONS = ("eps", "x0", "v")


def _to_scale(w):
    w = as_number(w, "Guidance.scale")
    if jnp.issubdtype(w.dtype, jnp.integer):
        w = w.astype(jnp.asarray(0.0).dtype)
    return w


class Guidance(eqx.Module):
    r"""Classifier-free guidance: the guided noise prediction

    $$\hat\varepsilon_w(x, t) = \hat\varepsilon_u(x, t) + w\,(\hat\varepsilon_c(x, t)
    - \hat\varepsilon_u(x, t)),$$

    with $\hat\varepsilon_c$ the `model` passed to [`jaxsolve.diffusion.sample`][]
    (the conditional one) and $\hat\varepsilon_u$ = `unconditional`. $w = 1$ is plain
    conditional sampling; Stable Diffusion's default is 7.5. One guided evaluation
    counts as one model evaluation (NFE), as in the literature.

    **Arguments:** `unconditional`: a model `(x, t) -> output` with the same
    prediction type as the conditional one; `scale`: $w$, an array (new values do not
    recompile).

    ??? cite "References"

        Ho, Salimans, "Classifier-Free Diffusion Guidance", 2022 (arXiv:2207.12598).
    """

    unconditional: Callable
    scale: Float[Array, ""] = eqx.field(converter=_to_scale)

    def __check_init__(self):
        if not callable(self.unconditional):
            raise ValueError(
                "`Guidance.unconditional` must be a model `(x, t) -> prediction`, got "
                f"{type(self.unconditional).__name__}."
            )
        if jnp.shape(self.scale) != ():
            raise ValueError(
                f"`Guidance.scale` must be a scalar, got shape {jnp.shape(self.scale)}."
            )
        if not jnp.issubdtype(self.scale.dtype, jnp.floating):
            raise ValueError(
                f"`Guidance.scale` must be a real number, got dtype {self.scale.dtype}."
            )


def _check_output(fn, x, t, name):
    try:
        out = jax.eval_shape(fn, x, t)
    except Exception as e:
        raise ValueError(
            f"Calling the {name} as `{name}(x, t)` with x of shape {x.shape} "
            f"({x.dtype}) and a scalar t failed: {type(e).__name__}: {e}"
        ) from e
    if not (hasattr(out, "shape") and hasattr(out, "dtype")):
        raise ValueError(f"The {name} must return an array, got {type(out).__name__}.")
    if out.shape != x.shape:
        raise ValueError(
            f"The {name} returned shape {out.shape} for x of shape {x.shape}; it must "
            "return a prediction shaped like x (batch included)."
        )
    if out.dtype != x.dtype:
        raise ValueError(
            f"The {name} returned dtype {out.dtype} for x of dtype {x.dtype}; make it "
            "return the dtype of its input (e.g. cast its parameters, or pass x_T in "
            f"{out.dtype})."
        )


def sample(
    model: Callable[..., Array],
    x_T: Float[ArrayLike, " batch *event"],
    schedule: VPSchedule,
    sampler: AbstractSampler,
    num_steps: int,
    *,
    time_grid: TimeGrid | Float[ArrayLike, " m"] = "uniform",
    guidance: Guidance | None = None,
    prediction: str = "eps",
    divergence_threshold: float | Float[ArrayLike, ""] = 3.0,
    throw: bool = True,
    progress_meter: AbstractProgressMeter | None = None,
) -> Solution:
    r"""Integrate the probability-flow ODE of a diffusion model from noise to data.

    Solves
    $$\frac{dx}{dt} = \frac{d\log\alpha_t}{dt}\,x - \sigma_t\frac{d\lambda_t}{dt}\,
    \hat\varepsilon(x, t)$$
    (equivalently $d\bar x/d\bar\sigma = \hat\varepsilon$ in the DDIM variables
    $\bar x = x/\alpha$, $\bar\sigma = \sigma/\alpha$) from the first time of the grid
    (1 for `"uniform"`, `"logsnr"`, `"trailing"`) down to `schedule.t_min`, with a
    fixed number of steps of `sampler` in one `lax.scan`: fixed cost, one model
    evaluation per step. No extra denoising step is taken: the value is $x$ at
    $t_\min$.

    **Arguments:**

    - `model`: `model(x, t) -> prediction` on the whole batch `x` (shape of `x_T`) at
        a scalar time `t` (an array of `x`'s dtype); with `guidance`, the conditional
        model. Any pytree callable (e.g. an `eqx.Module`): its arrays are traced, so
        gradients with respect to them flow through the sampler.
    - `x_T`: the initial noise, `(batch, ...)`; the leading axis indexes samples (for
        one sample pass `x[None]`). float32 or float64; the output has its dtype.
    - `schedule`: a [`jaxsolve.diffusion.VPSchedule`][].
    - `sampler`: [`jaxsolve.diffusion.DDIM`][], [`jaxsolve.diffusion.PLMS`][],
        [`jaxsolve.diffusion.DPMSolverPP`][], [`jaxsolve.diffusion.HeavyBall`][],
        [`jaxsolve.diffusion.Nesterov`][], [`jaxsolve.diffusion.GHVB`][].
    - `num_steps`: number of steps (static, >= 1).
    - `time_grid`: `"uniform"` (in $t$), `"logsnr"` (uniform in $\lambda$),
        `"leading"`, `"trailing"` (diffusers' spacings) or an explicit strictly
        decreasing array of `num_steps + 1` times; see
        [`jaxsolve.diffusion.timesteps`][].
    - `guidance`: [`jaxsolve.diffusion.Guidance`][] for classifier-free guidance.
    - `prediction`: what the model predicts: `"eps"` (noise, default), `"x0"` (data)
        or `"v"` ($v = \alpha\varepsilon - \sigma x_0$); converted to
        $\hat\varepsilon$ before the sampler.
    - `divergence_threshold`: a sample *diverged* if it turned non-finite or
        $\max_n \|x_n\|_\infty$ exceeded `divergence_threshold` $\cdot
        \max(1, \|x_T\|_\infty)$ (per sample; for data scaled to about unit size, as
        diffusion models' data are).
    - `throw`: raise on failure (also under `jit`); with `False` inspect `result`.
    - `progress_meter`: e.g. `jaxsolve.TextProgressMeter()`; off by default.

    **Returns:** a [`jaxsolve.Solution`][]: `value` $x$ at $t_\min$ (shape and dtype
    of `x_T`); `result`; `stats` with `num_steps`, `max_steps` (both `num_steps`),
    `num_model_evaluations`, `times` (the grid), and per sample `diverged`
    (bool, `(batch,)`) and `max_abs` ($\max_n\|x_n\|_\infty$), and `num_diverged`.

    A sample that diverged but stayed finite is reported in `stats["diverged"]` (the
    result stays `successful`); NaN/Inf in the output gives `RESULTS.nonfinite`
    (`throw=True` raises), NaN/Inf in `x_T`, the guidance scale or the model's or
    sampler's arrays `RESULTS.nonfinite_input`.

    Reverse-mode gradients go through the scan with the model rematerialised per step
    (`jax.checkpoint`): memory is $O(\text{num\_steps})$ copies of $x$ and the
    sampler state, not of the model's activations.

    !!! example

        ```python
        import jax, jaxsolve as js
        gm = js.diffusion.GaussianMixture.example(dim=2)
        sched = js.diffusion.VPSchedule.linear()
        x_T = jax.random.normal(jax.random.key(0), (256, 2))
        labels = jax.numpy.zeros(256, int)
        cfg = js.diffusion.Guidance(gm.model(sched), scale=7.5)
        sol = js.diffusion.sample(gm.model(sched, labels), x_T, sched,
                                  js.diffusion.GHVB(2, 0.5), 8, guidance=cfg)
        print(sol.stats["num_diverged"])
        ```
    """
    if not isinstance(schedule, VPSchedule):
        raise ValueError(
            f"`schedule` must be a jaxsolve.diffusion.VPSchedule, got "
            f"{type(schedule).__name__}."
        )
    if not isinstance(sampler, AbstractSampler):
        raise ValueError(
            "`sampler` must be a jaxsolve.diffusion sampler (DDIM, PLMS, DPMSolverPP, "
            f"HeavyBall, Nesterov, GHVB), got {type(sampler).__name__}."
        )
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise ValueError(f"`num_steps` must be an int, got {num_steps!r}.")
    if num_steps < 1:
        raise ValueError(f"`num_steps` must be >= 1, got {num_steps}.")
    num_steps = int(num_steps)
    if prediction not in _PREDICTIONS:
        raise ValueError(
            f"`prediction` must be one of {_PREDICTIONS}, got {prediction!r}."
        )
    if guidance is not None and not isinstance(guidance, Guidance):
        raise ValueError(
            "`guidance` must be jaxsolve.diffusion.Guidance(unconditional, scale), got "
            f"{type(guidance).__name__}."
        )
    if not callable(model):
        raise ValueError(f"`model` must be callable, got {type(model).__name__}.")
    x_T = jnp.asarray(x_T)
    if not jnp.issubdtype(x_T.dtype, jnp.floating):
        raise ValueError(
            f"`x_T` must be a real floating array, got dtype {x_T.dtype}; cast it with "
            "`x_T.astype(jnp.float32)`."
        )
    if x_T.ndim < 2:
        raise ValueError(
            f"`x_T` must be (batch, ...) with a leading sample axis, got shape "
            f"{x_T.shape}; for one sample pass `x_T[None]`."
        )
    thr = jnp.asarray(divergence_threshold)
    thr_c = concrete_value(thr)
    if thr.shape != () or (thr_c is not None and not float(thr_c) > 0):
        raise ValueError(
            f"`divergence_threshold` must be a positive scalar, got {thr_c}."
        )
    if isinstance(time_grid, str):
        timesteps(schedule, num_steps, time_grid)  # validates the name and size
    else:
        time_grid = timesteps(schedule, num_steps, time_grid)
    t_probe = jax.ShapeDtypeStruct((), x_T.dtype)
    _check_output(model, x_T, t_probe, "model")
    if guidance is not None:
        _check_output(guidance.unconditional, x_T, t_probe, "unconditional model")
    return _sample(
        model,
        x_T,
        schedule,
        sampler,
        num_steps,
        time_grid,
        guidance,
        prediction,
        thr.astype(x_T.dtype),
        throw,
        progress_meter,
    )


def _to_eps(out, x, alpha, sigma, prediction):
    if prediction == "eps":
        return out
    if prediction == "x0":
        return (x - alpha * out) / sigma
    # v = alpha eps - sigma x0 and x = alpha x0 + sigma eps, alpha^2 + sigma^2 = 1.
    return sigma * x + alpha * out


def _per_sample(fn, x, **kwargs):
    # Explicit sizes: `reshape(0, -1)` is ambiguous (an empty batch raised
    # ZeroDivisionError); `kwargs` carry e.g. max's `initial` for empty events.
    flat = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))
    return fn(flat, axis=1, **kwargs)


@eqx.filter_jit
def _sample(
    model,
    x_T,
    schedule,
    sampler,
    num_steps,
    time_grid,
    guidance,
    prediction,
    threshold,
    throw,
    progress_meter,
):
    dtype = x_T.dtype
    grid = timesteps(schedule, num_steps, time_grid)
    t_eval, t_next = sampler._grid(grid)
    n_evals = sampler._num_evaluations(num_steps)
    # Coefficients in the schedule's precision, then in x's dtype.
    cast = lambda a: a.astype(dtype)
    alpha, sigma = cast(schedule.alpha(t_eval)), cast(schedule.sigma(t_eval))
    alpha_n, sigma_n = cast(schedule.alpha(t_next)), cast(schedule.sigma(t_next))
    t_eval = cast(t_eval)

    def eps_fn(x, t, a, s):
        out = model(x, t)
        if guidance is not None:
            w = guidance.scale.astype(dtype)
            out_u = guidance.unconditional(x, t)
            out = out_u + w * (out - out_u)
        return _to_eps(out, x, a, s, prediction)

    # Rematerialise the model in the backward pass: reverse mode then stores only
    # x and the sampler state per step.
    @jax.checkpoint
    def advance(x, state, i):
        c = Coefficients(alpha[i], sigma[i], alpha_n[i], sigma_n[i])
        eps = eps_fn(x, t_eval[i], c.alpha, c.sigma)
        return sampler.step(state, x, eps, c, i, n_evals)

    meter = NoProgressMeter() if progress_meter is None else progress_meter
    fdtype = jnp.asarray(0.0).dtype

    def body(carry, i):
        x, state, max_abs, bad, mstate = carry
        x, state = advance(x, state, i)
        max_abs = jnp.maximum(max_abs, _per_sample(jnp.max, jnp.abs(x), initial=0))
        bad = bad | ~_per_sample(jnp.all, jnp.isfinite(x))
        if not isinstance(meter, NoProgressMeter):
            frac = (i + 1).astype(fdtype) / n_evals
            mstate = meter.step(mstate, jax.lax.stop_gradient(frac))
        return (x, state, max_abs, bad, mstate), None

    start_abs = _per_sample(jnp.max, jnp.abs(x_T), initial=0)
    init = (
        x_T,
        sampler.init(x_T),
        start_abs,
        ~_per_sample(jnp.all, jnp.isfinite(x_T)),
        meter.init(),
    )
    (x, _, max_abs, bad, mstate), _ = jax.lax.scan(
        body, init, jnp.arange(n_evals, dtype=jnp.int32)
    )
    meter.close(mstate)
    bound = threshold * jnp.maximum(jnp.ones((), dtype), start_abs)
    diverged: Bool[Array, " batch"] = bad | ~(max_abs <= bound)
    stats = {
        "num_steps": jnp.array(num_steps, jnp.int32),
        "max_steps": jnp.array(num_steps, jnp.int32),
        "num_model_evaluations": jnp.array(n_evals, jnp.int32),
        "times": grid,
        "diverged": diverged,
        "num_diverged": jnp.sum(diverged).astype(jnp.int32),
        "max_abs": jax.lax.stop_gradient(max_abs),
    }
    inputs: Any = (
        x_T,
        eqx.filter((model, guidance, sampler), eqx.is_inexact_array),
    )
    result = RESULTS.successful
    beta = getattr(sampler, "beta", None)
    if beta is not None:
        # Concrete values were checked at construction; a traced beta outside (0, 1]
        # gives finite but wrong samples, so it is a result code, not a success.
        valid = (beta > 0) & (beta <= 1)
        result = RESULTS.where(valid, result, RESULTS.invalid_parameter)
    return finalise(x, result, stats, inputs, throw)


def ode_reference(
    model: Callable[..., Array],
    x_T: Float[ArrayLike, " batch *event"],
    schedule: VPSchedule,
    *,
    guidance: Guidance | None = None,
    prediction: str = "eps",
    t_start: float | Float[ArrayLike, ""] = 1.0,
    t_end: float | Float[ArrayLike, ""] | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    max_steps: int = 100_000,
) -> Float[Array, " batch *event"]:
    r"""A high-accuracy endpoint of the same probability-flow ODE that
    [`jaxsolve.diffusion.sample`][] integrates, for measuring samplers' errors: float64,
    diffrax `Dopri8` with PID step-size control (`rtol`, `atol`), from `x_T` at
    `t_start` to `t_end` (default `schedule.t_min`).

    Solved in $\lambda$ with $\bar x = x/\alpha$, $d\bar x/d\lambda =
    -e^{-\lambda}\hat\varepsilon(\alpha_\lambda\bar x, t_\lambda)$ with
    $\alpha_\lambda^2 = \mathrm{sigmoid}(2\lambda)$ in closed form, which stays
    smooth for every schedule. The model is called in float64 (a float32 network
    computes in float32 inside). Requires `jax_enable_x64`.
    """
    if jnp.asarray(0.0).dtype != jnp.float64:
        raise ValueError(
            "ode_reference computes in float64: enable it with "
            '`jax.config.update("jax_enable_x64", True)` at start-up.'
        )
    if prediction not in _PREDICTIONS:
        raise ValueError(
            f"`prediction` must be one of {_PREDICTIONS}, got {prediction!r}."
        )
    x_T = jnp.asarray(x_T, jnp.float64)
    if x_T.ndim < 2:
        raise ValueError(f"`x_T` must be (batch, ...), got shape {x_T.shape}.")
    t_end = schedule.t_min if t_end is None else t_end
    lam0 = schedule.lambda_(jnp.asarray(t_start, jnp.float64))
    lam1 = schedule.lambda_(jnp.asarray(t_end, jnp.float64))
    return _ode_reference(
        model, x_T, schedule, guidance, prediction, lam0, lam1, rtol, atol, max_steps
    )


@eqx.filter_jit
def _ode_reference(
    model, x_T, schedule, guidance, prediction, lam0, lam1, rtol, atol, max_steps
):
    import diffrax

    def alpha_sigma(lam):
        # alpha^2 = sigmoid(2 lambda), sigma^2 = sigmoid(-2 lambda)
        a = jnp.exp(-0.5 * jnp.logaddexp(0.0, -2 * lam))
        s = jnp.exp(-0.5 * jnp.logaddexp(0.0, 2 * lam))
        return a, s

    def field(lam, y, args):
        a, s = alpha_sigma(lam)
        x = a * y
        t = schedule.t_of_lambda(lam)
        out = model(x, t)
        if guidance is not None:
            out_u = guidance.unconditional(x, t)
            out = out_u + guidance.scale.astype(x.dtype) * (out - out_u)
        return -jnp.exp(-lam) * _to_eps(out, x, a, s, prediction)

    a0, _ = alpha_sigma(lam0)
    a1, _ = alpha_sigma(lam1)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        diffrax.Dopri8(),
        t0=lam0,
        t1=lam1,
        dt0=None,
        y0=x_T / a0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    return a1 * sol.ys[-1]
