from typing import ClassVar

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._base import (
    AbstractSplittingSolver,
    check_common,
    check_omega,
    to_omega,
    to_tolerance,
)


class SSORPCG(AbstractSplittingSolver):
    r"""Conjugate gradients preconditioned by symmetric SOR (SSOR).

    With $A = L + D + U$, the SSOR preconditioner is

    $$M = \frac{(D + \omega L)\, D^{-1} (D + \omega U)}{\omega (2 - \omega)},
    \qquad M^{-1} r = \tfrac{2-\omega}{\omega}\,(D/\omega + U)^{-1} D\,
    (D/\omega + L)^{-1} r,$$

    applied matrix-free with one forward and one backward SOR sweep per iteration,
    never formed. For symmetric positive definite $A$ and $0 < \omega < 2$, $M$ is SPD
    and preconditioned CG applies. Stops on
    $\|b - A x\|_2 \le \max(\text{atol}, \text{rtol}\,\|b\|_2)$; the recursively
    updated residual is replaced by the true one every `stabilise_every` iterations
    and whenever it claims convergence, so success is always certified by a true
    residual.

    **Orderings.** `"natural"` (the default via `"auto"`): lexicographic SSOR, the
    classical preconditioner (condition number $O(h^{-1})$ instead of $O(h^{-2})$ at a
    good $\omega$, as in MATLAB's `pcg` with SSOR factors). `"red_black"` (stencil
    operators only): fully parallel sweeps, but red-black SSOR is a much weaker
    preconditioner (its best $\omega$ is near 1); prefer it only where parallelism
    dominates.

    **Complex systems.** Hermitian positive definite $A$ (complex64/complex128,
    dense or any single-array lineax operator) is supported: $M$ is then Hermitian
    positive definite and CG runs with the inner product $u^H v$.

    **Breakdown.** If $p^\top A p \le 0$ or $r^\top M^{-1} r \le 0$, the operator or
    preconditioner is not SPD: the iteration stops at the last finite iterate with
    `RESULTS.breakdown` (never a NaN reported as success).

    **Arguments:**

    - `omega`: relaxation parameter in (0, 2), an array field (no recompiles).
    - `rtol`, `atol`: stopping tolerances on the true residual 2-norm.
    - `max_steps`: maximum number of CG iterations.
    - `ordering`: `"auto"` (= `"natural"`), `"natural"` or `"red_black"`.
    - `stabilise_every`: recompute the true residual every this many iterations.

    ??? cite "References"

        Axelsson, "Iterative Solution Methods" (1994), section 7.4. Khodak, Chow,
        Balcan, Talwalkar, "Learning to Relax", ICLR 2024 (SSOR-PCG with tuned omega).

    !!! example

        ```python
        import jax.numpy as jnp, jaxsolve as js
        A = js.linear.poisson((32, 32))
        sol = js.linear.solve(A, jnp.ones((32, 32)), js.linear.SSORPCG(omega=1.5))
        print(sol.stats["num_steps"])
        ```
    """

    omega: Float[Array, ""] = eqx.field(converter=to_omega)
    rtol: float = eqx.field(default=1e-6, converter=to_tolerance)
    atol: float = eqx.field(default=0.0, converter=to_tolerance)
    max_steps: int = 10_000
    ordering: str = eqx.field(default="auto", static=True)
    stabilise_every: int = eqx.field(default=10, static=True)
    default_ordering: ClassVar[str] = "natural"

    def __check_init__(self):
        check_common(self)
        check_omega(self)
        if not isinstance(self.stabilise_every, int) or self.stabilise_every < 1:
            raise ValueError(
                "SSORPCG(stabilise_every=...) must be an integer >= 1, got "
                f"{self.stabilise_every!r}."
            )

    def _precondition(self, split, r, omega):
        y = split.lower_solve(r, omega)
        return (2 - omega) / omega * split.upper_solve(split.diagonal() * y, omega)

    def _start(self, state, b, x0, tol):
        _, split = state
        omega = self._omega(b.dtype)
        r = b - split.mv(x0)
        z = self._precondition(split, r, omega)
        return {
            "x": x0,
            "r": r,
            "p": z,
            # r^H M^{-1} r and p^H A p are real for Hermitian A and M (complex
            # systems): keep the real part so the comparisons below are defined.
            "gamma": jnp.real(jnp.vdot(r, z)),
            "rnorm": jnp.linalg.norm(r),
            "breakdown": jnp.array(False),
            "certified": jnp.array(True),
            "k": jnp.array(0, jnp.int32),
            "tol": tol,
        }

    def _step(self, state, b, c):
        _, split = state
        omega = self._omega(b.dtype)
        p, gamma = c["p"], c["gamma"]
        ap = split.mv(p)
        pap = jnp.real(jnp.vdot(p, ap))
        # `not (> 0)` also catches NaN curvature.
        bad = ~(pap > 0) | ~(gamma > 0)
        alpha = jnp.where(bad, 0, gamma / jnp.where(bad, 1, pap)).astype(p.dtype)
        x = c["x"] + alpha * p
        r_rec = c["r"] - alpha * ap
        k = c["k"] + 1
        # Recursive residuals drift from b - A x in floating point; certify with the
        # true residual periodically and whenever the recursive one says "converged".
        need_true = (k % self.stabilise_every == 0) | (
            jnp.linalg.norm(r_rec) <= c["tol"]
        )
        r = lax.cond(need_true, lambda: b - split.mv(x), lambda: r_rec)
        z = self._precondition(split, r, omega)
        gamma_new = jnp.real(jnp.vdot(r, z))
        beta = (gamma_new / jnp.where(bad, 1, gamma)).astype(p.dtype)
        p_new = z + beta * p
        keep = lambda old, new: jnp.where(bad, old, new)
        return {
            "x": keep(c["x"], x),
            "r": keep(c["r"], r),
            "p": keep(p, p_new),
            "gamma": keep(gamma, gamma_new),
            "rnorm": keep(c["rnorm"], jnp.linalg.norm(r)),
            "breakdown": c["breakdown"] | bad,
            "certified": need_true & ~bad,
            "k": k,
            "tol": c["tol"],
        }
