"""The linear family's rows for `python -m jaxsolve demo`: SOR, SSOR-PCG, DCDM with
the shipped network, CG and a direct solve on one 2-D Poisson problem."""

import statistics
import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx

from .._core import RESULTS
from ._dcdm import DeepConjugateDirection
from ._operators import poisson
from ._pretrained import pretrained
from ._solve import solve
from ._sor import SOR
from ._ssor_pcg import SSORPCG
from ._young import young_omega


def _time(fn: Callable[[], object], repeats: int = 3) -> tuple[float, float]:
    """(first call, median of `repeats` later calls) in seconds."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def demo_rows(quick: bool = False) -> list[dict[str, object]]:
    """SOR (Young's, best swept and omega = 1), SSOR-PCG (best swept omega), DCDM with
    the shipped `"poisson2d"` network, lineax CG and a dense Cholesky solve on the 2-D
    Poisson problem ($32^2$ with `quick`, else $64^2$), random $b$, rtol $10^{-6}$.
    Time = median of 3 compiled runs."""
    n = 32 if quick else 64
    op = poisson((n, n))
    b = jax.random.normal(jax.random.key(0), (n, n), op.dtype)
    rtol = 1e-6
    bnorm = float(jnp.linalg.norm(b))
    problem = f"2-D Poisson {n}x{n}, rtol {rtol:g}"
    rows: list[dict[str, object]] = []

    def add(method, omega, solve_fn, iterative=True):
        first, median = _time(solve_fn)
        sol = solve_fn()
        rel = float(jnp.linalg.norm(b - op.mv(sol.value.reshape(b.shape)))) / bnorm
        rows.append(
            {
                "family": "linear",
                "problem": problem,
                "method": method,
                "omega": None if omega is None else round(float(omega), 4),
                "iterations": int(sol.stats["num_steps"]) if iterative else None,
                "time [s]": median,
                "compile [s]": max(first - median, 0.0),
                "rel. residual": rel,
                "result": "ok" if sol.result == RESULTS.successful else "FAILED",
            }
        )

    # Best omega by a small sweep: one vmapped solve over the grid (no recompiles).
    @eqx.filter_jit
    def sweep(cls, omegas):
        return jax.vmap(
            lambda w: solve(op, b, cls(omega=w, rtol=rtol), throw=False).stats[
                "num_steps"
            ]
        )(omegas)

    omegas = jnp.linspace(1.70, 1.98, 15, dtype=op.dtype)
    best_sor = omegas[int(jnp.argmin(sweep(SOR, omegas)))]
    ssor_omegas = jnp.linspace(1.0, 1.95, 20, dtype=op.dtype)
    best_ssor = ssor_omegas[int(jnp.argmin(sweep(SSORPCG, ssor_omegas)))]
    for label, w in (
        ("SOR red-black, Young's omega", young_omega(op)),
        ("SOR red-black, best swept omega", best_sor),
        ("SOR red-black, omega = 1 (Gauss-Seidel)", 1.0),
    ):
        solver = SOR(omega=w, rtol=rtol, max_steps=100_000)
        add(label, w, lambda s=solver: solve(op, b, s, throw=False))
    ssor = SSORPCG(omega=best_ssor, rtol=rtol)
    add("SSOR-PCG natural, best swept omega", best_ssor,
        lambda: solve(op, b, ssor, throw=False))  # fmt: skip
    dcdm = DeepConjugateDirection(pretrained("poisson2d"), rtol=rtol)
    add("DCDM, shipped 'poisson2d' network", None,
        lambda: solve(op, b, dcdm, throw=False))  # fmt: skip
    # Plain CG: lineax's CG with the same 2-norm stopping rule as ours.
    cg = lx.CG(rtol=0.0, atol=rtol * bnorm, norm=jnp.linalg.norm, max_steps=10 * n * n)
    add("CG (lineax)", None, lambda: solve(op, b, cg, throw=False))
    dense_op = lx.MatrixLinearOperator(op.as_matrix(), lx.positive_semidefinite_tag)
    add(
        "direct (dense Cholesky, lineax)",
        None,
        lambda: solve(dense_op, b.reshape(-1), lx.Cholesky()),
        iterative=False,
    )
    return rows
