"""Driving a solver over a sequence of systems with an omega policy, as one
compiled `lax.scan`; and replaying a policy on a full-information cost table."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, PyTree

from .._core import AbstractProgressMeter, NoProgressMeter, RESULTS
from ..linear import solve
from ._base import AbstractPolicy


SolverFactory = Callable[[Array], lx.AbstractLinearSolver] | lx.AbstractLinearSolver


def make_solver(solver_factory: SolverFactory, omega: Array) -> lx.AbstractLinearSolver:
    """`solver_factory(omega)`, or a copy of a solver instance with its `omega` field
    replaced (any solver whose parameter is an array field `omega`)."""
    if isinstance(solver_factory, lx.AbstractLinearSolver):
        if not hasattr(solver_factory, "omega"):
            raise ValueError(
                f"{type(solver_factory).__name__} has no `omega` field to tune; pass "
                "a function `omega -> solver` instead."
            )
        old = solver_factory.omega
        return eqx.tree_at(lambda s: s.omega, solver_factory, omega.astype(old.dtype))
    if not callable(solver_factory):
        raise ValueError(
            "`solver_factory` must be a solver with an `omega` field (e.g. "
            "js.linear.SOR(1.0, rtol=1e-8)) or a function omega -> solver, got "
            f"{type(solver_factory).__name__}."
        )
    return solver_factory(omega)


def failure_cost(
    num_steps: Array, result: RESULTS, max_steps: Array | int | None
) -> Int[Array, ""]:
    """The cost a policy sees: the iteration count of a successful solve, and
    `max_steps` for a failed one (a diverging omega often fails in a few sweeps;
    charging the iteration count would reward it)."""
    cap = num_steps if max_steps is None else jnp.asarray(max_steps, num_steps.dtype)
    return jnp.where(result == RESULTS.successful, num_steps, cap)


def num_instances(systems: Any, contexts: Any) -> int:
    if not (isinstance(systems, (tuple, list)) and len(systems) == 2):
        raise ValueError(
            "`systems` must be a pair `(operators, bs)`: a stacked operator (every "
            "array leaf with a leading axis of length T, e.g. from `jax.vmap` over "
            "`js.linear.poisson`) or a (T, n, n) array, and the (T, ...) right-hand "
            "sides."
        )
    operators, bs = systems
    leaves = jax.tree.leaves(bs)
    if not leaves or jnp.ndim(leaves[0]) == 0:
        raise ValueError("`bs` must be stacked along a leading axis of length T.")
    T = jnp.shape(leaves[0])[0]
    for name, tree in (("operators", operators), ("bs", bs), ("contexts", contexts)):
        for leaf in jax.tree.leaves(eqx.filter(tree, eqx.is_array_like)):
            if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != T:
                raise ValueError(
                    f"Every array of `{name}` must have a leading axis of length "
                    f"T = {T} (one entry per system), got shape {jnp.shape(leaf)}."
                )
    if T == 0:
        raise ValueError("The sequence of systems is empty (T = 0).")
    return T


class SequenceSolution(eqx.Module):
    """The output of [`jaxsolve.tuning.solve_sequence`][].

    - `arms`, `omegas`: the grid index and value chosen for each system, `(T,)`.
    - `num_steps`: the solver's iteration count per system, `(T,)`.
    - `costs`: the cost the policy saw: `num_steps`, or `max_steps` for a failed
        solve, `(T,)`.
    - `result`: a batched [`jaxsolve.RESULTS`][], one code per system
        (`sol.result == js.RESULTS.successful` gives a `(T,)` boolean array).
    - `value`: the solution of the last system.
    - `policy_state`: the policy's final state (continue with it on a next chunk).
    """

    arms: Int[Array, " T"]
    omegas: Float[Array, " T"]
    num_steps: Int[Array, " T"]
    costs: Int[Array, " T"]
    result: RESULTS
    value: Array
    policy_state: PyTree


def solve_sequence(
    solver_factory: SolverFactory,
    systems: Any,
    policy: AbstractPolicy,
    key: PRNGKeyArray | None,
    contexts: Float[ArrayLike, " T"] | None = None,
    *,
    x0: Array | None = None,
    warm_start: bool = False,
    rhs_fn: Callable[[Array, Any], Array] | None = None,
    policy_state: PyTree | None = None,
    progress_meter: AbstractProgressMeter | None = None,
) -> SequenceSolution:
    r"""Solve a sequence of linear systems $A_t x_t = b_t$, $t = 1, \dots, T$,
    choosing each relaxation parameter online with `policy`, as one compiled
    `lax.scan`:

    $$(I_t, \omega_t) \sim \text{policy}(c_t), \quad
    x_t = \text{solve}(A_t, b_t; \omega_t), \quad
    \text{policy} \leftarrow \text{update}(I_t, \text{cost}_t, c_t).$$

    The cost is the iteration count (`max_steps` when a solve fails). Everything is
    pure, so `jax.jit` compiles the whole sequence once (new systems, contexts or
    omega grids of the same shapes do not retrace) and `jax.vmap` runs many
    independent sequences or seeds at once; the same key gives the same choices.

    **Arguments:**

    - `solver_factory`: a function `omega -> solver` (e.g.
        `lambda w: js.linear.SOR(w, rtol=1e-8, ordering="natural")`), or a solver
        instance whose `omega` array field is replaced (SOR, SSOR-PCG, any solver
        whose parameter is an array field `omega`).
    - `systems`: `(operators, bs)`: the operators stacked along a leading axis of
        length $T$ (every array leaf; e.g. `jax.vmap(lambda c: js.linear.poisson(
        shape, shift=c))(cs)`, or a `(T, n, n)` array), and the right-hand sides
        `(T, ...)` (or, with `rhs_fn`, any pytree stacked along axis 0).
    - `policy`: [`jaxsolve.tuning.TsallisINF`][], [`jaxsolve.tuning.TsallisINFCB`][],
        [`jaxsolve.tuning.ChebCB`][] or any [`jaxsolve.tuning.AbstractPolicy`][].
    - `key`: PRNG key for `policy.init` (ignored when `policy_state` is given).
    - `contexts`: `(T,)` scalar features, for contextual policies.
    - `x0`: the initial guess of the first system (default zeros).
    - `warm_start`: start each solve from the previous solution (as a time
        stepper would); otherwise from `x0` (or zeros) every time.
    - `rhs_fn`: optional `rhs_fn(x_prev, bs_t) -> b_t`, for simulations whose
        right-hand side depends on the previous solution (e.g. Crank-Nicolson);
        `x_prev` is `x0` (or zeros) at the first step.
    - `policy_state`: continue from this state instead of `policy.init(key)`.
    - `progress_meter`: e.g. `jaxsolve.TextProgressMeter()`: the fraction of the
        $T$ systems solved (works under `jit` and `vmap`); off by default.

    **Returns:** a [`jaxsolve.tuning.SequenceSolution`][]. A failed solve is never
    hidden: its code is in `result`, and the next warm start falls back to the
    previous iterate if the failed one is not finite.

    !!! example

        ```python
        import jax, jax.numpy as jnp, jaxsolve as js, jaxsolve.tuning as jt
        cs = jnp.linspace(0.0, 0.5, 50)
        ops = jax.vmap(lambda c: js.linear.poisson((10, 10), shift=c))(cs)
        bs = jnp.ones((50, 10, 10))
        solver = js.linear.SOR(1.0, rtol=1e-5, ordering="natural")
        out = jt.solve_sequence(solver, (ops, bs), jt.TsallisINF(), jax.random.key(0))
        print(out.costs.sum(), out.omegas[-5:])   # the sweeps used, the omegas
        ```
    """
    if not isinstance(policy, AbstractPolicy):
        raise ValueError(
            "`policy` must be a jaxsolve.tuning policy (TsallisINF, TsallisINFCB, "
            f"ChebCB), got {type(policy).__name__}."
        )
    if contexts is not None:
        contexts = jnp.asarray(contexts)
        if contexts.ndim != 1:
            raise ValueError(f"`contexts` must have shape (T,), got {contexts.shape}.")
    T = num_instances(systems, contexts)
    operators, bs = systems
    if policy_state is None:
        if key is None:
            raise ValueError("Pass a PRNG `key` (or a `policy_state` to continue).")
        policy_state = policy.init(key)

    if rhs_fn is None:
        if not eqx.is_array_like(bs):
            raise ValueError(
                "`bs` must be a (T, ...) array of right-hand sides (or pass `rhs_fn` "
                "to build them from a pytree)."
            )
        first = jnp.asarray(bs)[0]
        start = jnp.zeros_like(first) if x0 is None else jnp.asarray(x0)
    elif x0 is None:
        raise ValueError(
            "With `rhs_fn`, pass `x0` (the state before the first step); it also "
            "fixes the shape of the solutions."
        )
    else:
        start = jnp.asarray(x0)

    meter = NoProgressMeter() if progress_meter is None else progress_meter
    # Meters keep their state in the default float dtype.
    meter_dtype = jnp.asarray(0.0).dtype

    def step(carry, xs):
        pstate, x_prev, mstate = carry
        op, data, c, t = xs
        arm, omega, pstate = policy.select(pstate, c)
        solver = make_solver(solver_factory, omega)
        b = data if rhs_fn is None else rhs_fn(x_prev, data)
        guess = x_prev if warm_start else start
        sol = solve(op, b, solver, x0=guess, throw=False)
        cost = failure_cost(
            sol.stats["num_steps"], sol.result, sol.stats.get("max_steps")
        )
        pstate = policy.update(pstate, arm, cost, c)
        finite = jnp.all(jnp.isfinite(sol.value))
        x_next = jnp.where(finite, sol.value, x_prev)
        out = (arm, omega, sol.stats["num_steps"], cost, sol.result)
        if not isinstance(meter, NoProgressMeter):
            frac = (t + 1).astype(meter_dtype) / T
            mstate = meter.step(mstate, jax.lax.stop_gradient(frac))
        return (pstate, x_next, mstate), out

    # The meter's state rides in the scan carry (as in `bridge.fit`), so it works
    # under `jit` and `vmap`; the meter is closed after the scan.
    ts = jnp.arange(T, dtype=jnp.int32)
    (pstate, x_last, mstate), (arms, omegas, steps, costs, result) = jax.lax.scan(
        step, (policy_state, start, meter.init()), (operators, bs, contexts, ts)
    )
    meter.close(mstate)
    return SequenceSolution(
        arms=arms,
        omegas=omegas,
        num_steps=steps,
        costs=costs,
        result=result,
        value=x_last,
        policy_state=pstate,
    )


class ReplaySolution(eqx.Module):
    """The output of [`jaxsolve.tuning.replay`][]: per round `arms`, `omegas`,
    `costs`, and the final `policy_state`."""

    arms: Int[Array, " T"]
    omegas: Float[Array, " T"]
    costs: Array
    policy_state: PyTree


def replay(
    policy: AbstractPolicy,
    costs: Float[ArrayLike, "T d"] | Int[ArrayLike, "T d"],
    key: PRNGKeyArray,
    contexts: Float[ArrayLike, " T"] | None = None,
) -> ReplaySolution:
    r"""Run a policy against a full-information cost table: at round $t$ it plays
    $I_t$ and sees only `costs[t, I_t]`.

    When a system's cost depends only on the system and $\omega$ (deterministic
    solvers, a trajectory that does not depend on the choices), this gives exactly
    the costs [`jaxsolve.tuning.solve_sequence`][] would, at the price of one table
    ([`jaxsolve.tuning.cost_table`][]) for any number of policies and seeds
    (`jax.vmap` over keys).

    **Arguments:** `policy`; `costs`, `(T, d)` with `d = policy.num_arms`; `key`;
    `contexts`, `(T,)` for contextual policies.
    """
    costs = jnp.asarray(costs)
    if costs.ndim != 2 or costs.shape[1] != policy.num_arms:
        raise ValueError(
            f"`costs` must have shape (T, {policy.num_arms}) (one column per arm), "
            f"got {costs.shape}."
        )
    if contexts is not None:
        contexts = jnp.asarray(contexts)
        if contexts.shape != costs.shape[:1]:
            raise ValueError(
                f"`contexts` must have shape ({costs.shape[0]},), got {contexts.shape}."
            )

    def step(pstate, xs):
        row, c = xs
        arm, omega, pstate = policy.select(pstate, c)
        cost = row[arm]
        pstate = policy.update(pstate, arm, cost, c)
        return pstate, (arm, omega, cost)

    pstate, (arms, omegas, seen) = jax.lax.scan(
        step, policy.init(key), (costs, contexts)
    )
    return ReplaySolution(arms=arms, omegas=omegas, costs=seen, policy_state=pstate)
