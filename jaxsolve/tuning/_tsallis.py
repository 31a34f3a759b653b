"""1/2-Tsallis-INF over a grid of relaxation parameters, and its binned contextual
version Tsallis-INF-CB."""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._base import (
    AbstractPolicy,
    check_arm,
    check_int,
    check_omegas,
    check_range,
    clip_context,
    normalise_cost,
    require_context,
    to_omegas,
    to_range,
)


def tsallis_inf_probabilities(
    losses: Float[ArrayLike, " d"],
    eta: Float[ArrayLike, ""],
    newton_steps: int = 20,
) -> Float[Array, " d"]:
    r"""The 1/2-Tsallis-INF distribution for cumulative loss estimates $\hat L$ and
    learning rate $\eta$:

    $$p_i = \frac{4}{\eta^2 (\hat L_i - x)^2}, \qquad x < \min_i \hat L_i
    \text{ such that } \sum_i p_i = 1.$$

    The normaliser $x$ is found by Newton's method on $f(x) = \sum_i p_i(x) - 1$,
    $x \leftarrow x - (\sum_i p_i - 1) / (\eta \sum_i p_i^{3/2})$ (as $p_i' =
    \eta\, p_i^{3/2}$). $f$ is convex and increasing left of $\min_i \hat L_i$, so
    Newton started right of the root converges monotonically; we start at
    $x_0 = \min_i \hat L_i - 2/\eta$, where $p_{\min} = 1$ and hence $f(x_0) \ge 0$.
    (The authors' code starts at $x_0 = -1$, which can overshoot past
    $\min_i \hat L_i$ once losses are large.) From there the iterates reach the
    root to machine precision in about $\log_{1.5}\sqrt d + 5$ steps; the final
    distribution is renormalised so that it sums to 1 exactly.
    """
    losses = jnp.asarray(losses)
    eta = jnp.asarray(eta, losses.dtype)
    x0 = jnp.min(losses) - 2 / eta

    def probs(x):
        return 4 / (eta * (losses - x)) ** 2

    def newton(_, x):
        p = probs(x)
        step = (jnp.sum(p) - 1) / (eta * jnp.sum(p**1.5))
        # Monotone from the right: never step right, never reach min(losses).
        return jnp.minimum(x - jnp.maximum(step, 0), x)

    x = jax.lax.fori_loop(0, newton_steps, newton, x0)
    p = probs(x)
    return p / jnp.sum(p)


class _Learner(NamedTuple):
    # The arrays of one Tsallis-INF learner (TsallisINFCB holds one per bin).
    loss_sum: Array  # sum_s 1[I_s = i] (cost_s - 1) / p_{s, i}, unnormalised
    cost_sum: Array  # sum of the costs seen
    num_rounds: Array  # number of costs seen


def _learner_init(d: int, dtype: Any) -> _Learner:
    return _Learner(
        loss_sum=jnp.zeros((d,), dtype),
        cost_sum=jnp.zeros((), dtype),
        num_rounds=jnp.zeros((), jnp.int32),
    )


def _eta(learner: _Learner, reduced_variance: bool) -> Array:
    # Rounds are 1-based in the paper: eta_t = 2 / sqrt(t) (4 / sqrt(t) with the
    # reduced-variance estimator, as in Zimmert & Seldin).
    t = (learner.num_rounds + 1).astype(learner.loss_sum.dtype)
    return (4 if reduced_variance else 2) / jnp.sqrt(t)


def _scale(learner: _Learner) -> Array:
    # Scale-free losses: divide by (running mean cost - 1), as the authors' code
    # does, so the same learning rate suits 10-iteration and 10^4-iteration
    # problems. Before the first round (and while every cost was 1) the estimates
    # are all zero and any positive scale gives the uniform distribution.
    dtype = learner.loss_sum.dtype
    t = jnp.maximum(learner.num_rounds, 1).astype(dtype)
    scale = learner.cost_sum / t - 1
    return jnp.where(scale > 0, scale, 1)


def _learner_probabilities(
    learner: _Learner, newton_steps: int, reduced_variance: bool
) -> Array:
    return tsallis_inf_probabilities(
        learner.loss_sum / _scale(learner),
        _eta(learner, reduced_variance),
        newton_steps,
    )


