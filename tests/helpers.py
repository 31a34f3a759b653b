"""Shared test machinery: the solver registry, tree comparison, finite differences."""

import dataclasses
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

import jaxsolve as js


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8) -> bool:
    """Same structure, and every leaf allclose."""
    if jtu.tree_structure(x) != jtu.tree_structure(y):
        return False
    return all(
        np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=rtol, atol=atol)
        for a, b in zip(jtu.tree_leaves(x), jtu.tree_leaves(y))
    )


def finite_difference_jvp(fn: Callable, primals: tuple, tangents: tuple, eps=1e-6):
    """Central finite difference of `fn` at `primals` in direction `tangents`
    (float64: error O(eps^2) + O(machine eps / eps))."""
    plus = jtu.tree_map(lambda p, t: p + eps * t, primals, tangents)
    minus = jtu.tree_map(lambda p, t: p - eps * t, primals, tangents)
    out_plus, out_minus = fn(*plus), fn(*minus)
    return jtu.tree_map(lambda a, b: (a - b) / (2 * eps), out_plus, out_minus)


def random_spd(key, n: int, dtype=jnp.float64) -> jax.Array:
    """A random symmetric positive definite matrix with condition number ~ 10."""
    q, _ = jnp.linalg.qr(jax.random.normal(key, (n, n), dtype))
    eig = jnp.linspace(1.0, 10.0, n, dtype=dtype)
    return (q * eig[None, :]) @ q.T


def variable_coefficient(shape, dtype=jnp.float64) -> jax.Array:
    """A smooth positive coefficient field (deterministic)."""
    grids = jnp.meshgrid(
        *[jnp.linspace(0, 1, n, dtype=dtype) for n in shape], indexing="ij"
    )
    return 1.0 + 0.5 * jnp.sin(3.0 * sum(grids)) ** 2


@dataclasses.dataclass(frozen=True)
class Case:
    """A solver on a small problem: `make_solver(omega)` builds the solver with a
    given relaxation parameter; `make_operator(dtype)` the operator."""

    name: str
    make_solver: Callable[..., Any]
    make_operator: Callable[[Any], Any]
    omega: float

    def operator(self, dtype=jnp.float64):
        return self.make_operator(dtype)

    def solver(self, omega=None, **kwargs):
        return self.make_solver(self.omega if omega is None else omega, **kwargs)

    def rhs(self, dtype=jnp.float64, seed=0):
        shape = js.linear.as_operator(self.operator(dtype)).in_structure().shape
        return jax.random.normal(jax.random.key(seed), shape, dtype)

    def dense(self, dtype=jnp.float64):
        return js.linear.as_operator(self.operator(dtype)).as_matrix()


def _dense_spd(dtype):
    return random_spd(jax.random.key(42), 10, dtype)


def _poisson2d(dtype):
    return js.linear.poisson(
        (5, 6), coefficient=variable_coefficient((5, 6), dtype), dtype=dtype
    )


def _poisson3d(dtype):
    return js.linear.poisson((3, 4, 3), shift=0.3, dtype=dtype)


def _sor(ordering):
    def make(omega, **kw):
        kw.setdefault("rtol", 1e-10)
        return js.linear.SOR(omega=omega, ordering=ordering, **kw)

    return make


def _ssor(ordering):
    def make(omega, **kw):
        kw.setdefault("rtol", 1e-10)
        return js.linear.SSORPCG(omega=omega, ordering=ordering, **kw)

    return make


# Every public linear solver, on a dense matrix and on 2-D/3-D stencils, in each
# ordering it supports. Future solvers join here.
REGISTRY = [
    Case("sor-red_black-poisson2d", _sor("red_black"), _poisson2d, 1.4),
    Case("sor-natural-poisson3d", _sor("natural"), _poisson3d, 1.3),
    Case("sor-natural-dense", _sor("natural"), _dense_spd, 1.2),
    Case("ssorpcg-natural-poisson2d", _ssor("natural"), _poisson2d, 1.5),
    Case("ssorpcg-red_black-poisson3d", _ssor("red_black"), _poisson3d, 1.1),
    Case("ssorpcg-natural-dense", _ssor("natural"), _dense_spd, 1.0),
]
IDS = [c.name for c in REGISTRY]


def jit_solve(operator, b, solver, **kwargs):
    """`js.linear.solve` under `eqx.filter_jit`."""
    return eqx.filter_jit(js.linear.solve)(operator, b, solver, **kwargs)


def coupled_bilevel_toy():
    """A three-variable bilevel problem with a coupled equality constraint, the small
    case the progress and save/load tests run LV-HBA on."""
    import jaxsolve.bilevel as bl

    def upper(x, y):
        return 0.5 * jnp.sum((x - y[1]) ** 2) + 0.5 * jnp.sum((y[0] - 1) ** 2)

    def lower(x, y):
        return 0.5 * jnp.sum(y[0] ** 2) - x @ y[0] + jnp.sum(y[1])

    def equality(x, y):
        return jnp.reshape(jnp.sum(x) + jnp.sum(y[0]) + jnp.sum(y[1]), (1,))

    return bl.BilevelProblem(upper, lower, equality=equality)
