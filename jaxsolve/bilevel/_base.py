"""`AbstractBilevelSolver`: the maths-only interface of the bilevel solvers, and the
validation helpers they share. The driver `jaxsolve.bilevel.solve` owns the loop."""

import abc
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._core._misc import concrete_value
from ._problem import FlatProblem


class AbstractBilevelSolver(eqx.Module):
    """A single-loop bilevel method: `init` builds the state from a feasible start,
    `step` performs one iteration, `residuals` reports the stopping quantities.

    Solvers see the problem on flat vectors (a `FlatProblem`, built by the driver):
    `x` and `y` are 1-D arrays, with projections that already know the sets.

    The state is a dict with at least `x`, `y`, `stationarity`, `value_gap`.
    """

    tol: eqx.AbstractVar[Float[Array, ""]]
    qp_steps: eqx.AbstractVar[int]

    @abc.abstractmethod
    def init(
        self, problem: FlatProblem, x: Array, y: Array, duals: Array
    ) -> dict[str, Any]:
        """The state at a feasible start `(x, y)`; `duals` warm-start the joint
        projection."""

    @abc.abstractmethod
    def step(self, problem: FlatProblem, state: dict[str, Any]) -> dict[str, Any]:
        """One iteration."""

    def converged(self, state: dict[str, Any]) -> Bool[Array, ""]:
        """Stop when the stationarity residual (the projected-gradient mapping of
        the method's penalised objective) is below `tol`; never when `tol == 0` (a
        fixed budget of `max_steps`). The value-function gap is reported, not
        tested: penalty methods converge to points with a small, nonzero gap."""
        tol = self.tol.astype(state["x"].dtype)
        return (tol > 0) & (state["stationarity"] <= tol)


def to_param(value, name: str, owner: str) -> Array:
    """A hyper-parameter as a 0-d float array (so new values do not recompile)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{owner}({name}=...) must be a number, got {value!r}.")
    if isinstance(value, (int, float)):
        return jnp.asarray(value, dtype=jnp.zeros(()).dtype)
    arr = jnp.asarray(value)
    if arr.ndim != 0:
        raise ValueError(
            f"{owner}({name}=...) must be a scalar, got shape {arr.shape}; to sweep "
            "it, jax.vmap over solves with a batched solver instead."
        )
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.zeros(()).dtype)
    return arr


def check_positive(value: Array, name: str, owner: str, *, allow_zero=False) -> None:
    v = concrete_value(value)
    if v is None:
        return
    v = float(v)
    bad = (v < 0 if allow_zero else v <= 0) or v != v
    if bad:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(
            f"{owner}({name}=...) must be {kind}, got {v}. Step sizes and weights are "
            f"{kind} numbers; a negative step would ascend."
        )


def check_int(value, name: str, owner: str, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(
            f"{owner}({name}=...) must be an integer >= {minimum}, got {value!r}."
        )