def _learner_update(
    learner: _Learner,
    probs: Array,
    arm: Array,
    cost: Array,
    valid: Array,
    reduced_variance: bool,
) -> _Learner:
    # Importance weighting: E[1[I = i] (cost_i - 1) / p_i] = cost_i - 1 for every
    # arm i, so the cumulative estimate is unbiased whatever the distribution.
    p = jnp.maximum(probs[arm], jnp.finfo(probs.dtype).tiny)
    played = jnp.arange(probs.shape[0]) == arm
    if reduced_variance:
        # Zimmert & Seldin's reduced-variance estimator: a baseline of 1/2 (in
        # normalised units) for arms with p_i >= eta^2; still unbiased,
        # E[B_i + 1[I = i](cost_i - 1 - B_i) / p_i] = cost_i - 1.
        eta = _eta(learner, True)
        baseline = jnp.where(probs >= eta**2, 0.5 * _scale(learner), 0)
        increment = baseline + jnp.where(played, (cost - 1 - baseline) / p, 0)
    else:
        increment = jnp.where(played, (cost - 1) / p, 0)
    new = _Learner(
        loss_sum=learner.loss_sum + increment,
        cost_sum=learner.cost_sum + cost,
        num_rounds=learner.num_rounds + 1,
    )
    return jax.tree.map(lambda n, o: jnp.where(valid, n, o), new, learner)


class TsallisINFState(NamedTuple):
    """State of [`jaxsolve.tuning.TsallisINF`][] (all arrays).

    - `key`: the PRNG key for the next `select`.
    - `loss_sum`: $\\sum_s \\mathbb 1[I_s = i](\\ell_s - 1)/p_{s,i}$ per arm.
    - `cost_sum`, `num_rounds`: sum and number of the costs seen.
    - `probs`: the distribution the last `select` sampled from.
    - `num_invalid`: number of ignored updates (non-finite or negative cost).
    """

    key: PRNGKeyArray
    loss_sum: Float[Array, " d"]
    cost_sum: Float[Array, ""]
    num_rounds: Int[Array, ""]
    probs: Float[Array, " d"]
    num_invalid: Int[Array, ""]


