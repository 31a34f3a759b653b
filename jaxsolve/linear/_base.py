"""The shared base of jaxsolve's iterative linear solvers: stopping rule, result
codes, statistics and the lineax solver protocol. Concrete solvers only implement
their maths (`init`, `_start`, `_step`)."""

import abc
import math
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from .._core import AbstractProgressMeter, iterate, RESULTS
from .._core._adjoint import LoopKind
from .._core._misc import concrete_value
from ._operators import as_operator, norm_bound
from ._splitting import check_ordering, make_splitting, MAX_DENSE_SIZE


class AbstractIterativeLinearSolver(lx.AbstractLinearSolver):
    """A matrix-free iterative solver for $A x = b$ that stops on
    $\\|b - A x\\|_2 \\le \\max(\\text{atol}, \\text{rtol}\\,\\|b\\|_2)$.

    Subclasses implement `init` (precompute the splitting), `_start` and `_step`
    (one iteration, returning the new carry); the carry is a dict with at least `x`
    (the iterate), `rnorm` (the residual norm the stopping rule reads) and
    `breakdown` (a bool), and optionally `certified` (a bool: `rnorm` is a true
    residual $\\|b - A x\\|$ this step; default true).

    **Fixed number of steps.** With `rtol = atol = 0` the solver runs exactly
    `max_steps` steps (fewer only if the residual becomes exactly zero or reaches the
    rounding floor) and reports success unless the iterate becomes non-finite or the
    iteration breaks down: the classic smoother / fixed-cost preconditioner use.

    **Complex input.** Norms and tolerances are real; the solvers accept complex
    Hermitian positive definite systems where their maths allows (SOR, SSOR-PCG).

    **Stagnation.** The driver keeps the best iterate by true residual. If that best
    residual lies below the precision floor
    $\\max(\\sqrt{\\varepsilon}\\,\\|b\\|_2, 10\\varepsilon\\|A\\|\\,\\|x\\|_2)$ (the
    second term where a bound on $\\|A\\|$ is cheap: stencils, dense matrices) and has
    not improved for `stagnation_window` steps, or the iteration breaks down or blows
    up after reaching that floor, the solve stops with `RESULTS.stagnation` and
    returns the best iterate: the tolerance is below what the dtype can reach.
    """

    rtol: eqx.AbstractVar[float]
    atol: eqx.AbstractVar[float]
    max_steps: eqx.AbstractVar[int]
    # Steps without a new smallest (true) residual, below the precision floor, after
    # which the solve stops with `RESULTS.stagnation`.
    stagnation_window: ClassVar[int] = 50

    @abc.abstractmethod
    def _start(
        self, state: Any, b: Array, x0: Array, tol: Array
    ) -> dict[str, Array]: ...

    @abc.abstractmethod
    def _step(self, state: Any, b: Array, carry: dict[str, Array]) -> dict: ...

    def run(
        self,
        state: Any,
        b: Array,
        x0: Array,
        *,
        kind: LoopKind = "lax",
        checkpoints: int | None = None,
        progress_meter: AbstractProgressMeter | None = None,
    ) -> tuple[Array, RESULTS, dict[str, Array]]:
        """Iterate from `x0`; returns `(x, result, stats)`."""
        # Norms and tolerances are real (float32 for complex64 systems, ...).
        real = jnp.finfo(b.dtype).dtype
        bnorm = jnp.linalg.norm(b)
        tol = jnp.maximum(jnp.asarray(self.atol, real), self.rtol * bnorm)
        # rtol = atol = 0: run exactly `max_steps` steps (a smoother or a fixed-cost
        # preconditioner); only a non-finite iterate or a breakdown is a failure.
        fixed = self.rtol == 0 and self.atol == 0
        # b = 0 has the exact solution 0 (SciPy's convention): start there so the
        # loop stops at once with x exactly zero.
        x0 = jnp.where(bnorm == 0, jnp.zeros_like(x0), x0)
        # The level below which a residual that stops decreasing is a precision
        # floor, not slow convergence: sqrt(eps) relative (3e-4 in float32, 1e-8 in
        # float64), or the backward-error level 10 eps ||A|| ||x|| where a bound on
        # ||A|| is cheap (it is the larger one for ill-conditioned problems with
        # smooth right-hand sides). Above it, a long plateau (e.g. SOR's transient
        # growth for omega near 2) is never called stagnation.
        eps = jnp.finfo(b.dtype).eps
        operator = state[0] if isinstance(state, tuple) and state else None
        anorm = (
            norm_bound(operator)
            if isinstance(operator, lx.AbstractLinearOperator)
            else None
        )

        def floor_at(x):
            level = jnp.sqrt(eps) * bnorm
            if anorm is None:
                return level
            return jnp.maximum(level, 10 * eps * anorm * jnp.linalg.norm(x))

        window = self.stagnation_window
        inner = self._start(state, b, x0, tol)
        carry = {
            "inner": inner,
            "best": inner["rnorm"],
            "x_best": inner["x"],
            "since": jnp.array(0, jnp.int32),
        }
        r0 = jnp.maximum(inner["rnorm"], jnp.finfo(b.dtype).tiny)

        def stagnated(c):
            if fixed:
                return jnp.array(False)
            return (c["since"] >= window) & (c["best"] <= floor_at(c["x_best"]))

        def cond(c):
            i = c["inner"]
            return (
                (i["rnorm"] > tol)
                & ~i["breakdown"]
                & jnp.isfinite(i["rnorm"])
                & ~stagnated(c)
            )

        def body(c):
            i = self._step(state, b, c["inner"])
            # Only true residuals (`certified`) count as progress: a recursively
            # updated CG residual keeps falling below the precision floor while
            # the true one has stopped.
            certified = i.get("certified", jnp.array(True))
            improved = certified & (i["rnorm"] < c["best"])
            return {
                "inner": i,
                "best": jnp.where(improved, i["rnorm"], c["best"]),
                "x_best": jnp.where(improved, i["x"], c["x_best"]),
                "since": jnp.where(improved, 0, c["since"] + 1),
            }

        def progress(c):
            if fixed:  # the step count alone measures progress
                return jnp.zeros((), real)
            # Fraction of the way from ||r0|| to tol on a log scale.
            rn = c["inner"]["rnorm"]
            ratio = jnp.log(r0 / jnp.maximum(rn, tol)) / jnp.log(r0 / tol)
            return jnp.where(r0 > tol, ratio, 1.0)

        final, num_steps = iterate(
            body,
            cond,
            carry,
            self.max_steps,
            kind=kind,
            checkpoints=checkpoints,
            progress_meter=progress_meter,
            progress=progress,
        )
        inner = final["inner"]
        rnorm = inner["rnorm"]
        converged = (rnorm <= tol) | fixed
        result = RESULTS.where(converged, RESULTS.successful, RESULTS.max_steps_reached)
        result = RESULTS.where(jnp.isfinite(rnorm), result, RESULTS.nonfinite)
        result = RESULTS.where(inner["breakdown"], RESULTS.breakdown, result)
        # A breakdown or blow-up *after* the residual reached the precision floor is
        # rounding (CG loses conjugacy at a tiny residual), not a non-SPD operator.
        failed_at_floor = (inner["breakdown"] | ~jnp.isfinite(rnorm)) & (
            final["best"] <= floor_at(final["x_best"])
        )
        stag = ~converged & (stagnated(final) | failed_at_floor)
        result = RESULTS.where(stag, RESULTS.stagnation, result)
        if fixed:
            # A fixed number of steps asks for no tolerance: stopping early at the
            # rounding floor returns the best iterate, successfully.
            result = RESULTS.where(failed_at_floor, RESULTS.successful, result)
            stag = failed_at_floor
        x = jnp.where(stag, final["x_best"], inner["x"])
        rnorm = jnp.where(stag, final["best"], rnorm)
        stats = {
            "num_steps": num_steps,
            "max_steps": jnp.asarray(self.max_steps, jnp.int32),
            "residual_norm": rnorm,
        }
        return x, result, stats

    # -- lineax protocol: `lineax.linear_solve(op, b, solver)` works too. ----------

    def compute(self, state, vector, options):
        x0 = options.get("y0", None)
        x0 = jax.tree_util.tree_map(jnp.zeros_like, vector) if x0 is None else x0
        if len(jax.tree_util.tree_leaves(vector)) > 1:
            # A pytree-structured operator (lineax's PyTreeLinearOperator, ...) was
            # materialised on the flattened vector by `init`: solve on that.
            flat, unravel = ravel_pytree(vector)
            x, result, stats = self.run(state, flat, ravel_pytree(x0)[0])
            return unravel(x), to_lineax_result(result), stats
        x, result, stats = self.run(state, vector, x0)
        return x, to_lineax_result(result), stats

    def assume_full_rank(self):
        return True


