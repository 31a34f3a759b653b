r"""Differentiation strategies: implicit (via the defining equation) or unrolled.

A driver computes its output `root` by an iteration. How the iteration is
differentiated is a strategy object passed by the user (`adjoint=...`), in the style of
optimistix/diffrax, never a flag inside the solver:

- [`jaxsolve.ImplicitAdjoint`][]: the output is characterised by an equation
  $F(x^\star, \theta) = 0$ (for a linear solve, $F(x, (A, b)) = A x - b$). By the
  implicit function theorem
  $\mathrm{d}x^\star = -(\partial_x F)^{-1} \partial_\theta F \, \mathrm{d}\theta$.
  This is implemented as a custom JVP whose tangent is a `lineax.linear_solve`, so
  forward mode (`jax.jvp`, `jax.jacfwd`) works, and reverse mode (`jax.grad`) follows
  by transposition: it costs one adjoint linear solve and O(1) memory in the number of
  iterations of the primal solver.
- [`jaxsolve.UnrolledAdjoint`][]: differentiate through the iterations themselves, with
  a checkpointed while loop (memory grows like `checkpoints`, not like the number of
  steps). Use it when the output is *not* a converged solution (e.g. a fixed small
  `max_steps`) and you want the derivative of what was actually computed.
"""

import abc
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
from jaxtyping import PyTree


LoopKind = Literal["lax", "checkpointed"]


class AbstractAdjoint(eqx.Module):
    """How a driver differentiates its iterative solve."""

    @abc.abstractmethod
    def loop_options(self) -> dict:
        """Keyword arguments for `jaxsolve._core.iterate` (`kind`, `checkpoints`):
        the while loop the primal iteration should use."""

    @abc.abstractmethod
    def apply(
        self,
        primal_fn: Callable[[PyTree], tuple[PyTree, PyTree]],
        rewrite_fn: Callable[[PyTree, PyTree], PyTree],
        inputs: PyTree,
        linear_solver: lx.AbstractLinearSolver,
        operator_fn: Callable[[PyTree, PyTree], lx.AbstractLinearOperator] | None,
    ) -> tuple[PyTree, PyTree]:
        """Run `primal_fn(inputs) -> (root, aux)` and attach derivatives.

        `rewrite_fn(root, inputs)` is zero at the solution; `operator_fn(root, inputs)`
        (optional) gives $\\partial_x F$ as a lineax operator (default: the Jacobian of
        `rewrite_fn` in its first argument); `linear_solver` solves with it. `aux`
        (result codes, statistics) is never differentiated.
        """


class ImplicitAdjoint(AbstractAdjoint):
    """Differentiate through the defining equation of the output (implicit function
    theorem). O(1) memory in the number of iterations; forward and reverse mode.

    **Arguments:**

    - `linear_solver`: the solver used for the tangent/adjoint linear solve with
        $\\partial_x F$. `None` (default) lets the driver choose: the linear family
        reuses the primal solver itself, so a gradient through `SOR` costs one more
        SOR solve with the transposed operator.

    The derivative is exact for the exact solution; for an iterate stopped at
    tolerance `rtol` it is accurate to about `rtol` relative (the usual trade-off of
    implicit differentiation).

    ??? cite "References"

        Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022.
    """

    linear_solver: lx.AbstractLinearSolver | None = None

    def loop_options(self) -> dict:
        return {"kind": "lax"}

    def apply(self, primal_fn, rewrite_fn, inputs, linear_solver, operator_fn=None):
        solver = linear_solver if self.linear_solver is None else self.linear_solver
        return implicit_jvp(primal_fn, rewrite_fn, inputs, solver, operator_fn)


