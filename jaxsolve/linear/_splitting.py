"""Splittings $A = D + L + U$ of an operator in a given ordering, with the two
triangular solves SOR and SSOR need.

- `DenseSplitting`: natural (lexicographic) ordering of a materialised matrix; the
  triangular solves are `solve_triangular` calls, O(n^2) per sweep.
- `StencilNaturalSplitting`: natural ordering (C order, last axis fastest, i.e. the
  ordering of `operator.as_matrix()`) of a stencil operator, matrix-free: a scan over
  the leading axis and, along the last axis, a first-order linear recurrence solved by
  `lax.associative_scan`. Same iterates as the dense version, O(n log n) per sweep.
- `StencilRedBlackSplitting`: red-black (checkerboard) ordering of a stencil operator.
  Red nodes couple only to black nodes, so each half-sweep is one vectorised,
  fully parallel update (the GPU form of SOR).
"""

import abc
import math

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import lineax as lx
import numpy as np
from jaxtyping import Array, Bool, Float, Inexact

from ._operators import offdiagonal_mv, PoissonOperator


ORDERINGS = ("auto", "natural", "red_black")
# Materialising a general operator for natural ordering costs n^2 memory.
MAX_DENSE_SIZE = 8192


class AbstractSplitting(eqx.Module):
    """$A = D + L + U$ in some ordering of the unknowns."""

    @abc.abstractmethod
    def mv(self, x: Array) -> Array:
        """$A x$."""

    @abc.abstractmethod
    def diagonal(self) -> Array:
        """The diagonal $D$ (shaped like a vector)."""

    @abc.abstractmethod
    def lower_solve(self, r: Array, omega: Array) -> Array:
        """Solve $(D/\\omega + L) z = r$ (one forward SOR sweep from zero)."""

    @abc.abstractmethod
    def upper_solve(self, r: Array, omega: Array) -> Array:
        """Solve $(D/\\omega + U) z = r$ (one backward SOR sweep from zero)."""


class DenseSplitting(AbstractSplitting):
    matrix: Inexact[Array, "n n"]
    shape: tuple[int, ...] = eqx.field(static=True)

    def mv(self, x):
        return (self.matrix @ x.reshape(-1)).reshape(self.shape)

    def diagonal(self):
        return jnp.diagonal(self.matrix).reshape(self.shape)

    def _solve(self, r, omega, lower: bool):
        d = jnp.diagonal(self.matrix)
        part = jnp.tril(self.matrix, -1) if lower else jnp.triu(self.matrix, 1)
        m = part + jnp.diag(d / omega)
        z = jsl.solve_triangular(m, r.reshape(-1), lower=lower)
        return z.reshape(self.shape)

    def lower_solve(self, r, omega):
        return self._solve(r, omega, lower=True)

    def upper_solve(self, r, omega):
        return self._solve(r, omega, lower=False)


class _StencilSplitting(AbstractSplitting):
    diag: Float[Array, "..."]
    faces: list[tuple[Array, Array]]

    def mv(self, x):
        return self.diag * x + offdiagonal_mv(self.faces, x)

    def diagonal(self):
        return self.diag


def _lower_recurrence(r, d, lows):
    """Solve $d_i z_i - \\sum_k \\ell_{k,i} z_{i - e_k} = r_i$ in C order on a grid
    (all arrays of the grid shape)."""
    if r.ndim == 1:
        # z_j = a_j + c_j z_{j-1}: compose the affine maps with an associative scan
        # (log-depth, vectorised) instead of a sequential loop over the row.
        a = r / d
        c = lows[0] / d

        def compose(left, right):
            c1, a1 = left
            c2, a2 = right
            return c1 * c2, a2 + c2 * a1

        _, z = lax.associative_scan(compose, (c, a))
        return z
    if r.ndim == 2:
        return _lower_wavefront(r, d, lows)

    def body(z_prev, xs):
        r_k, d_k, low0_k, rest_k = xs
        z_k = _lower_recurrence(r_k + low0_k * z_prev, d_k, rest_k)
        return z_k, z_k

    _, z = lax.scan(body, jnp.zeros_like(r[0]), (r, d, lows[0], list(lows[1:])))
    return z