class AbstractSplittingSolver(AbstractIterativeLinearSolver):
    """A solver built on a splitting $A = D + L + U$ and a relaxation parameter
    `omega` (an array field: a new value never recompiles)."""

    omega: eqx.AbstractVar[Float[Array, ""]]
    ordering: eqx.AbstractVar[str]
    default_ordering: ClassVar[str]

    def init(self, operator, options):
        del options
        operator = as_operator(flatten_operator(operator))
        return operator, make_splitting(operator, self.ordering, self.default_ordering)

    # The state is `(operator, splitting)`: the transposed/conjugated state is the
    # splitting of the transposed/conjugated operator.
    def transpose(self, state, options):
        return self.init(state[0].transpose(), options), options

    def conj(self, state, options):
        return self.init(lx.conj(state[0]), options), options

    def _omega(self, dtype) -> Array:
        return self.omega.astype(dtype)


def flatten_operator(operator: Any) -> Any:
    """A lineax operator acting on a pytree of arrays, as a matrix operator acting on
    the flattened vector (`jax.flatten_util.ravel_pytree` order, lineax's
    `as_matrix` order); anything else is returned unchanged."""
    if not isinstance(operator, lx.AbstractLinearOperator):
        return operator
    structs = jax.tree_util.tree_leaves(operator.in_structure())
    if len(structs) <= 1:
        return operator
    n = sum(math.prod(s.shape) for s in structs)
    if n > MAX_DENSE_SIZE:
        raise ValueError(
            f"A pytree-structured operator is materialised as an {n}x{n} matrix for "
            f"SOR/SSOR-PCG (more than {MAX_DENSE_SIZE} unknowns); flatten the problem "
            "into one array or use lineax.CG."
        )
    # `as_operator` then checks the matrix is square.
    return lx.MatrixLinearOperator(operator.as_matrix())


