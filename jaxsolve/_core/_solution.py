"""`RESULTS` and `Solution`: what every jaxsolve driver returns."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, ArrayLike, Bool, PyTree


class RESULTS(eqx.Enumeration):
    """Result codes shared by every jaxsolve solver.

    Each member carries a message that says what to change. Convert an integer-valued
    result into its message with `RESULTS[result]`; compare with `==`, e.g.
    `sol.result == js.RESULTS.successful` (works under `jit` and `vmap`).
    """

    successful = ""
    max_steps_reached = (
        "The maximum number of steps was reached before the stopping criterion was "
        "met. Increase `max_steps`, loosen `rtol`/`atol`, or (for SOR/SSOR) choose a "
        "better relaxation parameter `omega` (see `jaxsolve.linear.young_omega`)."
    )
    nonfinite_input = (
        "The input contained NaN or Inf (the right-hand side, the initial guess or "
        "the operator's parameters). This is a bug upstream of jaxsolve: check the "
        "values you pass in, e.g. with `jnp.isfinite(b).all()`."
    )
    nonfinite = (
        "The solver produced NaN or Inf: the iteration diverged. For SOR this means "
        "the operator is not symmetric positive definite (SOR converges for SPD "
        "operators and 0 < omega < 2) or omega is unsuitable; for other solvers, "
        "check that the problem satisfies the solver's assumptions."
    )
    breakdown = (
        "Conjugate-gradient breakdown: a curvature p^T A p or the preconditioned "
        "residual product z^T r was not positive, so the operator or the "
        "preconditioner is not symmetric positive definite. Use a solver for "
        "non-symmetric or indefinite systems (e.g. lineax.GMRES, lineax.LU)."
    )
    stagnation = (
        "The residual stopped decreasing before it reached the tolerance, at a level "
        "near the limit of the working precision: the tolerance is below what this "
        "dtype can reach on this problem (float32 typically reaches a relative "
        "residual of 1e-5 to 1e-6). Enable float64 (`jax.config.update("
        "'jax_enable_x64', True)` and float64 inputs) or loosen `rtol`/`atol`. The "
        "returned value is the best iterate found."
    )
    singular = (
        "The linear system appears to be singular, or so ill-conditioned that the "
        "solver cannot make progress. Check the operator (boundary conditions, a "
        "negative shift that cancels the smallest eigenvalue)."
    )
    invalid_parameter = (
        "A hyper-parameter passed as an array (traced under jit or vmap, so it could "
        "not be checked when the solver was built) lies outside its valid range, e.g. "
        "a momentum `beta` outside (0, 1]. The returned value is not meaningful; fix "
        "the value."
    )


class Solution(eqx.Module):
    """The output of a jaxsolve driver.

    **Attributes:**

    - `value`: the solution.
    - `result`: a [`jaxsolve.RESULTS`][] member; `RESULTS[sol.result]` is its message.
    - `stats`: a dict of statistics; always has `num_steps` and `max_steps`.
    - `state`: the solver's final internal state (solver-specific; may be `None`).
    """

    value: PyTree[Array]
    result: RESULTS
    stats: dict[str, PyTree[ArrayLike]]
    state: PyTree[Any] = None


def any_nonfinite(tree: PyTree) -> Bool[Array, ""]:
    """True if any inexact array leaf of `tree` holds a NaN or Inf."""
    leaves = jtu.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))
    if not leaves:
        return jnp.array(False)
    return jnp.stack([jnp.any(~jnp.isfinite(x)) for x in leaves]).any()


def finalise(
    value: PyTree[Array],
    result: RESULTS,
    stats: dict[str, PyTree[ArrayLike]],
    inputs: PyTree,
    throw: bool,
    *,
    state: PyTree[Any] = None,
) -> Solution:
    """The post-processing every driver applies, and the only place `throw` lives.

    Non-finite *input* becomes `nonfinite_input` whatever the solver said (it is the
    more useful message); non-finite *output* of a nominally successful solve becomes
    `nonfinite` (never reported as success).

    With `throw=True` a failure raises at run time, under `jit` too, through
    `result.error_if`. The check is tied to **every** array leaf of the returned
    `Solution` (value, result, each entry of `stats`, state): XLA removes an error
    check whose output is unused, so a check tied to `value` alone would vanish for a
    caller who only reads `stats["num_steps"]`.
    """
    bad_in = any_nonfinite(inputs)
    bad_out = any_nonfinite(value)
    result = RESULTS.where(
        (result == RESULTS.successful) & bad_out, RESULTS.nonfinite, result
    )
    result = RESULTS.where(bad_in, RESULTS.nonfinite_input, result)
    if throw:
        # `error_if` on the whole tree: every output leaf depends on the check.
        dynamic, static = eqx.partition((value, stats, state), eqx.is_array)
        dynamic, result = result.error_if(
            (dynamic, result), result != RESULTS.successful
        )
        value, stats, state = eqx.combine(dynamic, static)
    return Solution(value=value, result=result, stats=stats, state=state)