def _skew_indices(n0: int, n1: int):
    """Index maps between a 2-D grid and its anti-diagonals: row `k` of the skewed
    array holds the nodes with i + j = k, at position i."""
    i = np.arange(n0)[None, :]
    j = np.arange(n0 + n1 - 1)[:, None] - i
    valid = (j >= 0) & (j < n1)
    gather = np.where(valid, i * n1 + np.clip(j, 0, n1 - 1), 0)
    ii, jj = np.meshgrid(np.arange(n0), np.arange(n1), indexing="ij")
    scatter = ((ii + jj) * n0 + ii).reshape(-1)
    return gather, valid, scatter


def _lower_wavefront(r, d, lows):
    """The 2-D lower solve by anti-diagonal wavefronts. Node (i, j) depends only on
    (i-1, j) and (i, j-1), both on the previous anti-diagonal, so each anti-diagonal
    is one vectorised update: n0 + n1 - 1 short sequential steps, the same iterate as
    the lexicographic sweep (the ordering of unknowns within a diagonal is
    irrelevant as they do not couple)."""
    n0, n1 = r.shape
    gather, valid, scatter = _skew_indices(n0, n1)

    def skew(x, fill):
        return jnp.where(valid, x.reshape(-1)[gather], fill)

    def body(z_prev, xs):
        r_k, d_k, north_k, west_k = xs
        # North neighbour (i-1, j) sits at position i-1 of the previous diagonal.
        z_north = jnp.concatenate([jnp.zeros_like(z_prev[:1]), z_prev[:-1]])
        z_k = (r_k + north_k * z_north + west_k * z_prev) / d_k
        return z_k, z_k

    xs = (skew(r, 0), skew(d, 1), skew(lows[0], 0), skew(lows[1], 0))
    _, z_skewed = lax.scan(body, jnp.zeros((n0,), r.dtype), xs)
    return z_skewed.reshape(-1)[scatter].reshape(n0, n1)


def _flip(x):
    return jnp.flip(x, axis=tuple(range(x.ndim)))


class StencilNaturalSplitting(_StencilSplitting):
    def _full(self, a):
        return jnp.broadcast_to(a, self.diag.shape)

    def lower_solve(self, r, omega):
        lows = [self._full(lo) for lo, _ in self.faces]
        return _lower_recurrence(r, self.diag / omega, lows)

    def upper_solve(self, r, omega):
        # The upper solve is the lower solve of the grid read backwards.
        highs = [_flip(self._full(hi)) for _, hi in self.faces]
        z = _lower_recurrence(_flip(r), _flip(self.diag / omega), highs)
        return _flip(z)


class StencilRedBlackSplitting(_StencilSplitting):
    red: Bool[Array, "..."]

    def _half_sweeps(self, r, omega, first, second):
        z_first = jnp.where(first, omega * r / self.diag, 0)
        rhs = r - offdiagonal_mv(self.faces, z_first)
        return z_first + jnp.where(second, omega * rhs / self.diag, 0)

    def lower_solve(self, r, omega):
        return self._half_sweeps(r, omega, self.red, ~self.red)

    def upper_solve(self, r, omega):
        return self._half_sweeps(r, omega, ~self.red, self.red)


def make_splitting(
    operator: lx.AbstractLinearOperator, ordering: str, default: str
) -> AbstractSplitting:
    """The splitting of `operator` for `ordering` ("auto" resolves to `default` for
    stencil operators and to "natural" otherwise)."""
    if isinstance(operator, PoissonOperator):
        if ordering == "auto":
            ordering = default
        diag = operator.diagonal_grid()
        faces = operator.face_coefficients()
        if ordering == "red_black":
            idx = jnp.indices(operator.grid_shape).sum(axis=0)
            return StencilRedBlackSplitting(diag=diag, faces=faces, red=idx % 2 == 0)
        return StencilNaturalSplitting(diag=diag, faces=faces)
    if ordering == "red_black":
        raise ValueError(
            "ordering='red_black' needs a stencil operator (jaxsolve.linear.poisson); "
            f"got a {type(operator).__name__}. Use ordering='natural' (or 'auto') for "
            "dense and general lineax operators."
        )
    shape = operator.in_structure().shape
    n = math.prod(shape)
    if n > MAX_DENSE_SIZE and not isinstance(operator, lx.MatrixLinearOperator):
        raise ValueError(
            f"Natural-ordering SOR on a general lineax operator materialises an "
            f"{n}x{n} matrix (more than {MAX_DENSE_SIZE} unknowns). Use a stencil "
            "operator (jaxsolve.linear.poisson) or pass the matrix explicitly."
        )
    return DenseSplitting(matrix=operator.as_matrix(), shape=shape)


def check_ordering(ordering: str) -> None:
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}.")