def check_common(solver: AbstractIterativeLinearSolver) -> None:
    """Construction-time validation shared by the iterative solvers."""
    for name in ("rtol", "atol"):
        value = getattr(solver, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(
                f"{type(solver).__name__}({name}=...) must be a Python float, got "
                f"{value!r}."
            )
        if value < 0 or value != value:
            raise ValueError(
                f"{type(solver).__name__}({name}=...) must be non-negative, got "
                f"{value}."
            )
    ms = solver.max_steps
    if not isinstance(ms, int) or isinstance(ms, bool) or ms < 1:
        raise ValueError(
            f"{type(solver).__name__}(max_steps=...) must be an integer >= 1, got "
            f"{ms!r}."
        )


def check_omega(solver: AbstractSplittingSolver) -> None:
    omega = solver.omega
    if omega.ndim != 0:
        raise ValueError(
            f"{type(solver).__name__}(omega=...) must be a scalar, got shape "
            f"{omega.shape}; to sweep omega, jax.vmap over solves instead."
        )
    if not jnp.issubdtype(omega.dtype, jnp.floating):
        raise ValueError(
            f"{type(solver).__name__}(omega=...) must be a float, got {omega.dtype}."
        )
    value = concrete_value(omega)
    if value is not None and not 0 < float(value) < 2:
        raise ValueError(
            f"{type(solver).__name__}(omega=...) must lie in the open interval (0, 2) "
            f"(SOR and SSOR diverge otherwise), got {float(value)}."
        )
    check_ordering(solver.ordering)


def to_tolerance(value: Any) -> Any:
    """`rtol`/`atol` as a Python float (so `rtol=0` works as `rtol=0.0`); anything
    else is left for `check_common` to reject with a clear message."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_omega(omega) -> Array:
    """Store omega as an array (a Python float would be baked into the compiled
    code, and every new value would recompile)."""
    if isinstance(omega, (int, float)) and not isinstance(omega, bool):
        # Not weakly typed, so Python floats and arrays share one compiled solve.
        return jnp.asarray(omega, dtype=jnp.zeros(()).dtype)
    message = (
        f"omega must be a real number in (0, 2) (a float or a float array), got "
        f"{omega!r}."
    )
    if omega is None or isinstance(omega, (str, bytes, bool)):
        raise ValueError(message)
    try:
        arr = jnp.asarray(omega)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if jnp.issubdtype(arr.dtype, jnp.integer):
        arr = arr.astype(jnp.zeros(()).dtype)
    return arr


_LX = {
    "successful": lx.RESULTS.successful,
    "max_steps_reached": lx.RESULTS.max_steps_reached,
    "nonfinite_input": lx.RESULTS.nonfinite_input,
    "nonfinite": lx.RESULTS.singular,
    "breakdown": lx.RESULTS.breakdown,
    "stagnation": lx.RESULTS.stagnation,
    "singular": lx.RESULTS.singular,
}


def to_lineax_result(result: RESULTS) -> lx.RESULTS:
    """Map a jaxsolve result to the nearest lineax result (for `lx.linear_solve`)."""
    out = lx.RESULTS.successful
    for name, lx_item in _LX.items():
        out = lx.RESULTS.where(result == getattr(RESULTS, name), lx_item, out)
    return out


def from_lineax_result(result: lx.RESULTS) -> RESULTS:
    """Map a lineax result to the jaxsolve result of the same meaning."""
    out = RESULTS.singular
    for name in (
        "successful",
        "max_steps_reached",
        "nonfinite_input",
        "breakdown",
        "stagnation",
    ):
        out = RESULTS.where(
            result == getattr(lx.RESULTS, name), getattr(RESULTS, name), out
        )
    return out
