r"""The first-order penalty method of Kwon, Kwon, Wright, Nowak (ICLR 2024)."""

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._base import AbstractBilevelSolver, check_int, check_positive, to_param
from ._problem import FlatProblem


def inner_steps(problem: FlatProblem, objective, x, y, duals, lr, steps, qp_steps):
    """`steps` projected gradient steps on `objective(x, .)` over C(x). Returns the
    new `y`, the projection's duals and the KKT multipliers `(mu, nu)` estimated
    from them (`duals / lr`: at a fixed point of a projected-gradient step of length
    `lr`, `lr * grad + A^T duals = 0`)."""
    shift_g, shift_e = problem.fibre_shift(x)
    grad = jax.grad(objective, argnums=1)

    def body(_, carry):
        y, duals = carry
        return problem.fibre(y - lr * grad(x, y), duals, qp_steps, shift_g, shift_e)

    y, duals = lax.fori_loop(0, steps, body, (y, duals))
    mu, nu = problem.fibre_multipliers(duals)
    return y, duals, mu / lr, nu / lr


class Penalty(AbstractBilevelSolver):
    r"""First-order penalty method on the value-function penalty (Kwon et al.).

    Minimises $\psi_\sigma(x) = \min_{y \in C(x)} \{F(x, y) + (f(x, y) -
    f^\star(x))/\sigma\}$, $f^\star(x) = \min_{y \in C(x)} f(x, y)$, $C(x) = \{y \in
    Y : g(x, y) \le 0, h(x, y) = 0\}$: $|\psi_\sigma - \psi| = O(\sigma)$ under an
    error-bound condition, without lower-level strong convexity. Each outer step
    runs `inner_steps` projected gradient steps (step `inner_lr`) on two sequences,
    $y$ for $\sigma F + f$ and $z$ for $f$, then takes the first-order step
    $$x \leftarrow P_X\Big(x - \alpha\Big[\nabla_x F(x, y) +
      \frac{\nabla_x L(x, y; \mu_y) - \nabla_x L(x, z; \mu_z)}{\sigma}\Big]\Big),$$
    $L = f + \mu^\top g + \nu^\top h$ (the envelope theorem for $\min_{C(x)}$; the
    multipliers come from the projections' duals, so constraints that couple $x$ and
    $y$ are handled; without them the formula is the paper's).

    **Arguments:** `sigma` (penalty parameter, smaller is more exact and stiffer),
    `alpha` (outer step), `inner_lr` (inner step: below $1/L$ of $\sigma F + f$),
    `inner_steps` (static), `tol` (stop on $\|\Delta x\|/\alpha$; `0` = fixed
    budget; the gap $f(x, y) - f(x, z)$ is reported), `qp_steps` (static).

    ??? cite "References"

        ```bibtex
        @inproceedings{kwon2024penalty,
          title={On Penalty Methods for Nonconvex Bilevel Optimization and
                 First-Order Stochastic Approximation},
          author={Kwon, Jeongyeol and Kwon, Dohyun and Wright, Steve and
                  Nowak, Robert},
          booktitle={International Conference on Learning Representations},
          year={2024}
        }
        ```

    !!! example

        ```python
        import jax.numpy as jnp, jaxsolve as js
        bl = js.bilevel
        problem = bl.BilevelProblem(
            upper=lambda x, y: 0.5 * jnp.sum((y - 2.0) ** 2) + 0.5 * jnp.sum(x**2),
            lower=lambda x, y: 0.5 * jnp.sum((y - x) ** 2),
        )
        sol = bl.solve(problem, bl.Penalty(sigma=0.01, alpha=0.005),
                       jnp.zeros(3), jnp.zeros(3), max_steps=2000)
        ```
    """

    sigma: Float[Array, ""]
    alpha: Float[Array, ""]
    inner_lr: Float[Array, ""]
    tol: Float[Array, ""]
    inner_steps: int = eqx.field(static=True)
    qp_steps: int = eqx.field(static=True)

    def __init__(
        self,
        sigma: float | Float[ArrayLike, ""] = 0.05,
        alpha: float | Float[ArrayLike, ""] = 0.01,
        inner_lr: float | Float[ArrayLike, ""] = 0.5,
        *,
        inner_steps: int = 10,
        tol: float | Float[ArrayLike, ""] = 0.0,
        qp_steps: int = 20,
    ):
        for field in ("sigma", "alpha", "inner_lr"):
            value = to_param(locals()[field], field, "Penalty")
            check_positive(value, field, "Penalty")
            setattr(self, field, value)
        self.tol = to_param(tol, "tol", "Penalty")
        check_positive(self.tol, "tol", "Penalty", allow_zero=True)
        check_int(inner_steps, "inner_steps", "Penalty")
        check_int(qp_steps, "qp_steps", "Penalty")
        self.inner_steps, self.qp_steps = inner_steps, qp_steps

    def init(self, problem, x, y, duals):
        nd = jnp.zeros((problem.fibre.num_duals,), x.dtype)
        return {
            "x": x,
            "y": y,
            "z": y,
            "k": jnp.zeros((), jnp.int32),
            "duals_y": nd,
            "duals_z": nd,
            "x_duals": jnp.zeros((problem.xproj.num_duals,), x.dtype),
            "stationarity": jnp.full((), jnp.inf, x.dtype),
            "value_gap": jnp.full((), jnp.inf, x.dtype),
        }

    def step(self, problem, state):
        x = state["x"]
        sigma, alpha, lr = (
            getattr(self, k).astype(x.dtype) for k in ("sigma", "alpha", "inner_lr")
        )

        def penalised(x, y):
            return sigma * problem.upper(x, y) + problem.lower(x, y)

        # h_sigma = sigma F + f has curvature ~ 1 + sigma L_F: the step is shared.
        y, duals_y, mu_y, nu_y = inner_steps(
            problem,
            penalised,
            x,
            state["y"],
            state["duals_y"],
            lr,
            self.inner_steps,
            self.qp_steps,
        )
        z, duals_z, mu_z, nu_z = inner_steps(
            problem,
            problem.lower,
            x,
            state["z"],
            state["duals_z"],
            lr,
            self.inner_steps,
            self.qp_steps,
        )
        grad_x = (
            jax.grad(problem.upper)(x, y)
            + (
                problem.lagrangian_x_grad(x, y, mu_y, nu_y)
                - problem.lagrangian_x_grad(x, z, mu_z, nu_z)
            )
            / sigma
        )
        x_new, x_duals = problem.xproj(
            x - alpha * grad_x, state["x_duals"], self.qp_steps
        )
        return {
            "x": x_new,
            "y": y,
            "z": z,
            "k": state["k"] + 1,
            "duals_y": duals_y,
            "duals_z": duals_z,
            "x_duals": x_duals,
            "stationarity": jnp.linalg.norm(x_new - x) / alpha,
            "value_gap": problem.lower(x, y) - problem.lower(x, z),
        }
