"""Matrix-free Poisson-type stencil operators, and conversion of user operators.

The operator built by [`jaxsolve.linear.poisson`][] is a `lineax.AbstractLinearOperator`
acting on arrays of the *grid* shape (not flattened vectors), so `mv`, `as_matrix`,
`transpose` and every lineax solver work with it; its stencil structure (diagonal and
neighbour couplings) is what lets SOR run red-black half-sweeps on it.
"""

import math
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core._misc import concrete_value


class PoissonOperator(lx.AbstractLinearOperator):
    r"""The Dirichlet stencil operator $A = -\nabla\cdot(k\nabla) + s$ on a 2-D or
    3-D grid, without $h^2$ scaling:

    $$(A u)_i = \sum_{j \sim i} k_{ij} (u_i - u_j) + s_i u_i,$$

    where $j \sim i$ runs over the 4 (2-D) or 6 (3-D) grid neighbours of node $i$, a
    neighbour outside the grid has $u_j = 0$ (homogeneous Dirichlet), and the face
    coefficient is the arithmetic mean $k_{ij} = (k_i + k_j)/2$ of the node
    coefficients ($k_{ij} = k_i$ on a boundary face). With $k \equiv 1$, $s = 0$ this
    is the classical 5-point / 7-point Laplacian with 4 / 6 on the diagonal.

    Build it with [`jaxsolve.linear.poisson`][]. It is symmetric; it is positive
    definite when $k > 0$ and $s > -\lambda_{\min}$ (e.g. any $s \ge 0$), which is
    what its lineax tags promise.
    """

    coefficient: Float[Array, "..."]
    shift: Float[Array, "..."]
    grid_shape: tuple[int, ...] = eqx.field(static=True)

    @property
    def dtype(self):
        return self.coefficient.dtype

    @property
    def ndim(self) -> int:
        return len(self.grid_shape)

    def face_coefficients(self) -> list[tuple[Array, Array]]:
        """For each axis, the coefficients of the faces towards the lower and the
        upper neighbour of every node (arrays broadcastable to the grid shape)."""
        k = self.coefficient
        out = []
        for d in range(self.ndim):
            if k.ndim == 0:
                out.append((k, k))
                continue
            n = self.grid_shape[d]
            first = jax.lax.slice_in_dim(k, 0, 1, axis=d)
            last = jax.lax.slice_in_dim(k, n - 1, n, axis=d)
            # Faces 0..n along axis d: boundary faces take the node value.
            inner = 0.5 * (
                jax.lax.slice_in_dim(k, 0, n - 1, axis=d)
                + jax.lax.slice_in_dim(k, 1, n, axis=d)
            )
            faces = jnp.concatenate([first, inner, last], axis=d)
            lo = jax.lax.slice_in_dim(faces, 0, n, axis=d)
            hi = jax.lax.slice_in_dim(faces, 1, n + 1, axis=d)
            out.append((lo, hi))
        return out

    def diagonal_grid(self) -> Float[Array, "..."]:
        """The diagonal of $A$, as an array of the grid shape."""
        total = jnp.zeros(self.grid_shape, self.dtype)
        for lo, hi in self.face_coefficients():
            total = total + lo + hi
        return total + self.shift

    def mv(self, vector):
        return self.diagonal_grid() * vector + offdiagonal_mv(
            self.face_coefficients(), vector
        )

    def as_matrix(self) -> Float[Array, "n n"]:
        n = math.prod(self.grid_shape)
        eye = jnp.eye(n, dtype=self.dtype).reshape((n, *self.grid_shape))
        return jax.vmap(self.mv)(eye).reshape(n, n).T

    def transpose(self) -> "PoissonOperator":
        return self

    def in_structure(self):
        return jax.ShapeDtypeStruct(self.grid_shape, self.dtype)

    def out_structure(self):
        return self.in_structure()


def norm_bound(operator: lx.AbstractLinearOperator) -> Array | None:
    r"""An upper bound on $\|A\|_2$ when one is cheap: the largest absolute row sum
    (exact for the symmetric stencil and dense cases, where
    $\|A\|_2 \le \|A\|_\infty$), else `None`."""
    if isinstance(operator, PoissonOperator):
        diag = operator.diagonal_grid()
        # Row sum of |A|: |diagonal| + the face coefficients (the off-diagonals).
        return jnp.max(jnp.abs(diag) + jnp.abs(diag - operator.shift))
    if isinstance(operator, lx.MatrixLinearOperator):
        return jnp.max(jnp.sum(jnp.abs(operator.matrix), axis=1))
    return None


def offdiagonal_mv(faces: Sequence[tuple[Array, Array]], u: Array) -> Array:
    """$(A - D) u$ for a stencil with the given face coefficients (zero Dirichlet
    values outside the grid)."""
    out = jnp.zeros_like(u)
    for d, (lo, hi) in enumerate(faces):
        n = u.shape[d]
        zero = jnp.zeros_like(jax.lax.slice_in_dim(u, 0, 1, axis=d))
        below = jnp.concatenate([zero, jax.lax.slice_in_dim(u, 0, n - 1, axis=d)], d)
        above = jnp.concatenate([jax.lax.slice_in_dim(u, 1, n, axis=d), zero], d)
        out = out - lo * below - hi * above
    return out


