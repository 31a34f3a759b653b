r"""Multistep samplers for the probability-flow ODE, and heavy-ball momentum on them.

All samplers are small `eqx.Module`s (configuration); the evolving state is a dict of
arrays threaded through [`jaxsolve.diffusion.sample`][]. One model evaluation per
step: the driver evaluates $\hat\varepsilon_n = \hat\varepsilon(x_n, t_n)$ and calls
`sampler.step(state, x_n, eps_n, coefficients, n, num_steps)`.

Two update forms:

- **DDIM variables** (DDIM, PLMS, heavy ball on them, GHVB): with $\bar x = x/\alpha$
  and $\bar\sigma = \sigma/\alpha = e^{-\lambda}$ the probability-flow ODE is
  $d\bar x / d\bar\sigma = \hat\varepsilon$ and every step is
  $\bar x_{n+1} = \bar x_n + (\bar\sigma_{n+1} - \bar\sigma_n)\, u_n$ for a combined
  slope $u_n$ (DDIM: $u_n = \hat\varepsilon_n$).
- **Data prediction** (DPM-Solver++): with $\hat x_0 = (x - \sigma\hat\varepsilon)/
  \alpha$ and $h = \lambda_{n+1} - \lambda_n$, $x_{n+1} = (\sigma_{n+1}/\sigma_n)
  x_n - \alpha_{n+1}(e^{-h} - 1)\, u_n$.
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._core._misc import concrete_value


State = dict[str, Any]


class Coefficients(eqx.Module):
    r"""$\alpha, \sigma$ at the current time $t_n$ and the next $t_{n+1}$ of a step
    (scalar arrays in the dtype of $x$)."""

    alpha: Float[Array, ""]
    sigma: Float[Array, ""]
    alpha_next: Float[Array, ""]
    sigma_next: Float[Array, ""]

    @property
    def lam(self):
        return jnp.log(self.alpha) - jnp.log(self.sigma)

    @property
    def lam_next(self):
        return jnp.log(self.alpha_next) - jnp.log(self.sigma_next)


def _check_beta(beta, name="beta"):
    b = concrete_value(beta)
    if b is None:
        return
    if b.shape != ():
        raise ValueError(f"`{name}` must be a scalar, got shape {b.shape}.")
    if not jnp.issubdtype(b.dtype, jnp.floating) and not jnp.issubdtype(
        b.dtype, jnp.integer
    ):
        raise ValueError(f"`{name}` must be a real number, got dtype {b.dtype}.")
    if not (0 < float(b) <= 1):
        raise ValueError(
            f"`{name}` must lie in (0, 1] (1 = no momentum; smaller = more damping and "
            f"stability), got {float(b)}."
        )


def as_number(value, name):
    """`jnp.asarray(value)`, with our message for what JAX cannot convert."""
    try:
        return jnp.asarray(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a real number, got {value!r}.") from None


def _to_beta(beta):
    beta = as_number(beta, "beta")
    if jnp.issubdtype(beta.dtype, jnp.integer):
        beta = beta.astype(jnp.asarray(0.0).dtype)
    # A traced beta (a sweep under jit/vmap) cannot be checked here; `sample`
    # reports one outside (0, 1] as `RESULTS.invalid_parameter`, per lane.
    return beta


def _check_order(order, allowed, cls):
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise ValueError(
            f"`order` of {cls} must be an int in {allowed}, got {order!r}."
        )
    if order not in allowed:
        raise ValueError(f"{cls} supports order in {allowed}, got {order}.")


def ab_coefficients(order: int, b: Float[ArrayLike, ""]) -> Float[Array, "k k"]:
    r"""The generalised Adams-Bashforth weights $c_j(b)$ of GHVB, as a table: row
    $m$ holds the weights of order $m+1$ (newest first, zero-padded to `order`).

    $b = 1$ gives classical Adams-Bashforth ($\tfrac32, -\tfrac12$;
    $\tfrac{23}{12}, -\tfrac{16}{12}, \tfrac5{12}$; ...). For $b \in (0, 1]$ the
    combination $\bar x_{n+1} = \bar x_n + h\sum_j c_j(b)\, v_{n+1-j}$ with
    $v_{n+1} = (1 - b) v_n + b\,\varepsilon_n$ is a linear multistep method of order
    $k$ (characteristic polynomial $\rho(\zeta) = (\zeta - 1)(\zeta - 1 + b)
    \zeta^{k-1}$); the weights always sum to one.
    """
    b = jnp.asarray(b)
    one = jnp.ones_like(b)
    rows = [
        [one],
        [(2 + b) / (2 * b), -(2 - b) / (2 * b)],
        [(18 + 5 * b) / (12 * b), -(24 - 8 * b) / (12 * b), (6 - b) / (12 * b)],
        [
            (46 + 9 * b) / (24 * b),
            -(78 - 19 * b) / (24 * b),
            (42 - 5 * b) / (24 * b),
            -(10 - b) / (24 * b),
        ],
    ][:order]
    zero = jnp.zeros_like(b)
    return jnp.stack([jnp.stack(r + [zero] * (order - len(r))) for r in rows])


def _combine(table, hist, count):
    """`sum_j table[min(count, k) - 1, j] * hist[j]` (warm start: lower orders while
    the history fills up)."""
    k = table.shape[0]
    w = table[jnp.clip(count, 1, k) - 1].astype(hist.dtype)
    return jnp.tensordot(w, hist, axes=1)


def _push(hist, value):
    return jnp.concatenate([value[None], hist[:-1]], axis=0)


def _ddim_update(x, u, c: Coefficients):
    # x_{n+1} = alpha' (x/alpha + (sigma'/alpha' - sigma/alpha) u)
    return (c.alpha_next / c.alpha) * x + (
        c.sigma_next - c.alpha_next * c.sigma / c.alpha
    ) * u


class AbstractSampler(eqx.Module):
    """A sampler for the probability-flow ODE (one model evaluation per step).

    Subclasses implement `init(x) -> state` and `step(state, x, eps, coefficients,
    index, num_steps) -> (x_next, state)`; `index` is the step number $n$ (an int32
    array), `num_steps` the static number of steps.
    """

    def init(self, x: Array) -> State:
        raise NotImplementedError

    def step(
        self,
        state: State,
        x: Array,
        eps: Array,
        c: Coefficients,
        index: Int[Array, ""],
        num_steps: int,
    ) -> tuple[Array, State]:
        raise NotImplementedError

    def _grid(self, grid):
        """The times at which the model is evaluated and the step targets."""
        return grid[:-1], grid[1:]

    def _num_evaluations(self, num_steps: int) -> int:
        return num_steps


class AbstractMultistepSampler(AbstractSampler):
    """A sampler whose step is a fixed linear update with a combined slope $u_n$
    (`_slope`) — what [`jaxsolve.diffusion.HeavyBall`][] averages."""

    def _slope(self, state, x, eps, c, index, num_steps):
        """Returns `(u, exempt, state)`: `exempt` marks a step the base method takes at
        first order by design after the start (momentum does not enter it)."""
        raise NotImplementedError

    def _apply(self, x, u, c):
        return _ddim_update(x, u, c)

    def step(self, state, x, eps, c, index, num_steps):
        u, _, state = self._slope(state, x, eps, c, index, num_steps)
        return self._apply(x, u, c), state


class DDIM(AbstractMultistepSampler):
    r"""DDIM (deterministic, $\eta = 0$): the exponential-integrator Euler step

    $$x_{n+1} = \alpha_{n+1}\hat x_0 + \sigma_{n+1}\hat\varepsilon_n, \qquad
    \hat x_0 = (x_n - \sigma_n \hat\varepsilon_n)/\alpha_n,$$

    i.e. Euler in the DDIM variables, $\bar x_{n+1} = \bar x_n + (\bar\sigma_{n+1} -
    \bar\sigma_n)\hat\varepsilon_n$. First order; the most stable of the family.

    ??? cite "References"

        Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.

    !!! example

        ```python
        import jax, jaxsolve as js
        gm = js.diffusion.GaussianMixture.example(dim=2)
        sched = js.diffusion.VPSchedule.linear()
        x_T = jax.random.normal(jax.random.key(0), (16, 2))
        sol = js.diffusion.sample(gm.model(sched), x_T, sched, js.diffusion.DDIM(), 20)
        ```
    """

    def init(self, x):
        return {}

    def _slope(self, state, x, eps, c, index, num_steps):
        return eps, jnp.array(False), state


class PLMS(AbstractMultistepSampler):
    r"""Pseudo linear multistep (PLMS): Adams-Bashforth of order $k$ in the DDIM
    variables,

    $$\bar x_{n+1} = \bar x_n + (\bar\sigma_{n+1} - \bar\sigma_n)\sum_{j=1}^{k}
    c_j\,\hat\varepsilon_{n+1-j},$$

    with the classical AB weights on the time grid's step index (fixed coefficients,
    as in PNDM/diffusers; on a grid that is not uniform in $\bar\sigma$ the order
    drops to two).

    `start="lower_order"` (default; the momentum paper's code): steps $0, 1, \dots$
    use orders $1, 2, \dots$ until the history is full. The Euler first step caps
    the global order at two. `start="pndm"`: diffusers' `PNDMScheduler(
    skip_prk_steps=True)` — the first step is Heun's (two model evaluations, so
    `num_steps` steps cost `num_steps + 1` evaluations), then AB2, AB3, ... with the
    history of the accepted points.

    **Arguments:** `order` in 1..4 (1 = DDIM); `start`.

    ??? cite "References"

        Liu, Ren, Lin, Zhao, "Pseudo Numerical Methods for Diffusion Models on
        Manifolds", ICLR 2022.

    !!! example

        ```python
        import jax, jaxsolve as js
        gm = js.diffusion.GaussianMixture.example(dim=2)
        sched = js.diffusion.VPSchedule.linear()
        x_T = jax.random.normal(jax.random.key(0), (16, 2))
        sol = js.diffusion.sample(gm.model(sched), x_T, sched, js.diffusion.PLMS(4), 20)
        ```
    """

    order: int = eqx.field(default=4, static=True)
    start: str = eqx.field(default="lower_order", static=True)

    def __check_init__(self):
        _check_order(self.order, (1, 2, 3, 4), "PLMS")
        if self.start not in ("lower_order", "pndm"):
            raise ValueError(
                f"`start` must be 'lower_order' or 'pndm', got {self.start!r}."
            )

    def init(self, x):
        state = {
            "hist": jnp.zeros((self.order,) + x.shape, x.dtype),
            "count": jnp.array(0, jnp.int32),
        }
        if self.start == "pndm":
            zero = jnp.zeros((), x.dtype)
            state["x0"] = jnp.zeros_like(x)
            state["c0"] = Coefficients(zero, zero, zero, zero)
        return state

    def _slope(self, state, x, eps, c, index, num_steps):
        if self.start == "pndm":
            raise ValueError(
                "Momentum wrappers need PLMS(start='lower_order'); the PNDM start "
                "redoes its first step."
            )
        hist = _push(state["hist"], eps)
        count = state["count"] + 1
        table = ab_coefficients(self.order, jnp.ones((), x.dtype))
        u = _combine(table, hist, count)
        return u, jnp.array(False), {"hist": hist, "count": count}

    def step(self, state, x, eps, c, index, num_steps):
        if self.start == "lower_order":
            return super().step(state, x, eps, c, index, num_steps)
        # PNDM start: step 0 is Euler (kept as a predictor), step 1 evaluates at the
        # predicted point, averages (Heun) and redoes step 0 from the saved point; the
        # evaluation at the predictor is not kept in the history (as diffusers).
        first, redo = index == 0, index == 1
        hist = jnp.where(redo, state["hist"], _push(state["hist"], eps))
        count = jnp.where(redo, state["count"], state["count"] + 1)
        table = ab_coefficients(self.order, jnp.ones((), x.dtype))
        u = _combine(table, hist, count)
        u = jnp.where(redo, 0.5 * (state["hist"][0] + eps), u)
        x_from = jnp.where(redo, state["x0"], x)
        pick = lambda cond, a, b: jax.tree.map(lambda p, q: jnp.where(cond, p, q), a, b)
        x_next = _ddim_update(x_from, u, pick(redo, state["c0"], c))
        new = {
            "hist": hist,
            "count": count,
            "x0": jnp.where(first, x, state["x0"]),
            "c0": pick(first, c, state["c0"]),
        }
        return x_next, new

    def _grid(self, grid):
        if self.start == "lower_order":
            return grid[:-1], grid[1:]
        # Evaluate at t_0, t_1 (predictor), t_1, t_2, ...; step 1 "targets" t_1 again.
        t_eval = jnp.concatenate([grid[:2], grid[1:-1]])
        t_next = jnp.concatenate([grid[1:2], grid[1:]])
        return t_eval, t_next

    def _num_evaluations(self, num_steps):
        return num_steps + (self.start == "pndm")


class DPMSolverPP(AbstractMultistepSampler):
    r"""Multistep DPM-Solver++ (data prediction; "2M" for `order=2`).

    With $\hat x_{0,n} = (x_n - \sigma_n\hat\varepsilon_n)/\alpha_n$,
    $h_n = \lambda_{n+1} - \lambda_n$ and $r_n = h_{n-1}/h_n$,

    $$x_{n+1} = \frac{\sigma_{n+1}}{\sigma_n} x_n - \alpha_{n+1}(e^{-h_n} - 1)\,
    D_n, \qquad D_n = \hat x_{0,n} + \frac{1}{2 r_n}(\hat x_{0,n} -
    \hat x_{0,n-1}),$$

    ("midpoint" form of diffusers' `DPMSolverMultistepScheduler`). The first step is
    first order ($D_0 = \hat x_{0,0}$); with `lower_order_final=True` so is the last,
    which stabilises the stiff end of the trajectory at low step counts. Unlike
    diffusers, which applies `lower_order_final` only below 15 steps, ours applies it
    whenever it is set.

    **Arguments:** `order` in {1, 2} (1 = DDIM); `lower_order_final`.

    ??? cite "References"

        Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver++: Fast Solver for Guided Sampling of
        Diffusion Probabilistic Models", 2022 (arXiv:2211.01095).

    !!! example

        ```python
        import jax, jaxsolve as js
        gm = js.diffusion.GaussianMixture.example(dim=2)
        sched = js.diffusion.VPSchedule.linear()
        x_T = jax.random.normal(jax.random.key(0), (16, 2))
        sol = js.diffusion.sample(gm.model(sched), x_T, sched, js.diffusion.DPMSolverPP(), 10)
        ```
    """

    order: int = eqx.field(default=2, static=True)
    lower_order_final: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        _check_order(self.order, (1, 2), "DPMSolverPP")
        if not isinstance(self.lower_order_final, bool):
            raise ValueError(
                f"`lower_order_final` must be a bool, got {self.lower_order_final!r}."
            )

    def init(self, x):
        return {"m_prev": jnp.zeros_like(x), "lam_prev": jnp.zeros((), x.dtype)}

    def _slope(self, state, x, eps, c, index, num_steps):
        m0 = (x - c.sigma * eps) / c.alpha
        h = c.lam_next - c.lam
        first = index == 0
        final_low = self.lower_order_final & (index == num_steps - 1)
        low = first | final_low | (self.order == 1)
        # `where` on the denominator, not only the result: no NaN in unused branches
        # (their gradients would poison the used ones).
        h_prev = jnp.where(low, jnp.ones_like(h), c.lam - state["lam_prev"])
        d = m0 + (0.5 * h / h_prev) * (m0 - state["m_prev"])
        u = jnp.where(low, m0, d)
        exempt = final_low & ~first
        return u, exempt, {"m_prev": m0, "lam_prev": c.lam}

    def _apply(self, x, u, c):
        h = c.lam_next - c.lam
        return (c.sigma_next / c.sigma) * x - c.alpha_next * jnp.expm1(-h) * u


class HeavyBall(AbstractMultistepSampler):
    r"""Polyak heavy-ball momentum on a multistep sampler's combined slope.

    If the base method steps with slope $u_n$ (PLMS: the Adams-Bashforth combination
    $\sum_j c_j\hat\varepsilon_{n+1-j}$; DPM-Solver++: $D_n$), heavy ball steps with

    $$v_{n+1} = (1 - \beta)\, v_n + \beta\, u_n, \qquad v_1 = u_0,$$

    so the first step is the base method's. $\beta = 1$ recovers the base method
    exactly; $\beta < 1$ damps the oscillating modes: on AB-$k$ the real-axis
    stability interval grows by the factor $(2 - \beta)/\beta$, at the price of first
    order convergence. Steps that the base method takes at first order by design
    (DPM-Solver++'s `lower_order_final`) are left without momentum, as in the
    authors' code; the momentum on DPM-Solver++ starts from $v_1 = \hat x_{0,0}$
    (their pixel-space code's convention).

    **Arguments:**

    - `base`: [`jaxsolve.diffusion.DDIM`][], [`jaxsolve.diffusion.PLMS`][] (with
        `start="lower_order"`) or [`jaxsolve.diffusion.DPMSolverPP`][].
    - `beta`: momentum parameter in (0, 1], an array (new values do not recompile).

    ??? cite "References"

        Wizadwongsa, Chinchuthakun, Khungurn, Raj, Suwajanakorn, "Diffusion Sampling
        with Momentum for Mitigating Divergence Artifacts", ICLR 2024.

    !!! example

        ```python
        import jax, jaxsolve as js
        gm = js.diffusion.GaussianMixture.example(dim=2)
        sched = js.diffusion.VPSchedule.linear()
        x_T = jax.random.normal(jax.random.key(0), (16, 2))
        hb = js.diffusion.HeavyBall(js.diffusion.PLMS(4), beta=0.8)
        sol = js.diffusion.sample(gm.model(sched), x_T, sched, hb, 10)
        ```
    """

    base: AbstractSampler
    beta: Float[Array, ""] = eqx.field(converter=_to_beta)

    def __check_init__(self):
        if not isinstance(self.base, AbstractMultistepSampler) or isinstance(
            self.base, (HeavyBall, GHVB)
        ):
            raise ValueError(
                f"{type(self).__name__} wraps DDIM, PLMS or DPMSolverPP, got "
                f"{type(self.base).__name__}."
            )
        if isinstance(self.base, PLMS) and self.base.start != "lower_order":
            raise ValueError(
                "Momentum wrappers need PLMS(start='lower_order'); the PNDM start "
                "redoes its first step."
            )
        _check_beta(self.beta)

    def init(self, x):
        return {"base": self.base.init(x), "v": jnp.zeros_like(x)}

    def _velocity(self, state, x, eps, c, index, num_steps):
        u, exempt, base_state = self.base._slope(
            state["base"], x, eps, c, index, num_steps
        )
        beta = self.beta.astype(x.dtype)
        v = jnp.where(index == 0, u, (1 - beta) * state["v"] + beta * u)
        return u, v, exempt, {"base": base_state, "v": v}

    def _slope(self, state, x, eps, c, index, num_steps):
        u, v, exempt, state = self._velocity(state, x, eps, c, index, num_steps)
        return jnp.where(exempt, u, v), exempt, state

    def _apply(self, x, u, c):
        return self.base._apply(x, u, c)


class Nesterov(HeavyBall):
    r"""The Nesterov variant of [`jaxsolve.diffusion.HeavyBall`][]: the same
    velocity $v_{n+1} = (1-\beta)v_n + \beta u_n$, but the step uses the look-ahead
    slope $(1 - \beta)\, v_{n+1} + \beta\, u_n$. $\beta = 1$ recovers the base
    method.

    ??? cite "References"

        Wizadwongsa et al., "Diffusion Sampling with Momentum for Mitigating Divergence
        Artifacts", ICLR 2024 (the `PLMSWithNT` scheduler of the authors' code).

    !!! example

        ```python
        import jax, jaxsolve as js
        gm = js.diffusion.GaussianMixture.example(dim=2)
        sched = js.diffusion.VPSchedule.linear()
        x_T = jax.random.normal(jax.random.key(0), (16, 2))
        nt = js.diffusion.Nesterov(js.diffusion.PLMS(4), beta=0.8)
        sol = js.diffusion.sample(gm.model(sched), x_T, sched, nt, 10)
        ```
    """

    def _slope(self, state, x, eps, c, index, num_steps):
        u, v, exempt, state = self._velocity(state, x, eps, c, index, num_steps)
        beta = self.beta.astype(x.dtype)
        return jnp.where(exempt, u, (1 - beta) * v + beta * u), exempt, state


class GHVB(AbstractSampler):
    r"""Generalised heavy ball (GHVB): momentum on $\hat\varepsilon$, then a
    $\beta$-dependent Adams-Bashforth combination of the velocities,

    $$v_{n+1} = (1 - \beta) v_n + \beta\,\hat\varepsilon_n \;(v_1 = \hat\varepsilon_0),
    \qquad \bar x_{n+1} = \bar x_n + (\bar\sigma_{n+1} - \bar\sigma_n)
    \sum_{j=1}^{k} c_j(\beta)\, v_{n+2-j},$$

    with the weights of [`jaxsolve.diffusion.ab_coefficients`][] (lower orders while
    the history fills). Eliminating $v$ gives a linear multistep method of order $k$
    for every $\beta$; $\beta = 1$ is PLMS-$k$ and $k = 1$ is heavy ball on DDIM.
    GHVB trades less stability than [`jaxsolve.diffusion.HeavyBall`][] for keeping
    the order (AB4's real stability interval 0.30 grows to 0.353 at $\beta = 0.8$).

    **Arguments:** `order` $k$ in 1..4; `beta` in (0, 1], an array. The paper's
    single "order number" (3.8 = order 4, $\beta$ 0.8) is read by
    [`jaxsolve.diffusion.GHVB.from_order_number`][].

    ??? cite "References"

        Wizadwongsa, Chinchuthakun, Khungurn, Raj, Suwajanakorn, "Diffusion Sampling
        with Momentum for Mitigating Divergence Artifacts", ICLR 2024.

    !!! example

        ```python
        import jax, jaxsolve as js
        gm = js.diffusion.GaussianMixture.example(dim=2)
        sched = js.diffusion.VPSchedule.linear()
        x_T = jax.random.normal(jax.random.key(0), (16, 2))
        ghvb = js.diffusion.GHVB.from_order_number(3.8)  # GHVB(4, beta=0.8)
        sol = js.diffusion.sample(gm.model(sched), x_T, sched, ghvb, 10)
        ```
    """

    order: int = eqx.field(static=True)
    beta: Float[Array, ""] = eqx.field(converter=_to_beta)

    def __check_init__(self):
        _check_order(self.order, (1, 2, 3, 4), "GHVB")
        _check_beta(self.beta)

    @classmethod
    def from_order_number(cls, number: float | int) -> "GHVB":
        r"""The paper's "order number": $k = \lceil \text{number} \rceil$ and
        $\beta$ = its fractional part (1 when it is an integer), e.g. 3.8 is
        GHVB(4, 0.8), 1.5 is GHVB(2, 0.5), 4.0 is GHVB(4, 1) = PLMS4."""
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError(f"The order number must be a number, got {number!r}.")
        if not 0 < number <= 4:
            raise ValueError(
                f"The order number must lie in (0, 4] (e.g. 3.8 = order 4, beta 0.8), "
                f"got {number}."
            )
        k = math.ceil(number)
        beta = round(number - (k - 1), 12)
        return cls(k, beta)

    @property
    def order_number(self) -> float:
        """`order - 1 + beta` (needs a concrete `beta`)."""
        return self.order - 1 + float(self.beta)

    def init(self, x):
        return {
            "hist": jnp.zeros((self.order,) + x.shape, x.dtype),
            "count": jnp.array(0, jnp.int32),
            "v": jnp.zeros_like(x),
        }

    def step(self, state, x, eps, c, index, num_steps):
        beta = self.beta.astype(x.dtype)
        v = jnp.where(index == 0, eps, (1 - beta) * state["v"] + beta * eps)
        hist = _push(state["hist"], v)
        count = state["count"] + 1
        u = _combine(ab_coefficients(self.order, beta), hist, count)
        return _ddim_update(x, u, c), {"hist": hist, "count": count, "v": v}