class UnrolledAdjoint(AbstractAdjoint):
    """Differentiate through the iterations with a checkpointed while loop.

    **Arguments:**

    - `checkpoints`: number of checkpoints kept for reverse mode; `None` picks
        $O(\\log(\\text{max\\_steps}))$ automatically (online treeverse checkpointing).

    Reverse mode only (the loop has no forward-mode rule): `jax.jvp` raises.
    """

    checkpoints: int | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if self.checkpoints is not None and self.checkpoints < 1:
            raise ValueError(
                f"UnrolledAdjoint(checkpoints=...) must be >= 1, got {self.checkpoints}."
            )

    def loop_options(self) -> dict:
        return {"kind": "checkpointed", "checkpoints": self.checkpoints}

    def apply(self, primal_fn, rewrite_fn, inputs, linear_solver, operator_fn=None):
        del rewrite_fn, linear_solver, operator_fn
        root, aux = primal_fn(inputs)
        return root, jax.lax.stop_gradient(aux)


def implicit_jvp(
    primal_fn: Callable[[PyTree], tuple[PyTree, PyTree]],
    rewrite_fn: Callable[[PyTree, PyTree], PyTree],
    inputs: PyTree,
    linear_solver: lx.AbstractLinearSolver,
    operator_fn: Callable[[PyTree, PyTree], lx.AbstractLinearOperator] | None = None,
    *,
    throw: bool = True,
) -> tuple[PyTree, PyTree]:
    """Return `primal_fn(inputs)` with derivatives given by the implicit function
    theorem applied to `rewrite_fn(root, inputs) = 0`.

    `primal_fn`, `rewrite_fn` and `operator_fn` must not close over JAX arrays that are
    being differentiated: pass everything through `inputs` (closed-over tracers would
    escape the custom rule). `throw=False` lets a failed tangent solve (singular or
    overflowing Jacobian) return its non-finite tangent instead of raising, for a
    driver that reports it through its own result code. Forward mode only: lineax
    transposes a solve with `throw=True` unconditionally, so in reverse mode a failed
    adjoint solve still raises lineax's error.
    """
    root, aux = _implicit(
        primal_fn, rewrite_fn, operator_fn, linear_solver, bool(throw), inputs
    )
    return root, jax.lax.stop_gradient(aux)


@eqx.filter_custom_jvp
def _implicit(primal_fn, rewrite_fn, operator_fn, linear_solver, throw, inputs):
    del rewrite_fn, operator_fn, linear_solver, throw
    return primal_fn(inputs)


@_implicit.def_jvp
def _implicit_jvp_rule(primals, tangents):
    primal_fn, rewrite_fn, operator_fn, linear_solver, throw, inputs = primals
    t_inputs = tangents[-1]
    root, aux = _implicit(
        primal_fn, rewrite_fn, operator_fn, linear_solver, throw, inputs
    )
    # `aux` (result codes, statistics) has no derivative: a None per leaf.
    t_aux = jtu.tree_map(lambda _: None, aux)
    if t_inputs is None or not jtu.tree_leaves(t_inputs):
        return (root, aux), (jtu.tree_map(lambda _: None, root), t_aux)
    # Symbolic-zero tangents arrive as None: give them zeros of the right shape so
    # that `jax.jvp` sees a tangent for every differentiable input.
    diff_inputs, static_inputs = eqx.partition(inputs, eqx.is_inexact_array)
    t_diff = jtu.tree_map(
        lambda x, t: None if x is None else (jnp.zeros_like(x) if t is None else t),
        diff_inputs,
        t_inputs,
        is_leaf=lambda x: x is None,
    )

    def residual_of_inputs(d):
        return rewrite_fn(root, eqx.combine(d, static_inputs))

    _, t_residual = jax.jvp(residual_of_inputs, (diff_inputs,), (t_diff,))
    if operator_fn is None:
        operator = lx.JacobianLinearOperator(rewrite_fn, root, inputs)
    else:
        operator = operator_fn(root, inputs)
    t_root = lx.linear_solve(operator, t_residual, linear_solver, throw=throw).value
    t_root = jtu.tree_map(lax.neg, t_root)
    return (root, aux), (t_root, t_aux)


__all__ = [
    "AbstractAdjoint",
    "ImplicitAdjoint",
    "UnrolledAdjoint",
    "implicit_jvp",
]
