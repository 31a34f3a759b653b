"""Oracles for evaluating omega policies: the full-information cost table, the best
fixed omega in hindsight, the instance-optimal omega, and Young's formula."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .._core import AbstractProgressMeter, NoProgressMeter, RESULTS
from ..linear import jacobi_spectral_radius, solve, young_omega
from ._base import check_omegas, to_omegas
from ._sequence import failure_cost, make_solver, num_instances, SolverFactory


class CostTable(eqx.Module):
    """Full-information costs of every (system, omega) pair.

    - `costs`: `(T, d)` iteration counts, `max_steps` where the solve failed (what
        a policy would have been charged).
    - `num_steps`: `(T, d)` raw iteration counts.
    - `successful`: `(T, d)` booleans.
    """

    costs: Int[Array, "T d"]
    num_steps: Int[Array, "T d"]
    successful: Bool[Array, "T d"]


def _map_with_meter(one, pairs, batch_size, meter):
    """`jax.lax.map(one, pairs, batch_size=batch_size)` (a scan over vmapped batches,
    then the remainder vmapped, as `lax.map` does), with `meter` in the scan carry."""
    if isinstance(meter, NoProgressMeter):
        return jax.lax.map(one, pairs, batch_size=batch_size)
    n = pairs.shape[0]
    size = 1 if batch_size is None else max(1, min(batch_size, n))
    num, rem = divmod(n, size)
    dtype = jnp.asarray(0.0).dtype

    def body(mstate, xs):
        i, chunk = xs
        if batch_size is None:
            out = jax.tree.map(lambda a: a[None], one(chunk[0]))
        else:
            out = jax.vmap(one)(chunk)
        frac = ((i + 1) * size).astype(dtype) / n
        return meter.step(mstate, frac), out

    chunks = pairs[: num * size].reshape(num, size, *pairs.shape[1:])
    mstate, out = jax.lax.scan(body, meter.init(), (jnp.arange(num), chunks))
    out = jax.tree.map(lambda a: a.reshape(num * size, *a.shape[2:]), out)
    if rem:
        tail = jax.vmap(one)(pairs[num * size :])
        out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, tail)
    meter.close(mstate)
    return out


def cost_table(
    solver_factory: SolverFactory,
    systems: Any,
    omegas: Float[ArrayLike, " d"],
    *,
    x0s: Array | None = None,
    batch_size: int | None = None,
    order: Int[ArrayLike, " Td"] | None = None,
    progress_meter: AbstractProgressMeter | None = None,
) -> CostTable:
    r"""Solve every system of a sequence with every omega of a grid: the
    full-information table behind the hindsight oracles (and behind
    [`jaxsolve.tuning.replay`][]).

    The $T d$ solves run as `jax.lax.map` over (system, omega) pairs, `batch_size`
    of them vectorised at a time (a `jax.vmap` of the while loops: each batch runs
    as long as its slowest lane). `order`, a permutation of `range(T * d)` over the
    flattened pairs `t * d + i`, groups pairs of similar cost into the same batch
    (e.g. sorted by a predicted iteration count), which can save most of the work
    when costs vary widely across omegas.

    **Arguments:**

    - `solver_factory`, `systems`: as for [`jaxsolve.tuning.solve_sequence`][]
        (without `rhs_fn`).
    - `omegas`: the grid, `(d,)`.
    - `x0s`: `(T, ...)` initial guesses (e.g. the previous step of a reference
        trajectory, to mimic a warm start); default zeros.
    - `batch_size`, `order`: see above.

    `progress_meter` (e.g. `jaxsolve.TextProgressMeter()`; off by default) shows the
    fraction of the $T d$ solves done, also under `jit`.

    **Returns:** a [`jaxsolve.tuning.CostTable`][].
    """
    omegas = to_omegas(omegas)
    check_omegas("cost_table", omegas)
    T = num_instances(systems, None)
    operators, bs = systems
    bs = jnp.asarray(bs)
    d = omegas.shape[0]
    if x0s is not None and jnp.shape(x0s) != bs.shape:
        raise ValueError(f"`x0s` must have shape {bs.shape}, got {jnp.shape(x0s)}.")
    pairs = jnp.arange(T * d)
    if order is not None:
        order = jnp.asarray(order)
        if order.shape != (T * d,):
            raise ValueError(f"`order` must have shape ({T * d},), got {order.shape}.")
        pairs = order

    def one(k):
        t, i = k // d, k % d
        op = jax.tree.map(lambda x: x[t], operators)
        b = bs[t]
        x0 = jnp.zeros_like(b) if x0s is None else x0s[t]
        sol = solve(op, b, make_solver(solver_factory, omegas[i]), x0=x0, throw=False)
        steps = sol.stats["num_steps"]
        cost = failure_cost(steps, sol.result, sol.stats.get("max_steps"))
        return cost, steps, sol.result == RESULTS.successful

    meter = NoProgressMeter() if progress_meter is None else progress_meter
    cost, steps, ok = _map_with_meter(one, pairs, batch_size, meter)
    inverse = jnp.zeros_like(pairs).at[pairs].set(jnp.arange(T * d))
    reshape = lambda a: a[inverse].reshape(T, d)
    return CostTable(
        costs=reshape(cost), num_steps=reshape(steps), successful=reshape(ok)
    )


def best_fixed(
    costs: Float[ArrayLike, "T d"] | Int[ArrayLike, "T d"],
) -> tuple[Int[Array, ""], Array]:
    """The best fixed arm in hindsight, $\\arg\\min_i \\sum_t \\ell_{t,i}$, and its
    total cost."""
    totals = jnp.sum(jnp.asarray(costs), axis=0)
    arm = jnp.argmin(totals)
    return arm, totals[arm]


def instance_optimal(
    costs: Float[ArrayLike, "T d"] | Int[ArrayLike, "T d"],
) -> tuple[Int[Array, " T"], Array]:
    """The instance-optimal arms $\\arg\\min_i \\ell_{t,i}$ (the first on ties) and
    their total cost $\\sum_t \\min_i \\ell_{t,i}$."""
    costs = jnp.asarray(costs)
    arms = jnp.argmin(costs, axis=1)
    return arms, jnp.sum(jnp.min(costs, axis=1))


def hindsight_ratio(
    costs: Float[ArrayLike, " T"] | Int[ArrayLike, " T"],
    table: Float[ArrayLike, "T d"] | Int[ArrayLike, "T d"],
) -> Float[Array, " T"]:
    """The learning curve: cumulative cost of a policy over the first $N$ systems
    divided by that of the best fixed arm in hindsight *on the same prefix*, for
    $N = 1, \\dots, T$."""
    costs = jnp.asarray(costs)
    table = jnp.asarray(table)
    dtype = jnp.zeros(()).dtype
    mine = jnp.cumsum(costs.astype(dtype))
    best = jnp.min(jnp.cumsum(table.astype(dtype), axis=0), axis=1)
    return mine / best


def young_omegas(operators: Any) -> Float[Array, " T"]:
    r"""Young's $\omega^\star = 2/(1 + \sqrt{1 - \rho_J^2})$ for each operator of a
    stacked sequence ([`jaxsolve.linear.young_omega`][] under `jax.vmap`).

    Optimal for consistently ordered matrices with a real Jacobi spectrum,
    $\rho_J < 1$ (the 5/7-point stencils in natural or red-black order, any
    positive shift); then the per-instance optimum of the asymptotic SOR rate.
    Not applicable to SSOR-PCG, whose best omega is usually much smaller.
    """
    return jax.vmap(lambda op: young_omega(jacobi_spectral_radius(op)))(operators)
