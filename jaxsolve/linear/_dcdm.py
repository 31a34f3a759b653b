r"""The deep conjugate direction method (DCDM): conjugate directions from a network."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
from jaxtyping import Array, Shaped

from ._base import AbstractIterativeLinearSolver, check_common, to_tolerance
from ._operators import as_operator


def _constant(network: Any, dtype: Any) -> Any:
    """The network's weights as constants of the solve, cast to the solve's dtype.

    The solution of $A x = b$ does not depend on the directions used to find it, so
    no derivative flows into the weights (implicit differentiation is exact for the
    exact solution; the unrolled adjoint differentiates the iterates w.r.t. $A$, $b$).
    """
    return jtu.tree_map(
        lambda a: (
            jax.lax.stop_gradient(a.astype(dtype)) if eqx.is_inexact_array(a) else a
        ),
        network,
    )


def _as_mask(mask: Any) -> Array | None:
    return None if mask is None else jnp.asarray(mask)


class DeepConjugateDirection(AbstractIterativeLinearSolver):
    r"""The deep conjugate direction method (DCDM) for symmetric positive definite
    grid systems $A x = b$: a conjugate-direction iteration whose search directions
    come from a network $f$ that approximates $A^{-1}$ up to scale.

    Each iteration, with $r = b - A x$ the **true** residual,

    $$q = f\bigl(r / \|r\|_2\bigr), \qquad
    p = q - \sum_{j=1}^{k} \frac{q^\top A p_j}{p_j^\top A p_j}\, p_j, \qquad
    x \leftarrow x + \frac{p^\top r}{p^\top A p}\, p, \qquad r \leftarrow b - A x,$$

    where $p_1, \dots, p_k$ are the last $k$ = `n_orthogonal` directions
    (A-orthogonalised by modified Gram-Schmidt, most recent first). Stops on
    $\|b - A x\|_2 \le \max(\text{atol}, \text{rtol}\,\|b\|_2)$. Each step minimises
    the $A$-norm of the error along $p$, so the error never grows. With $f$ the
    identity and $k \ge 1$ this is conjugate gradients (same iterates in exact
    arithmetic); with $f$ a fixed SPD linear map, preconditioned CG; with $f = A^{-1}$
    it converges in one step. A trained [`jaxsolve.linear.DCDMNetwork`][] is
    nonlinear, which is why the directions are A-orthogonalised explicitly and why the
    residual is recomputed (two operator applications and one network evaluation per
    step).

    **Breakdown.** If $p^\top A p \le 0$ or the direction is not finite (e.g. the
    network returns NaN), the iteration stops at the last iterate with
    `RESULTS.breakdown`, never a NaN.

    **When to use it.** Many solves with one family of operators on a GPU, where the
    network is cheap per step and its few iterations pay off. On a CPU, algebraic
    multigrid (pyamg) is faster in wall-clock time; see `docs/dcdm.md` for measured
    figures. Pretrained networks ship with the package: [`jaxsolve.linear.pretrained`][].

    **Arguments:**

    - `network`: a callable `f(r) -> q` on grid-shaped arrays, typically a
        [`jaxsolve.linear.DCDMNetwork`][] (whose weights are cast to the solve's
        dtype and treated as constants: no gradient flows into them).
    - `rtol`, `atol`: stopping tolerances on the true residual 2-norm.
    - `max_steps`: maximum number of iterations.
    - `n_orthogonal`: $k$, the number of previous directions to A-orthogonalise
        against (static; the paper uses 2).
    - `mask`: optional 0/1 array of the grid shape marking the unknown cells of an
        obstacle domain; passed to the network and applied to its output.
    - `network_dtype`: run the network in this dtype (e.g. `"float32"` inside a
        float64 solve: the directions need not be accurate, only the iteration);
        default: the solve's dtype.

    ??? cite "References"

        Kaneda, Akar, Chen, Trevino Kala, Hyde, Teran, "A Deep Conjugate Direction
        Method for Iteratively Solving Linear Systems", ICML 2023 (arXiv 2205.10763).

    !!! example

        ```python
        import jax.numpy as jnp, jaxsolve as js
        net = js.linear.pretrained("poisson2d")
        A = js.linear.poisson((64, 64))
        sol = js.linear.solve(A, jnp.ones((64, 64)), js.linear.DeepConjugateDirection(net))
        print(sol.stats["num_steps"])
        ```
    """

    network: Any
    rtol: float = eqx.field(default=1e-6, converter=to_tolerance)
    atol: float = eqx.field(default=0.0, converter=to_tolerance)
    max_steps: int = 1000
    n_orthogonal: int = eqx.field(default=2, static=True)
    mask: Shaped[Array, "..."] | None = eqx.field(default=None, converter=_as_mask)
    network_dtype: str | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        check_common(self)
        k = self.n_orthogonal
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ValueError(
                "DeepConjugateDirection(n_orthogonal=...) must be an integer >= 0 "
                f"(the paper uses 2), got {k!r}."
            )
        if not callable(self.network):
            raise ValueError(
                "DeepConjugateDirection(network=...) must be callable (e.g. a "
                "js.linear.DCDMNetwork or js.linear.pretrained('poisson2d')), got "
                f"{type(self.network).__name__}."
            )
        if self.network_dtype is not None and self.network_dtype not in (
            "float32",
            "float64",
        ):
            raise ValueError(
                "DeepConjugateDirection(network_dtype=...) must be None, 'float32' "
                f"or 'float64', got {self.network_dtype!r}."
            )
        ndim = getattr(self.network, "ndim", None)
        if self.mask is not None and ndim is not None and self.mask.ndim != ndim:
            raise ValueError(
                f"DeepConjugateDirection(mask=...) has shape {self.mask.shape}, but the "
                f"network is {ndim}-D; pass a mask of the grid shape."
            )

    def init(self, operator, options):
        del options
        operator = as_operator(operator)
        shape = operator.in_structure().shape
        dtype = operator.in_structure().dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"DeepConjugateDirection needs a real (float32/float64) operator, got "
                f"{dtype}: its networks are trained on real Poisson-type operators. "
                "For complex Hermitian positive definite systems use "
                "js.linear.SSORPCG or js.linear.SOR."
            )
        ndim = getattr(self.network, "ndim", None)
        if len(shape) not in (2, 3) or (ndim is not None and ndim != len(shape)):
            want = f"a {ndim}-D grid" if ndim is not None else "a 2-D or 3-D grid"
            raise ValueError(
                f"DeepConjugateDirection: the network ({type(self.network).__name__}"
                f"{'' if ndim is None else f', ndim={ndim}'}) needs an operator on "
                f"{want}, but the operator ({type(operator).__name__}) acts on arrays "
                f"of shape {shape}. Use a grid stencil such as "
                "js.linear.poisson(shape) with a network of the same dimension."
            )
        if self.mask is not None and self.mask.shape != shape:
            raise ValueError(
                f"DeepConjugateDirection(mask=...) has shape {self.mask.shape}, but the "
                f"operator acts on grids of shape {shape}."
            )
        net_dtype = (
            dtype if self.network_dtype is None else jnp.dtype(self.network_dtype)
        )
        return operator, _constant(self.network, net_dtype)

    # The network approximates A^{-1} of a symmetric A: the transposed (adjoint) solve
    # reuses it unchanged with the transposed operator (the same one, for stencils).
    def transpose(self, state, options):
        operator, network = state
        return (operator.transpose(), network), options

    def conj(self, state, options):
        operator, network = state
        return (lx.conj(operator), network), options

    def _direction(self, network, r, rnorm):
        dtype = r.dtype
        unit = r / jnp.where(rnorm > 0, rnorm, 1)
        net_in = unit
        leaves = jtu.tree_leaves(eqx.filter(network, eqx.is_inexact_array))
        if leaves:
            net_in = unit.astype(leaves[0].dtype)
        if self.mask is None:
            q = network(net_in)
        else:
            mask = jax.lax.stop_gradient(self.mask).astype(net_in.dtype)
            if getattr(network, "mask_channel", False):
                q = network(net_in * mask, mask)
            else:
                q = network(net_in * mask)
            q = q * mask
        return q.astype(dtype)

    def _start(self, state, b, x0, tol):
        del tol
        operator, _ = state
        r = b - operator.mv(x0)
        k = self.n_orthogonal
        return {
            "x": x0,
            "r": r,
            "rnorm": jnp.linalg.norm(r),
            "breakdown": jnp.array(False),
            # The last k directions p_j, their images A p_j and curvatures p_j^T A p_j
            # (zero curvature marks an empty slot).
            "p": jnp.zeros((k, *b.shape), b.dtype),
            "ap": jnp.zeros((k, *b.shape), b.dtype),
            "pap": jnp.zeros((k,), b.dtype),
        }

    def _step(self, state, b, c):
        operator, network = state
        q = self._direction(network, c["r"], c["rnorm"])
        # Modified Gram-Schmidt in the A inner product, most recent direction first.
        for j in range(self.n_orthogonal):
            pap = c["pap"][j]
            coef = jnp.vdot(c["ap"][j], q) / jnp.where(pap > 0, pap, 1)
            q = q - jnp.where(pap > 0, coef, 0) * c["p"][j]
        aq = operator.mv(q)
        qaq = jnp.vdot(q, aq)
        # `not (> 0)` also catches a NaN curvature from a non-finite direction.
        bad = ~(qaq > 0) | ~jnp.all(jnp.isfinite(q))
        alpha = jnp.where(bad, 0, jnp.vdot(q, c["r"]) / jnp.where(bad, 1, qaq))
        q = jnp.where(bad, 0, q)
        aq = jnp.where(bad, 0, aq)
        x = c["x"] + alpha * q
        # The true residual (the paper's choice): a nonlinear f makes the
        # recursively updated one drift.
        r = b - operator.mv(x)
        keep = lambda old, new: jnp.where(bad, old, new)
        out = {
            "x": keep(c["x"], x),
            "r": keep(c["r"], r),
            "rnorm": keep(c["rnorm"], jnp.linalg.norm(r)),
            "breakdown": c["breakdown"] | bad,
        }
        if self.n_orthogonal:
            out["p"] = jnp.concatenate([q[None], c["p"][:-1]])
            out["ap"] = jnp.concatenate([aq[None], c["ap"][:-1]])
            out["pap"] = jnp.concatenate([jnp.where(bad, 0, qaq)[None], c["pap"][:-1]])
        else:
            out["p"], out["ap"], out["pap"] = c["p"], c["ap"], c["pap"]
        return out
