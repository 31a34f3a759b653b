r"""V-PBGD: value-function penalised bilevel gradient descent (Shen & Chen, 2023)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._base import AbstractBilevelSolver, check_int, check_positive, to_param
from ._penalty import inner_steps


class VPBGD(AbstractBilevelSolver):
    r"""Value-function penalised bilevel gradient descent (V-PBGD).

    The single-level penalty problem
    $$\min_{(x, y) \in C} F(x, y) + \gamma\,\big(f(x, y) - v(x)\big), \qquad
      v(x) = \min_{z \in C(x)} f(x, z),$$
    solved by projected gradient descent on $(x, y)$ jointly, with $v$ tracked by
    `inner_steps` projected gradient steps on $z$ per outer step and
    $\nabla v(x) = \nabla_x [f + \mu^\top g + \nu^\top h](x, z)$ (envelope theorem,
    multipliers from the projection's duals):
    $$(x, y) \leftarrow P_C\big((x, y) - \alpha [\nabla F + \gamma (\nabla f(x, y) -
      (\nabla v(x), 0))]\big).$$
    Simpler than [`jaxsolve.bilevel.Penalty`][] (one sequence less), the usual
    first-order baseline; needs $\alpha \lesssim 1/(\gamma L_f)$.

    **Arguments:** `gamma` (penalty weight), `alpha` (step, default `0.1 / gamma`
    as in the authors' toy), `inner_lr`, `inner_steps` (static), `tol`, `qp_steps`.

    ??? cite "References"

        ```bibtex
        @inproceedings{shen2023penalty,
          title={On Penalty-based Bilevel Gradient Descent Method},
          author={Shen, Han and Chen, Tianyi},
          booktitle={International Conference on Machine Learning},
          year={2023}
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
        sol = bl.solve(problem, bl.VPBGD(gamma=10.0), jnp.zeros(3), jnp.zeros(3),
                       max_steps=2000)
        ```
    """

    gamma: Float[Array, ""]
    alpha: Float[Array, ""]
    inner_lr: Float[Array, ""]
    tol: Float[Array, ""]
    inner_steps: int = eqx.field(static=True)
    qp_steps: int = eqx.field(static=True)

    def __init__(
        self,
        gamma: float | Float[ArrayLike, ""] = 10.0,
        alpha: float | Float[ArrayLike, ""] | None = None,
        inner_lr: float | Float[ArrayLike, ""] = 0.5,
        *,
        inner_steps: int = 10,
        tol: float | Float[ArrayLike, ""] = 0.0,
        qp_steps: int = 20,
    ):
        self.gamma = to_param(gamma, "gamma", "VPBGD")
        check_positive(self.gamma, "gamma", "VPBGD")
        self.alpha = (
            0.1 / self.gamma if alpha is None else to_param(alpha, "alpha", "VPBGD")
        )
        check_positive(self.alpha, "alpha", "VPBGD")
        self.inner_lr = to_param(inner_lr, "inner_lr", "VPBGD")
        check_positive(self.inner_lr, "inner_lr", "VPBGD")
        self.tol = to_param(tol, "tol", "VPBGD")
        check_positive(self.tol, "tol", "VPBGD", allow_zero=True)
        check_int(inner_steps, "inner_steps", "VPBGD")
        check_int(qp_steps, "qp_steps", "VPBGD")
        self.inner_steps, self.qp_steps = inner_steps, qp_steps

    def init(self, problem, x, y, duals):
        return {
            "x": x,
            "y": y,
            "z": y,
            "k": jnp.zeros((), jnp.int32),
            "duals": duals,
            "duals_z": jnp.zeros((problem.fibre.num_duals,), x.dtype),
            "stationarity": jnp.full((), jnp.inf, x.dtype),
            "value_gap": jnp.full((), jnp.inf, x.dtype),
        }

    def step(self, problem, state):
        x, y = state["x"], state["y"]
        gamma, alpha, lr = (
            getattr(self, k).astype(x.dtype) for k in ("gamma", "alpha", "inner_lr")
        )
        z, duals_z, mu, nu = inner_steps(
            problem,
            problem.lower,
            x,
            state["z"],
            state["duals_z"],
            lr,
            self.inner_steps,
            self.qp_steps,
        )
        Fx, Fy = jax.grad(problem.upper, argnums=(0, 1))(x, y)
        fx, fy = jax.grad(problem.lower, argnums=(0, 1))(x, y)
        d_x = Fx + gamma * (fx - problem.lagrangian_x_grad(x, z, mu, nu))
        d_y = Fy + gamma * fy
        v = jnp.concatenate([x - alpha * d_x, y - alpha * d_y])
        v, duals = problem.joint(v, state["duals"], self.qp_steps)
        x_new, y_new = problem.split(v)
        step = jnp.sqrt(jnp.sum((x_new - x) ** 2) + jnp.sum((y_new - y) ** 2))
        return {
            "x": x_new,
            "y": y_new,
            "z": z,
            "k": state["k"] + 1,
            "duals": duals,
            "duals_z": duals_z,
            "stationarity": step / alpha,
            "value_gap": problem.lower(x, y) - problem.lower(x, z),
        }
