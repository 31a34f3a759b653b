"""The policy protocol shared by the omega policies, and validation helpers."""

import abc
from typing import Any, Generic, TypeVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from .._core._misc import concrete_value


_State = TypeVar("_State")

DEFAULT_OMEGAS = np.linspace(1.0, 1.95, 20)


class AbstractPolicy(eqx.Module, Generic[_State]):
    r"""An online policy that picks one of a grid of relaxation parameters
    $\omega_1 < \dots < \omega_d$ for each system of a sequence, from bandit
    feedback (the cost of the chosen $\omega$ only).

    Policies are pure and optax-shaped: the module holds hyper-parameters, the
    evolving state is a pytree of arrays, so `jax.jit`, `jax.vmap` (many independent
    sequences) and `jax.lax.scan` all apply:

    ```python
    state = policy.init(key)
    arm, omega, state = policy.select(state, context)   # before the solve
    state = policy.update(state, arm, cost, context)    # after it
    ```

    Randomness comes only from the key given to `init` (same key, same choices).
    """

    omegas: eqx.AbstractVar[Float[Array, " d"]]

    @property
    def num_arms(self) -> int:
        return self.omegas.shape[0]

    @abc.abstractmethod
    def init(self, key: PRNGKeyArray) -> _State:
        """The initial state."""

    @abc.abstractmethod
    def select(
        self, state: _State, context: Float[ArrayLike, ""] | None = None
    ) -> tuple[Int[Array, ""], Float[Array, ""], _State]:
        """Sample an arm; returns `(arm, omega, state)`."""

    @abc.abstractmethod
    def update(
        self,
        state: _State,
        arm: Int[ArrayLike, ""],
        cost: Float[ArrayLike, ""] | Int[ArrayLike, ""],
        context: Float[ArrayLike, ""] | None = None,
    ) -> _State:
        """Learn from the cost of playing `arm`; returns the new state."""

    @abc.abstractmethod
    def probabilities(
        self, state: _State, context: Float[ArrayLike, ""] | None = None
    ) -> Float[Array, " d"]:
        """The distribution `select` samples from (without sampling)."""


def as_array(value: Any, what: str) -> Array:
    """`jnp.asarray(value)`, with our message for what JAX cannot convert (a string,
    `None`, a ragged list)."""
    try:
        return jnp.asarray(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{what} must be a number or an array of numbers, got {value!r}."
        ) from None


def _check_real(arr: Array, what: str) -> None:
    if jnp.issubdtype(arr.dtype, jnp.complexfloating):
        raise ValueError(f"{what} must be real, got dtype {arr.dtype}.")


def to_omegas(omegas: Any) -> Array:
    """The omega grid as a float array (default `linspace(1, 1.95, 20)`)."""
    if omegas is None:
        omegas = DEFAULT_OMEGAS
    arr = as_array(omegas, "`omegas`")
    _check_real(arr, "`omegas`")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.zeros(()).dtype)
    return arr


def check_omegas(name: str, omegas: Array) -> None:
    if omegas.ndim != 1 or omegas.shape[0] == 0:
        raise ValueError(
            f"{name}(omegas=...) must be a non-empty 1-D grid of relaxation "
            f"parameters, got shape {omegas.shape}."
        )
    w = concrete_value(omegas)
    if w is not None:
        if not np.all(np.isfinite(w)) or np.any(w <= 0) or np.any(w >= 2):
            raise ValueError(
                f"{name}(omegas=...) must lie in the open interval (0, 2) (SOR and "
                f"SSOR diverge otherwise), got {w.tolist()}."
            )
        if np.any(np.diff(w) <= 0):
            raise ValueError(
                f"{name}(omegas=...) must be strictly increasing, got {w.tolist()}; "
                "pass e.g. `jnp.sort(jnp.unique(omegas))`."
            )


def to_range(context_range: Any) -> Array:
    if context_range is None:
        raise ValueError(
            "Contextual policies need `context_range=(low, high)`, the range of the "
            "context (contexts outside it are clipped)."
        )
    arr = as_array(context_range, "`context_range`")
    _check_real(arr, "`context_range`")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.zeros(()).dtype)
    return arr


def check_range(name: str, context_range: Array) -> None:
    if context_range.shape != (2,):
        raise ValueError(
            f"{name}(context_range=...) must be a pair (low, high), got shape "
            f"{context_range.shape}."
        )
    bounds = concrete_value(context_range)
    if bounds is not None:
        lo, hi = (float(v) for v in bounds)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(
                f"{name}(context_range=...) must be finite with low < high, got "
                f"({lo}, {hi})."
            )


def check_int(name: str, field: str, value: Any, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f"{name}({field}=...) must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name}({field}=...) must be >= {minimum}, got {value}.")


def require_context(name: str, context: Any) -> Array:
    if context is None:
        raise ValueError(
            f"{name} is a contextual policy: pass the context of each system, e.g. "
            "`policy.select(state, context)` and `policy.update(state, arm, cost, "
            "context)` (or `contexts=` to `solve_sequence`)."
        )
    context = jnp.asarray(context)
    if context.ndim != 0:
        raise ValueError(
            f"{name} takes a scalar context per system, got shape {context.shape}."
        )
    return context


def clip_context(
    context: Array, context_range: Array
) -> tuple[Float[Array, ""], Bool[Array, ""]]:
    """Clip a scalar context to the declared range; also return whether it was
    finite (a non-finite context carries no information)."""
    dtype = context_range.dtype
    context = context.astype(dtype)
    valid = jnp.isfinite(context)
    clipped = jnp.clip(
        jnp.where(valid, context, context_range[0]), context_range[0], context_range[1]
    )
    return clipped, valid


def normalise_cost(cost: Any, dtype: Any) -> tuple[Float[Array, ""], Bool[Array, ""]]:
    """A cost as a float, raised to at least 1 (a solve that needed 0 iterations is
    as good as one that needed 1), and whether it is usable (finite and >= 0)."""
    cost = jnp.asarray(cost)
    if cost.ndim != 0:
        raise ValueError(f"`cost` must be a scalar, got shape {cost.shape}.")
    cost = cost.astype(dtype)
    valid = jnp.isfinite(cost) & (cost >= 0)
    return jnp.where(valid, jnp.maximum(cost, 1), 1), valid


def check_arm(arm: Any, num_arms: int) -> Array:
    arm = jnp.asarray(arm)
    if arm.ndim != 0 or not jnp.issubdtype(arm.dtype, jnp.integer):
        raise ValueError(
            f"`arm` must be a scalar integer (as returned by `select`), got "
            f"{arm.dtype}{list(arm.shape)}."
        )
    value = concrete_value(arm)
    if value is not None and not 0 <= int(value) < num_arms:
        raise ValueError(f"`arm` must lie in [0, {num_arms}), got {int(value)}.")
    return arm