class TsallisINF(AbstractPolicy[TsallisINFState]):
    r"""1/2-Tsallis-INF: an adversarial multi-armed bandit over a grid of
    relaxation parameters, with the iteration count as the only feedback.

    At round $t$ it samples arm $I_t$ from

    $$p_{t,i} = \frac{4}{\eta_t^2 (\hat L_{t,i}/\sigma_t - x_t)^2}, \qquad
    \eta_t = \frac{2}{\sqrt t},$$

    with the normaliser $x_t$ found by Newton's method (see
    [`jaxsolve.tuning.tsallis_inf_probabilities`][]), then updates the
    importance-weighted loss estimate of the played arm,

    $$\hat L_{t+1,I_t} = \hat L_{t,I_t} + \frac{\ell_t - 1}{p_{t,I_t}},$$

    where $\ell_t \ge 1$ is the cost (the iteration count). **Normalisation**: as in
    the authors' code, the estimates are divided by
    $\sigma_t = \bar\ell_t - 1$, the running mean cost minus one, so the effective
    loss $(\ell - 1)/(\bar\ell - 1)$ is of order one whatever the size of the
    problem and no bound on the cost (e.g. `max_steps`, which would make the
    learner needlessly timid) has to be known in advance. Subtracting 1 uses that
    every solve costs at least one iteration. Costs below 1 count as 1; a
    non-finite or negative cost is ignored (the state is unchanged apart from
    `num_invalid`), so the distribution never becomes NaN.

    Its expected total cost approaches that of the best fixed $\omega$ of the grid
    in hindsight, at a regret of $O(\sqrt{d T})$, for any sequence of systems.
    Use it when systems share a good $\omega$ but nothing cheap describes them;
    use [`jaxsolve.tuning.ChebCB`][] when a scalar feature (a diagonal shift, a
    diffusion coefficient) predicts the best $\omega$.

    `reduced_variance=True` switches to Zimmert & Seldin's reduced-variance
    estimator (the default of the authors' later PCGBandit code): $\eta_t =
    4/\sqrt t$ and, for every arm with $p_{t,i} \ge \eta_t^2$, a baseline
    $B = \tfrac12$ (normalised units),
    $\hat L_{t+1,i} = \hat L_{t,i} + B + \mathbb 1[I_t = i](\ell_t - 1 - B)/p_{t,i}$;
    still unbiased, with less variance on the arms it plays most. On the paper's
    synthetic sequence it is slightly better and steadier (see
    `bench/tuning_relax.py`).

    **Arguments:**

    - `omegas`: the grid, strictly increasing, in (0, 2); default
        `linspace(1, 1.95, 20)` (the paper's).
    - `newton_steps`: Newton iterations for the normaliser (default 20).
    - `reduced_variance`: use the reduced-variance estimator (default `False`:
        plain importance weighting with $\eta_t = 2/\sqrt t$, as in the paper).

    **Returns:** a policy with `init(key)`, `select(state, context=None) ->
    (arm, omega, state)` and `update(state, arm, cost, context=None) -> state`
    (`context` is ignored).

    ??? cite "References"

        Zimmert, Seldin, "Tsallis-INF: An Optimal Algorithm for Stochastic and
        Adversarial Bandits", JMLR 22 (2021). Khodak, Chow, Balcan, Talwalkar,
        "Learning to Relax: Setting Solver Parameters Across a Sequence of Linear
        System Instances", ICLR 2024.

    !!! example

        ```python
        import jax, jaxsolve.tuning as jt
        policy = jt.TsallisINF()
        state = policy.init(jax.random.key(0))
        arm, omega, state = policy.select(state)
        state = policy.update(state, arm, 120)    # the solve took 120 sweeps
        ```
    """

    omegas: Float[Array, " d"] = eqx.field(converter=to_omegas, default=None)
    newton_steps: int = eqx.field(default=20, static=True)
    reduced_variance: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        check_omegas("TsallisINF", self.omegas)
        check_int("TsallisINF", "newton_steps", self.newton_steps, 1)

    def init(self, key: PRNGKeyArray) -> TsallisINFState:
        d = self.num_arms
        learner = _learner_init(d, self.omegas.dtype)
        return TsallisINFState(
            key=key,
            loss_sum=learner.loss_sum,
            cost_sum=learner.cost_sum,
            num_rounds=learner.num_rounds,
            probs=jnp.full((d,), 1 / d, self.omegas.dtype),
            num_invalid=jnp.zeros((), jnp.int32),
        )

    def probabilities(
        self, state: TsallisINFState, context: Float[ArrayLike, ""] | None = None
    ) -> Float[Array, " d"]:
        del context
        learner = _Learner(state.loss_sum, state.cost_sum, state.num_rounds)
        return _learner_probabilities(learner, self.newton_steps, self.reduced_variance)

    def select(
        self, state: TsallisINFState, context: Float[ArrayLike, ""] | None = None
    ) -> tuple[Int[Array, ""], Float[Array, ""], TsallisINFState]:
        probs = self.probabilities(state)
        key, sub = jax.random.split(state.key)
        arm = jax.random.choice(sub, self.num_arms, p=probs)
        return arm, self.omegas[arm], state._replace(key=key, probs=probs)

    def update(
        self,
        state: TsallisINFState,
        arm: Int[ArrayLike, ""],
        cost: Float[ArrayLike, ""] | Int[ArrayLike, ""],
        context: Float[ArrayLike, ""] | None = None,
    ) -> TsallisINFState:
        del context
        arm = check_arm(arm, self.num_arms)
        cost, valid = normalise_cost(cost, self.omegas.dtype)
        learner = _Learner(state.loss_sum, state.cost_sum, state.num_rounds)
        learner = _learner_update(
            learner, state.probs, arm, cost, valid, self.reduced_variance
        )
        return state._replace(
            loss_sum=learner.loss_sum,
            cost_sum=learner.cost_sum,
            num_rounds=learner.num_rounds,
            num_invalid=state.num_invalid + (~valid).astype(jnp.int32),
        )


class TsallisINFCBState(NamedTuple):
    """State of [`jaxsolve.tuning.TsallisINFCB`][]: the arrays of
    [`jaxsolve.tuning.TsallisINFState`][] with a leading bin axis, plus `bin`, the
    bin of the last `select`."""

    key: PRNGKeyArray
    loss_sum: Float[Array, "bins d"]
    cost_sum: Float[Array, " bins"]
    num_rounds: Int[Array, " bins"]
    probs: Float[Array, " d"]
    bin: Int[Array, ""]
    num_invalid: Int[Array, ""]