def poisson(
    shape: Sequence[int],
    coefficient: ArrayLike | None = None,
    shift: ArrayLike = 0.0,
    dtype: Any = None,
) -> PoissonOperator:
    r"""The matrix-free Dirichlet Poisson operator $-\nabla\cdot(k\nabla u) + s u$ on a
    2-D (5-point) or 3-D (7-point) grid; see [`jaxsolve.linear.PoissonOperator`][].

    **Arguments:**

    - `shape`: the grid of unknowns, `(nx, ny)` or `(nx, ny, nz)` (interior nodes).
    - `coefficient`: $k > 0$, a scalar or an array of the grid shape (face values are
        arithmetic means of node values). Default 1.
    - `shift`: $s$, a scalar or an array of the grid shape added to the diagonal
        (e.g. $1/(\Delta t\,\theta)$ for an implicit time step). Default 0.
    - `dtype`: float32 or float64; default: the dtype of `coefficient` if it is a
        floating array, else JAX's default float.

    **Returns:** a [`jaxsolve.linear.PoissonOperator`][] (a lineax operator acting on
    arrays of shape `shape`). The stencil has no $1/h^2$ factor: scale `coefficient`
    and `shift` yourself.

    !!! example

        ```python
        import jax.numpy as jnp, jaxsolve as js
        A = js.linear.poisson((64, 64))                    # 4 on the diagonal
        b = jnp.ones((64, 64))
        x = js.linear.solve(A, b, js.linear.SOR(omega=1.9)).value
        ```
    """
    shape = tuple(shape)
    if len(shape) not in (2, 3) or not all(
        isinstance(n, (int, np.integer)) and n >= 1 for n in shape
    ):
        raise ValueError(
            f"poisson(shape=...) must be a 2-tuple or 3-tuple of positive integers "
            f"(the grid of unknowns), got {shape!r}."
        )
    shape = tuple(int(n) for n in shape)
    if dtype is None:
        if (
            coefficient is not None
            and jnp.issubdtype(jnp.result_type(coefficient), jnp.floating)
            and not isinstance(coefficient, (int, float))
        ):
            dtype = jnp.result_type(coefficient)
        else:
            dtype = jnp.zeros(()).dtype
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"poisson(dtype=...) must be a floating dtype, got {dtype}.")
    k = jnp.ones((), dtype) if coefficient is None else jnp.asarray(coefficient, dtype)
    s = jnp.asarray(shift, dtype)
    for name, arr in (("coefficient", k), ("shift", s)):
        if arr.shape not in ((), shape):
            raise ValueError(
                f"poisson({name}=...) must be a scalar or have the grid shape "
                f"{shape}, got shape {arr.shape}."
            )
    k_value = concrete_value(k)
    if k_value is not None and np.any(k_value <= 0):
        raise ValueError(
            "poisson(coefficient=...) must be positive everywhere (the operator is "
            f"then symmetric positive definite); got minimum {k_value.min()}."
        )
    return PoissonOperator(coefficient=k, shift=s, grid_shape=shape)


def as_operator(operator: Any, tags: Any = ()) -> lx.AbstractLinearOperator:
    """Accept a lineax operator, or a dense square matrix (converted to
    `lineax.MatrixLinearOperator(matrix, tags)`). Raises `ValueError` for anything
    else.

    `tags` (dense matrices only) are lineax's structural promises, e.g.
    `lineax.positive_semidefinite_tag` or `lineax.symmetric_tag`: lineax's
    `Cholesky` and `CG` require them. They are not checked (as in lineax).
    """
    if isinstance(operator, lx.AbstractLinearOperator):
        structs = jax.tree_util.tree_leaves(operator.in_structure())
        if len(structs) != 1:
            raise ValueError(
                "jaxsolve.linear solvers need an operator acting on a single array, "
                f"got input structure {operator.in_structure()}."
            )
        if operator.in_structure() != operator.out_structure():
            raise ValueError(
                "The operator must be square (same input and output structure), got "
                f"{operator.in_structure()} -> {operator.out_structure()}."
            )
        return operator
    if isinstance(operator, (jax.Array, np.ndarray)):
        matrix = jnp.asarray(operator)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(
                "A dense operator must be a square (n, n) matrix, got shape "
                f"{matrix.shape}."
            )
        if not jnp.issubdtype(matrix.dtype, jnp.inexact):
            raise ValueError(
                f"A dense operator must have a floating or complex dtype, got "
                f"{matrix.dtype}; convert it with `.astype(jnp.float64)` (or float32)."
            )
        return lx.MatrixLinearOperator(matrix, tags)
    raise ValueError(
        "`operator` must be a lineax.AbstractLinearOperator (e.g. "
        "jaxsolve.linear.poisson(...)) or a dense (n, n) array, got "
        f"{type(operator).__name__}."
    )


# lineax dispatches structural queries on the operator type: register ours.
@lx.is_symmetric.register(PoissonOperator)
@lx.is_positive_semidefinite.register(PoissonOperator)
def _true(operator):
    return True


@lx.is_diagonal.register(PoissonOperator)
@lx.is_tridiagonal.register(PoissonOperator)
@lx.has_unit_diagonal.register(PoissonOperator)
@lx.is_lower_triangular.register(PoissonOperator)
@lx.is_upper_triangular.register(PoissonOperator)
@lx.is_negative_semidefinite.register(PoissonOperator)
def _false(operator):
    return False


@lx.linearise.register(PoissonOperator)
@lx.materialise.register(PoissonOperator)
@lx.conj.register(PoissonOperator)
def _identity(operator):
    return operator


@lx.diagonal.register(PoissonOperator)
def _diagonal(operator):
    return operator.diagonal_grid().reshape(-1)


@lx.tridiagonal.register(PoissonOperator)
def _tridiagonal(operator):
    matrix = operator.as_matrix()
    return jnp.diag(matrix, -1), jnp.diag(matrix), jnp.diag(matrix, 1)
