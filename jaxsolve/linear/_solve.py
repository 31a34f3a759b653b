"""`jaxsolve.linear.solve`: the driver of the linear family."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, ArrayLike, Inexact, Num

from .._core import (
    AbstractAdjoint,
    AbstractProgressMeter,
    finalise,
    ImplicitAdjoint,
    Solution,
)
from ._base import AbstractIterativeLinearSolver, from_lineax_result
from ._operators import as_operator


def _check_vector(v: Any, operator: lx.AbstractLinearOperator, name: str) -> Array:
    struct = operator.in_structure()
    try:
        v = jnp.asarray(v)
    except TypeError:
        raise ValueError(
            f"`{name}` must be an array, got {type(v).__name__}."
        ) from None
    if v.shape != struct.shape:
        hint = ""
        if v.size == np.prod(struct.shape):
            hint = f" Reshape it with `{name}.reshape({struct.shape})`."
        raise ValueError(
            f"`{name}` has shape {v.shape}, but the operator acts on arrays of shape "
            f"{struct.shape}.{hint}"
        )
    if jnp.issubdtype(v.dtype, jnp.integer) or jnp.issubdtype(v.dtype, jnp.bool_):
        v = v.astype(struct.dtype)
    if v.dtype != struct.dtype:
        raise ValueError(
            f"`{name}` has dtype {v.dtype}, but the operator has dtype "
            f"{struct.dtype}. Cast one of them (e.g. `{name}.astype(jnp."
            f"{struct.dtype})`): jaxsolve does not promote silently."
        )
    return v


def _residual(x, inputs):
    operator, b, _, _ = inputs
    return operator.mv(x) - b


def _jacobian(x, inputs):
    del x
    return inputs[0]


class _Primal(eqx.Module):
    # Static, so hashable: (name, value) pairs of the adjoint's loop options.
    loop_options: tuple[tuple[str, Any], ...] = eqx.field(static=True)
    progress_meter: AbstractProgressMeter | None

    def __call__(self, inputs):
        operator, b, x0, solver = inputs
        state = solver.init(operator, {})
        x, result, stats = solver.run(
            state, b, x0, progress_meter=self.progress_meter, **dict(self.loop_options)
        )
        return x, (result, stats)


def solve(
    operator: lx.AbstractLinearOperator | Inexact[ArrayLike, "n n"],
    b: Num[ArrayLike, "..."],
    solver: lx.AbstractLinearSolver,
    *,
    x0: Num[ArrayLike, "..."] | None = None,
    throw: bool = True,
    adjoint: AbstractAdjoint = ImplicitAdjoint(),
    progress_meter: AbstractProgressMeter | None = None,
    tags: object | frozenset[object] = (),
) -> Solution:
    r"""Solve $A x = b$ with a jaxsolve (or any lineax) linear solver.

    **Arguments:**

    - `operator`: a lineax operator (e.g. [`jaxsolve.linear.poisson`][]) or a dense
        `(n, n)` array; real, or complex Hermitian positive definite for SOR and
        SSOR-PCG.
    - `b`: the right-hand side, shaped like the operator's input (the grid shape for
        stencil operators, `(n,)` for matrices); same dtype as the operator (integer
        arrays are cast).
    - `solver`: [`jaxsolve.linear.SOR`][], [`jaxsolve.linear.SSORPCG`][], or any
        `lineax.AbstractLinearSolver` (e.g. `lineax.LU()` for a direct solve).
    - `x0`: initial guess (default zeros). Ignored for derivatives: the solution does
        not depend on it.
    - `throw`: if `True` (default) a failed solve raises at run time (also under
        `jit`; under `vmap` if *any* lane fails). With `False`, inspect
        `sol.result` per lane instead.
    - `adjoint`: [`jaxsolve.ImplicitAdjoint`][] (default; gradients by one adjoint
        solve of $A^\top \lambda = \bar x$ with the same solver, O(1) memory in the
        number of sweeps) or [`jaxsolve.UnrolledAdjoint`][] (differentiate the sweeps).
    - `progress_meter`: e.g. `jaxsolve.TextProgressMeter()`; off by default.
    - `tags`: for a dense-array `operator` only: lineax tags describing it, e.g.
        `lineax.positive_semidefinite_tag`, which lineax's `Cholesky` and `CG` require
        (`js.linear.solve(M, b, lineax.Cholesky(), tags=lineax.positive_semidefinite_tag)`).
        Ignored (the operator's own tags apply) for lineax operators.

    **Returns:** a [`jaxsolve.Solution`][] with `stats["num_steps"]`,
    `stats["max_steps"]` and `stats["residual_norm"]` (the final true residual
    2-norm, for jaxsolve solvers).

    Zero `b` returns exactly zero in 0 steps. NaN/Inf in `b`, `x0` or the operator's
    arrays gives `RESULTS.nonfinite_input`; non-finite output is never reported as
    success (`RESULTS.nonfinite`).

    !!! example

        ```python
        import jax, jax.numpy as jnp, jaxsolve as js
        A = js.linear.poisson((16, 16))
        b = jnp.ones((16, 16))
        loss = lambda b: js.linear.solve(A, b, js.linear.SSORPCG(omega=1.5)).value.sum()
        g = jax.grad(loss)(b)          # one adjoint SSOR-PCG solve
        ```
    """
    if not isinstance(operator, lx.AbstractLinearOperator):
        operator = as_operator(operator, tags)
    operator = as_operator(operator)
    b = _check_vector(b, operator, "b")
    x0_given = x0 is not None
    x0 = jnp.zeros_like(b) if x0 is None else _check_vector(x0, operator, "x0")
    if not isinstance(solver, lx.AbstractLinearSolver):
        raise ValueError(
            "`solver` must be a jaxsolve.linear solver (SOR, SSORPCG) or a "
            f"lineax.AbstractLinearSolver, got {type(solver).__name__}."
        )
    if not isinstance(adjoint, AbstractAdjoint):
        raise ValueError(
            "`adjoint` must be jaxsolve.ImplicitAdjoint() or jaxsolve.UnrolledAdjoint()"
            f", got {type(adjoint).__name__}."
        )
    return _solve(operator, b, x0, solver, throw, adjoint, progress_meter, x0_given)


# Compiled once per operator structure / solver configuration: a new `b`, `x0`,
# operator values or `omega` reuse the compiled solve (also for eager callers).
@eqx.filter_jit
def _solve(operator, b, x0, solver, throw, adjoint, progress_meter, x0_given):
    if isinstance(solver, AbstractIterativeLinearSolver):
        primal = _Primal(
            loop_options=tuple(sorted(adjoint.loop_options().items())),
            progress_meter=progress_meter,
        )
        x, (result, stats) = adjoint.apply(
            primal, _residual, (operator, b, x0, solver), solver, _jacobian
        )
    else:
        # A lineax solver: lineax differentiates it (its own implicit rule).
        options = {"y0": x0} if x0_given else {}
        sol = lx.linear_solve(operator, b, solver, options=options, throw=False)
        x = sol.value
        result = from_lineax_result(sol.result)
        stats = dict(sol.stats)
        stats.setdefault("num_steps", jnp.array(0, jnp.int32))
        stats.setdefault("max_steps", None)
        stats["residual_norm"] = jnp.linalg.norm(b - operator.mv(x))
    # The solver's arrays (omega, DCDM's weights) count as input: a NaN omega traced
    # into the solve is `nonfinite_input`, not a failure of the iteration.
    inputs = (operator, b, x0, eqx.filter(solver, eqx.is_inexact_array))
    return finalise(x, result, stats, inputs, throw)