class TsallisINFCB(AbstractPolicy[TsallisINFCBState]):
    r"""Tsallis-INF-CB: one independent [`jaxsolve.tuning.TsallisINF`][] per bin of
    a scalar context.

    The declared range $[a, b]$ is cut into `bins` equal bins with centres
    $a + (b - a)(k + \tfrac12)/m$, $k = 0, \dots, m - 1$; each system goes to the
    bin of the nearest centre (its own running-mean normalisation included), so
    the total cost approaches that of the best *piecewise-constant* map from
    context to $\omega$. A context outside $[a, b]$ is **clipped** to the range
    (it goes to the first or last bin); a non-finite context carries no
    information: `select` draws uniformly at random and `update` ignores the round
    (counted in `num_invalid`).

    Cheap and robust; prefer [`jaxsolve.tuning.ChebCB`][] when the best $\omega$
    varies smoothly with the context (it shares information across contexts).

    **Arguments:**

    - `omegas`: the grid (default `linspace(1, 1.95, 20)`).
    - `bins`: number of context bins (default 5, as in the paper's synthetic runs).
    - `context_range`: `(low, high)`, the range of the context.
    - `newton_steps`: Newton iterations for each bin's normaliser.
    - `reduced_variance`: the estimator of each bin (see
        [`jaxsolve.tuning.TsallisINF`][]).

    ??? cite "References"

        Khodak, Chow, Balcan, Talwalkar, "Learning to Relax: Setting Solver
        Parameters Across a Sequence of Linear System Instances", ICLR 2024.

    !!! example

        ```python
        import jax, jaxsolve.tuning as jt
        policy = jt.TsallisINFCB(bins=5, context_range=(-0.15, 0.65))
        state = policy.init(jax.random.key(0))
        arm, omega, state = policy.select(state, 0.1)
        state = policy.update(state, arm, 80, 0.1)
        ```
    """

    omegas: Float[Array, " d"] = eqx.field(converter=to_omegas, default=None)
    bins: int = eqx.field(default=5, static=True)
    context_range: Float[Array, "2"] = eqx.field(converter=to_range, default=None)
    newton_steps: int = eqx.field(default=20, static=True)
    reduced_variance: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        check_omegas("TsallisINFCB", self.omegas)
        check_int("TsallisINFCB", "bins", self.bins, 1)
        check_range("TsallisINFCB", self.context_range)
        check_int("TsallisINFCB", "newton_steps", self.newton_steps, 1)

    def init(self, key: PRNGKeyArray) -> TsallisINFCBState:
        d, m = self.num_arms, self.bins
        one = _learner_init(d, self.omegas.dtype)
        many = jax.tree.map(lambda x: jnp.broadcast_to(x, (m, *x.shape)), one)
        return TsallisINFCBState(
            key=key,
            loss_sum=many.loss_sum,
            cost_sum=many.cost_sum,
            num_rounds=many.num_rounds,
            probs=jnp.full((d,), 1 / d, self.omegas.dtype),
            bin=jnp.zeros((), jnp.int32),
            num_invalid=jnp.zeros((), jnp.int32),
        )

    def bin_of(self, context: Float[ArrayLike, ""]) -> Int[Array, ""]:
        """The bin of a (clipped) context."""
        context, _ = clip_context(jnp.asarray(context), self.context_range)
        lo, hi = self.context_range[0], self.context_range[1]
        m = self.bins
        centres = lo + (hi - lo) * (jnp.arange(m, dtype=lo.dtype) + 0.5) / m
        return jnp.argmin(jnp.abs(centres - context)).astype(jnp.int32)

    def _learner(self, state: TsallisINFCBState, k: Array) -> _Learner:
        return _Learner(state.loss_sum[k], state.cost_sum[k], state.num_rounds[k])

    def probabilities(
        self, state: TsallisINFCBState, context: Float[ArrayLike, ""] | None = None
    ) -> Float[Array, " d"]:
        context = require_context("TsallisINFCB", context)
        _, valid = clip_context(context, self.context_range)
        k = self.bin_of(context)
        probs = _learner_probabilities(
            self._learner(state, k), self.newton_steps, self.reduced_variance
        )
        uniform = jnp.full_like(probs, 1 / self.num_arms)
        return jnp.where(valid, probs, uniform)

    def select(
        self, state: TsallisINFCBState, context: Float[ArrayLike, ""] | None = None
    ) -> tuple[Int[Array, ""], Float[Array, ""], TsallisINFCBState]:
        probs = self.probabilities(state, context)
        key, sub = jax.random.split(state.key)
        arm = jax.random.choice(sub, self.num_arms, p=probs)
        state = state._replace(key=key, probs=probs, bin=self.bin_of(context))
        return arm, self.omegas[arm], state

    def update(
        self,
        state: TsallisINFCBState,
        arm: Int[ArrayLike, ""],
        cost: Float[ArrayLike, ""] | Int[ArrayLike, ""],
        context: Float[ArrayLike, ""] | None = None,
    ) -> TsallisINFCBState:
        context = require_context("TsallisINFCB", context)
        arm = check_arm(arm, self.num_arms)
        cost, valid_cost = normalise_cost(cost, self.omegas.dtype)
        _, valid_context = clip_context(context, self.context_range)
        valid = valid_cost & valid_context
        k = self.bin_of(context)
        new = _learner_update(
            self._learner(state, k),
            state.probs,
            arm,
            cost,
            valid,
            self.reduced_variance,
        )
        return state._replace(
            loss_sum=state.loss_sum.at[k].set(new.loss_sum),
            cost_sum=state.cost_sum.at[k].set(new.cost_sum),
            num_rounds=state.num_rounds.at[k].set(new.num_rounds),
            num_invalid=state.num_invalid + (~valid).astype(jnp.int32),
        )
