"""Demo rows for `python -m jaxsolve demo`: the LLC toy of the LV-HBA paper (known
solution) and an implicit hypergradient against its closed form."""

import time

import jax
import jax.numpy as jnp

from .._core import TextProgressMeter
from ._hypergradient import implicit_hypergradient
from ._lvhba import LVHBA
from ._penalty import Penalty
from ._problem import BilevelProblem
from ._solve import solve


def _llc(n: int) -> BilevelProblem:
    return BilevelProblem(
        lambda x, y: 0.5 * jnp.sum((x - y[1]) ** 2) + 0.5 * jnp.sum((y[0] - 1) ** 2),
        lambda x, y: 0.5 * jnp.sum(y[0] ** 2) - x @ y[0] + jnp.sum(y[1]),
        equality=lambda x, y: jnp.reshape(
            jnp.sum(x) + jnp.sum(y[0]) + jnp.sum(y[1]), (1,)
        ),
    )


def demo_rows(quick: bool = True) -> list[dict[str, object]]:
    """LV-HBA and the penalty method on the LLC toy (n = 100, x* = -0.3); the ridge
    hypergradient by implicit differentiation vs its closed form. About 10 s with
    `quick=True` on a 2-core CPU."""
    dtype = jnp.zeros(()).dtype
    n = 100
    problem = _llc(n)
    x0 = -20 * jnp.ones(n, dtype)
    y0 = (10 * jnp.ones(n, dtype), 10 * jnp.ones(n, dtype))
    xs = -0.3 * jnp.ones(n, dtype)
    steps = 5000 if quick else 20_000
    rows: list[dict[str, object]] = []
    for name, solver, k, target in (
        ("LV-HBA", LVHBA(), steps, 5e-2 if quick else 1e-2),
        ("Penalty (sigma=0.01)", Penalty(sigma=0.01, alpha=0.005), 3000, 2e-2),
    ):
        # The long calls: show their progress (a few lines, before the table).
        print(f"bilevel: {name}, {k} steps", flush=True)
        meter = TextProgressMeter(minimum_increase=0.25)
        t0 = time.perf_counter()
        sol = solve(
            problem, solver, x0, y0, max_steps=k, throw=False, progress_meter=meter
        )
        err = float(jnp.linalg.norm(sol.value[0] - xs) / jnp.linalg.norm(xs))
        jax.effects_barrier()  # the meter's last line before the next one
        rows.append(
            {
                "family": "bilevel",
                "problem": "LLC toy, n=100 (x* = -0.3)",
                "method": f"{name}, {k} steps",
                "rel. error x": f"{err:.2e}",
                "time s": round(time.perf_counter() - t0, 2),
                "result": "ok" if err < target else "FAILED",
            }
        )
    keys = jax.random.split(jax.random.key(0), 2)
    A = jax.random.normal(keys[0], (20, 4), dtype)
    b = jax.random.normal(keys[1], (20,), dtype)
    lam = jnp.linspace(-1.0, 1.0, 4, dtype=dtype)

    def upper(lam, w):
        return jnp.sum((w - 0.1) ** 2)

    def lower(lam, w):
        return 0.5 * jnp.sum((A @ w - b) ** 2) + 0.5 * jnp.exp(lam) @ (w**2)

    def phi(lam):
        w = jnp.linalg.solve(A.T @ A + jnp.diag(jnp.exp(lam)), A.T @ b)
        return upper(lam, w)

    t0 = time.perf_counter()
    g = implicit_hypergradient(upper, lower, lam, jnp.zeros(4, dtype))
    err = float(jnp.linalg.norm(g - jax.grad(phi)(lam)) / jnp.linalg.norm(g))
    tol = 1e-6 if dtype == jnp.float64 else 1e-3
    rows.append(
        {
            "family": "bilevel",
            "problem": "ridge hypergradient (closed form)",
            "method": "implicit (Newton-CG + CG on HVPs)",
            "rel. error x": f"{err:.2e}",
            "time s": round(time.perf_counter() - t0, 2),
            "result": "ok" if err < tol else "FAILED",
        }
    )
    return rows
