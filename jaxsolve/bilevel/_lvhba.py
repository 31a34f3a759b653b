r"""LV-HBA: the single-loop, Hessian-free method of Yao, Yu, Zeng, Zhang (ICLR 2024)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._core._misc import concrete_value
from ._base import AbstractBilevelSolver, check_int, check_positive, to_param
from ._problem import FlatProblem


class LVHBA(AbstractBilevelSolver):
    r"""Lagrangian value-function Hessian-free bilevel algorithm (LV-HBA).

    Solves $\min_{(x, y) \in C} F(x, y)$ s.t. $y \in S(x)$ through the smooth
    single-level reformulation with the proximal Lagrangian value function
    $$v_\gamma(x, y, z) = \min_{\theta \in Y} \max_{\lambda \in \Lambda}
      f(x, \theta) + \lambda^\top G(x, \theta) + \frac{\|\theta - y\|^2}{2\gamma_1}
      - \frac{\|\lambda - z\|^2}{2\gamma_2},$$
    $G = (g, h)$, $\Lambda = \mathbb{R}^{m}_{+} \times \mathbb{R}^{q}$, truncated to
    $Z = [0, r]^m \times [-r, r]^q$. Iteration $k$, with $c_k = \underline{c}(k+1)^p$:

    1. one projected gradient descent-ascent step on $(\theta, \lambda)$ (step
       $\eta$), with $d_\theta = \nabla_y f(x, \theta) + \nabla_y (\lambda^\top
       G)(x, \theta) + (\theta - y)/\gamma_1$ and $d_\lambda = -G(x, \theta) +
       (\lambda - z)/\gamma_2$:
       $\theta \leftarrow P_Y(\theta - \eta d_\theta)$,
       $\lambda \leftarrow P_Z(\lambda - \eta d_\lambda)$;
    2. one projected gradient step on $\frac{1}{c_k} F + f - v_\gamma$ for $(x, y)$
       (step $\alpha$) and $z$ (step $\beta$), the gradients of $v_\gamma$ evaluated
       at the new $(\theta, \lambda)$ (Danskin):
       $d_x = \frac{1}{c_k}\nabla_x F + \nabla_x f(x, y) - \nabla_x [f + \lambda^\top
       G](x, \theta)$, $d_y = \frac{1}{c_k}\nabla_y F + \nabla_y f(x, y) - (y -
       \theta)/\gamma_1$, $d_z = (z - \lambda)/\gamma_2$;
       $(x, y) \leftarrow P_C((x, y) - \alpha (d_x, d_y))$,
       $z \leftarrow P_Z(z - \beta d_z)$.

    First derivatives only; one projection onto $C$ per step (closed form for affine
    or box sets, a warm-started dual QP of `qp_steps` iterations otherwise).

    **Arguments** (all numbers are array fields: sweeping them never recompiles):

    - `alpha`, `beta`, `eta`: step sizes for $(x, y)$, $z$ and $(\theta, \lambda)$.
    - `gamma1`, `gamma2`: proximal parameters $\gamma_1, \gamma_2 > 0$.
    - `c`, `p`: penalty schedule $c_k = c\,(k+1)^p$, $p \in (0, 1/2)$.
    - `r`: multiplier bound.
    - `tol`: stop once the stationarity residual $\|(\Delta x, \Delta y)\|/\alpha +
        \|\Delta z\|/\beta$ is below it (the gap $f - v_\gamma$ is reported in
        `stats`); `0` (default) runs exactly `max_steps` (a fixed budget, reported as
        success).
    - `qp_steps` (static): dual iterations per projection when $C$ needs the QP.

    Defaults $(\alpha, \beta, \eta, \gamma_1, \gamma_2, c, p) = (0.008, 0.02, 0.01,
    10, 1, 2.5, 0.3)$ converge on the LLC toy of the paper (relative error ~6e-3
    after 20k steps). The reference script's defaults ($\gamma_2 = 10$,
    $c = 0.025$) do not converge on its own toy.

    **Choosing $\eta$.** The $(\theta, \lambda)$ block is plain gradient
    descent-ascent on a saddle function with strong convexity/concavity
    $\mu \approx \min(1/\gamma_1, 1/\gamma_2)$ and bilinear coupling
    $\lambda^\top G_y \theta$ ($G_y$ the constraints' $y$-Jacobian). It is stable
    only for $\eta < 2\mu/(\mu^2 + \|G_y\|_2^2)$: with many constraint rows
    ($\|G_y\|_2^2$ in the hundreds or thousands) $\eta$ must be small, otherwise
    $\theta, \lambda$ grow geometrically, $\lambda$ sticks at $\pm r$ and the
    iterates diverge (`RESULTS.nonfinite`, or huge finite values). On the SVM
    benchmark $\eta = 10^{-3}$ is stable where $10^{-2}$ diverges.

    **State** (`sol.state`): `z`, `theta`, `lam` and the joint projection's duals.

    !!! example

        ```python
        import jax.numpy as jnp, jaxsolve as js
        bl = js.bilevel
        problem = bl.BilevelProblem(
            upper=lambda x, y: 0.5 * jnp.sum((y - 2.0) ** 2) + 0.5 * jnp.sum(x**2),
            lower=lambda x, y: 0.5 * jnp.sum((y - x) ** 2),
        )
        sol = bl.solve(problem, bl.LVHBA(alpha=0.05), jnp.zeros(3), jnp.zeros(3),
                       max_steps=3000)   # x -> 1, y -> 1
        ```

    ??? cite "References"

        ```bibtex
        @inproceedings{yao2024constrained,
          title={Constrained Bi-Level Optimization: Proximal {L}agrangian Value
                 Function Approach and {H}essian-free Algorithm},
          author={Yao, Wei and Yu, Chengming and Zeng, Shangzhi and Zhang, Jin},
          booktitle={International Conference on Learning Representations},
          year={2024}
        }
        ```
    """

    alpha: Float[Array, ""]
    beta: Float[Array, ""]
    eta: Float[Array, ""]
    gamma1: Float[Array, ""]
    gamma2: Float[Array, ""]
    c: Float[Array, ""]
    p: Float[Array, ""]
    r: Float[Array, ""]
    tol: Float[Array, ""]
    qp_steps: int = eqx.field(static=True)

    def __init__(
        self,
        alpha: float | Float[ArrayLike, ""] = 0.008,
        beta: float | Float[ArrayLike, ""] = 0.02,
        eta: float | Float[ArrayLike, ""] = 0.01,
        gamma1: float | Float[ArrayLike, ""] = 10.0,
        gamma2: float | Float[ArrayLike, ""] = 1.0,
        c: float | Float[ArrayLike, ""] = 2.5,
        p: float | Float[ArrayLike, ""] = 0.3,
        r: float | Float[ArrayLike, ""] = 1000.0,
        *,
        tol: float | Float[ArrayLike, ""] = 0.0,
        qp_steps: int = 20,
    ):
        name = "LVHBA"
        for field in ("alpha", "beta", "eta", "gamma1", "gamma2", "c", "p", "r"):
            value = to_param(locals()[field], field, name)
            check_positive(value, field, name)
            setattr(self, field, value)
        self.tol = to_param(tol, "tol", name)
        check_positive(self.tol, "tol", name, allow_zero=True)
        p_val = concrete_value(self.p)
        if p_val is not None and not 0 < float(p_val) < 0.5:
            raise ValueError(
                f"LVHBA(p=...) must lie in the open interval (0, 1/2) (the penalty "
                f"c_k = c (k+1)^p of the convergence theory), got {float(p_val)}."
            )
        check_int(qp_steps, "qp_steps", name)
        self.qp_steps = qp_steps

    def _params(self, dtype):
        return {
            k: getattr(self, k).astype(dtype)
            for k in ("alpha", "beta", "eta", "gamma1", "gamma2", "c", "p", "r")
        }

    def _clip_z(self, problem: FlatProblem, lam, r):
        # Inequality multipliers in [0, r], equality multipliers in [-r, r].
        lo = jnp.concatenate(
            [jnp.zeros((problem.m,), lam.dtype), jnp.full((problem.q,), -r)]
        )
        return jnp.clip(lam, lo, r)

    def _constraints(self, problem: FlatProblem, x, y):
        parts = []
        if problem.ineq is not None:
            parts.append(problem.ineq(x, y))
        if problem.eq is not None:
            parts.append(problem.eq(x, y))
        if not parts:
            return jnp.zeros((0,), x.dtype)
        return jnp.concatenate(parts)

    def init(self, problem, x, y, duals):
        k = problem.m + problem.q
        prm = self._params(x.dtype)
        zeros_k = jnp.zeros((k,), x.dtype)
        theta, tduals = problem.theta(
            y, jnp.zeros((problem.theta.num_duals,), x.dtype), 10 * self.qp_steps
        )
        del prm
        return {
            "x": x,
            "y": y,
            "z": zeros_k,
            "theta": theta,
            "lam": zeros_k,
            "k": jnp.zeros((), jnp.int32),
            "duals": duals,
            "theta_duals": tduals,
            "stationarity": jnp.full((), jnp.inf, x.dtype),
            "value_gap": jnp.full((), jnp.inf, x.dtype),
        }

    def step(self, problem, state):
        x, y, z = state["x"], state["y"], state["z"]
        theta, lam = state["theta"], state["lam"]
        prm = self._params(x.dtype)
        alpha, beta, eta = prm["alpha"], prm["beta"], prm["eta"]
        g1, g2 = prm["gamma1"], prm["gamma2"]
        ck = prm["c"] * (state["k"] + 1).astype(x.dtype) ** prm["p"]

        def lagrangian(x, t, lam):
            return problem.lower(x, t) + jnp.dot(lam, self._constraints(problem, x, t))

        # (a) proximal-Lagrangian block: descent in theta, ascent in lambda.
        d_theta = jax.grad(lagrangian, argnums=1)(x, theta, lam) + (theta - y) / g1
        d_lam = -self._constraints(problem, x, theta) + (lam - z) / g2
        theta, tduals = problem.theta(
            theta - eta * d_theta, state["theta_duals"], self.qp_steps
        )
        lam = self._clip_z(problem, lam - eta * d_lam, prm["r"])

        # (b) primal block on (1/c_k) F + f - v_gamma, v_gamma's gradient by Danskin.
        Fx, Fy = jax.grad(problem.upper, argnums=(0, 1))(x, y)
        fx, fy = jax.grad(problem.lower, argnums=(0, 1))(x, y)
        d_x = Fx / ck + fx - jax.grad(lagrangian)(x, theta, lam)
        d_y = Fy / ck + fy - (y - theta) / g1
        d_z = (z - lam) / g2
        v = jnp.concatenate([x - alpha * d_x, y - alpha * d_y])
        v, duals = problem.joint(v, state["duals"], self.qp_steps)
        x_new, y_new = problem.split(v)
        z_new = self._clip_z(problem, z - beta * d_z, prm["r"])

        stationarity = (
            jnp.sqrt(jnp.sum((x_new - x) ** 2) + jnp.sum((y_new - y) ** 2)) / alpha
            + jnp.linalg.norm(z_new - z) / beta
        )
        # f(x, y) - v_gamma, v_gamma estimated at the current saddle-point iterate.
        v_gamma = (
            lagrangian(x, theta, lam)
            + jnp.sum((theta - y) ** 2) / (2 * g1)
            - jnp.sum((lam - z) ** 2) / (2 * g2)
        )
        gap = problem.lower(x, y) - v_gamma
        return {
            "x": x_new,
            "y": y_new,
            "z": z_new,
            "theta": theta,
            "lam": lam,
            "k": state["k"] + 1,
            "duals": duals,
            "theta_duals": tduals,
            "stationarity": stationarity,
            "value_gap": gap,
        }
