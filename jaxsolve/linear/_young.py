"""Young's optimal relaxation parameter."""

import math

import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, ArrayLike, Float

from ._operators import as_operator, PoissonOperator


def jacobi_spectral_radius(
    operator: lx.AbstractLinearOperator | Float[ArrayLike, "n n"],
    *,
    max_dense: int = 4096,
    power_steps: int = 2000,
) -> Float[Array, ""]:
    r"""$\rho_J = \rho(I - D^{-1} A)$, the spectral radius of the Jacobi iteration.

    Closed form for [`jaxsolve.linear.poisson`][] with a scalar coefficient and shift:
    $\rho_J = \sum_d 2 k \cos(\pi/(n_d+1)) / (2 d k + s)$. Otherwise a dense
    eigen-solve for up to `max_dense` unknowns (symmetric operators use the similar
    matrix $D^{-1/2} A D^{-1/2}$), else `power_steps` of power iteration (an
    approximation from below)."""
    operator = as_operator(operator)
    if (
        isinstance(operator, PoissonOperator)
        and operator.coefficient.ndim == 0
        and operator.shift.ndim == 0
    ):
        k, s = operator.coefficient, operator.shift
        total = sum(2 * k * math.cos(math.pi / (n + 1)) for n in operator.grid_shape)
        return total / (2 * operator.ndim * k + s)
    n = math.prod(operator.in_structure().shape)
    diag = lx.diagonal(operator).reshape(operator.in_structure().shape)
    if n <= max_dense:
        a = operator.as_matrix()
        d = diag.reshape(-1)
        if lx.is_symmetric(operator):
            s = 1 / jnp.sqrt(d)
            eig = jnp.linalg.eigvalsh(
                jnp.eye(n, dtype=a.dtype) - s[:, None] * a * s[None, :]
            )
        else:
            eig = jnp.linalg.eigvals(jnp.eye(n, dtype=a.dtype) - a / d[:, None])
        return jnp.max(jnp.abs(eig))

    def jacobi(v):
        return v - operator.mv(v) / diag

    def body(_, v):
        w = jacobi(v)
        return w / jnp.linalg.norm(w)

    v0 = jax.random.normal(jax.random.key(0), diag.shape, diag.dtype)
    v = jax.lax.fori_loop(0, power_steps, body, v0 / jnp.linalg.norm(v0))
    return jnp.linalg.norm(jacobi(v))


def young_omega(
    operator_or_rho: lx.AbstractLinearOperator | Float[ArrayLike, "..."],
) -> Float[Array, ""]:
    r"""Young's optimal SOR parameter $\omega^\star = 2 / (1 + \sqrt{1 - \rho_J^2})$.

    Optimal for consistently ordered matrices with real Jacobi spectrum of radius
    $\rho_J < 1$ (e.g. the 5/7-point Poisson stencils, natural or red-black order).
    Pass an operator, or $\rho_J$ itself (a scalar).

    !!! example

        ```python
        import jaxsolve as js
        omega = js.linear.young_omega(js.linear.poisson((64, 64)))   # ~1.9075
        ```
    """
    if isinstance(operator_or_rho, lx.AbstractLinearOperator) or (
        hasattr(operator_or_rho, "ndim") and operator_or_rho.ndim == 2
    ):
        rho = jacobi_spectral_radius(operator_or_rho)
    else:
        rho = jnp.asarray(operator_or_rho)
    return 2 / (1 + jnp.sqrt(1 - rho**2))
