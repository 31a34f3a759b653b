"""`jaxsolve.bilevel.solve`: the one driver of the bilevel solvers."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import PyTree

from .._core import AbstractProgressMeter, finalise, iterate, RESULTS, Solution
from ._base import AbstractBilevelSolver, check_int
from ._problem import BilevelProblem


def solve(
    problem: BilevelProblem,
    solver: AbstractBilevelSolver,
    x0: PyTree,
    y0: PyTree,
    *,
    max_steps: int,
    throw: bool = True,
    progress_meter: AbstractProgressMeter | None = None,
) -> Solution:
    r"""Run a bilevel solver ([`jaxsolve.bilevel.LVHBA`][],
    [`jaxsolve.bilevel.Penalty`][], [`jaxsolve.bilevel.VPBGD`][]) on a
    [`jaxsolve.bilevel.BilevelProblem`][].

    **Arguments:**

    - `problem`, `solver`: what to solve and how.
    - `x0`, `y0`: the start (pytrees of floating arrays, one dtype). An infeasible
        start is projected onto the joint set $C$ first; `stats["start_projection"]`
        is the distance moved (0 for a feasible start).
    - `max_steps`: iteration budget (static). With the solver's `tol = 0` (default)
        exactly `max_steps` steps run and the result is `successful`; with `tol > 0`
        the solve stops early once the stationarity residual and the value-function
        gap are below `tol`, and reports `max_steps_reached` if they never are.
    - `throw`: raise on failure (under `jit` too); `False` returns the code.
    - `progress_meter`: e.g. `jaxsolve.TextProgressMeter()`.

    **Returns:** a [`jaxsolve.Solution`][] with `value = (x, y)`; `stats`:
    `num_steps`, `max_steps`, `stationarity`, `value_gap` (for LV-HBA $f -
    v_\gamma$; for the penalty methods $f(x, y) - f(x, z)$), `constraint_violation`
    ($\max$ violation of $(x, y) \in C$), `start_projection`; `state`: the solver's
    final state (flat vectors).

    Result codes: `successful`; `max_steps_reached` (only with `tol > 0`);
    `nonfinite_input` (NaN/Inf in `x0`, `y0`, the solver's parameters, or in
    $F$, $f$ at the start); `nonfinite` (the iteration diverged: the loop stops at
    the first non-finite iterate; reduce the step sizes).

    The problem's functions are static for `jit`: define them once and reuse the
    problem object; new start points, set bounds or step sizes reuse the compiled
    solve.
    """
    if not isinstance(problem, BilevelProblem):
        raise TypeError(
            f"`problem` must be a jaxsolve.bilevel.BilevelProblem, got "
            f"{type(problem).__name__}."
        )
    if not isinstance(solver, AbstractBilevelSolver):
        raise TypeError(
            "`solver` must be a jaxsolve.bilevel solver (LVHBA, Penalty, VPBGD), got "
            f"{type(solver).__name__}."
        )
    check_int(max_steps, "max_steps", "solve")
    problem.check(x0, y0)
    problem.check_affine(x0, y0)
    structure = problem.projection_structure(x0, y0)
    return _solve(problem, solver, x0, y0, max_steps, throw, progress_meter, structure)


@eqx.filter_jit
def _solve(problem, solver, x0, y0, max_steps, throw, progress_meter, structure):
    flat = problem.flatten(x0, y0, solver.qp_steps, structure)
    xf, yf = ravel_pytree(x0)[0], ravel_pytree(y0)[0]
    v0 = jnp.concatenate([xf, yf])
    duals0 = jnp.zeros((flat.joint.num_duals,), v0.dtype)
    # An infeasible start is projected (a cold QP solve when C needs one).
    cold = flat.joint.poly.steps if flat.joint.poly else 10 * solver.qp_steps
    v, duals = flat.joint(v0, duals0, cold)
    start_projection = jnp.linalg.norm(v - v0)
    x, y = flat.split(v)
    state = solver.init(flat, x, y, duals)

    def finite(s):
        leaves = jax.tree_util.tree_leaves(eqx.filter(s, eqx.is_inexact_array))
        return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves if a.size]))

    def cond(s):
        return ~solver.converged(s) & finite_iterate(s)

    def finite_iterate(s):
        return jnp.all(jnp.isfinite(s["x"])) & jnp.all(jnp.isfinite(s["y"]))

    final, num_steps = iterate(
        lambda s: solver.step(flat, s),
        cond,
        state,
        max_steps,
        progress_meter=progress_meter,
        progress=lambda s: jnp.zeros(()),
    )
    ok = solver.converged(final) | (solver.tol == 0)
    result = RESULTS.where(ok, RESULTS.successful, RESULTS.max_steps_reached)
    result = RESULTS.where(finite(final), result, RESULTS.nonfinite)
    xs, ys = final["x"], final["y"]
    stats = {
        "num_steps": num_steps,
        "max_steps": jnp.asarray(max_steps, jnp.int32),
        "stationarity": final["stationarity"],
        "value_gap": final["value_gap"],
        "constraint_violation": flat.constraint_violation(xs, ys),
        "start_projection": start_projection,
    }
    value = (flat.unravel_x(xs), flat.unravel_y(ys))
    start_values = (flat.upper(x, y), flat.lower(x, y))
    return finalise(
        value, result, stats, (x0, y0, solver, start_values), throw, state=final
    )
