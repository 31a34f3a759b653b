"""A small, fast version of the synthetic experiment of "Learning to Relax", for
`python -m jaxsolve demo`."""

import jax
import jax.numpy as jnp
import numpy as np

from .. import linear
from ._chebcb import ChebCB
from ._oracles import best_fixed, cost_table, instance_optimal
from ._sequence import replay
from ._tsallis import TsallisINF, TsallisINFCB


def demo_rows(
    quick: bool = False, T: int | None = None, seed: int = 0
) -> list[dict[str, object]]:
    """SOR on $A_t = A + c_t I$ (10x10 Laplacian, $c_t = -0.15 + 0.6\\,
    \\mathrm{Beta}(0.5, 1.5)$, Gaussian $b_t$ with $\\|b_t\\| \\le \\sqrt n$,
    rtol 1e-8), `T` systems: total sweeps of each policy against the oracles.
    About 15 s on a 2-core CPU at the default `T = 300` (`quick`: `T = 100`)."""
    if T is None:
        T = 100 if quick else 300
    rng = np.random.default_rng(seed)
    c = -0.15 + 0.6 * rng.beta(0.5, 1.5, T)
    b = rng.standard_normal((4 * T, 100))
    b = b[np.sum(b**2, axis=1) <= 100][:T]  # radially truncated Gaussian
    while b.shape[0] < T:  # (essentially never: half of the draws are kept)
        extra = rng.standard_normal((T, 100))
        b = np.concatenate([b, extra[np.sum(extra**2, axis=1) <= 100]])[:T]
    dtype = jnp.zeros(()).dtype
    omegas = jnp.linspace(1.0, 1.95, 20, dtype=dtype)
    cs = jnp.asarray(c, dtype)
    bs = jnp.asarray(b.reshape(T, 10, 10), dtype)
    solver = linear.SOR(1.0, rtol=1e-8, ordering="natural")
    context_range = (-0.15, 0.65)

    # Batch (system, omega) pairs of similar cost together: Young's asymptotic SOR
    # rate (the matrices are consistently ordered) predicts the sweep counts.
    mu = 4 * np.cos(np.pi / 11) / (4 + c[:, None])
    w = np.asarray(omegas)[None, :]
    rate = np.where(
        w >= 2 / (1 + np.sqrt(1 - mu**2)),
        w - 1,
        ((w * mu + np.sqrt(np.maximum(w**2 * mu**2 - 4 * (w - 1), 0))) / 2) ** 2,
    )
    order = jnp.asarray(np.argsort(-np.log(np.clip(rate, 1e-12, 1 - 1e-12)).ravel()))

    @jax.jit
    def table_fn(cs, bs, order):
        ops = jax.vmap(lambda s: linear.poisson((10, 10), shift=s))(cs)
        return cost_table(solver, (ops, bs), omegas, batch_size=512, order=order).costs

    costs = table_fn(cs, bs, order)
    arm, fixed = best_fixed(costs)
    _, optimal = instance_optimal(costs)
    fixed, optimal = float(fixed), float(optimal)
    problem = f"shifted 10x10 Laplacian, SOR, T={T}"
    rows: list[dict[str, object]] = []

    def row(method: str, total: float) -> None:
        rows.append(
            {
                "family": "tuning",
                "problem": problem,
                "method": method,
                "iterations": int(total),
                "vs best fixed": round(total / fixed, 3),
                "vs instance-optimal": round(total / optimal, 3),
            }
        )

    row("omega = 1 (Gauss-Seidel)", float(jnp.sum(costs[:, 0])))
    row(f"best fixed omega in hindsight ({float(omegas[arm]):.2f})", fixed)
    row("instance-optimal omega", optimal)
    policies = {
        "Tsallis-INF": TsallisINF(omegas),
        "Tsallis-INF-CB": TsallisINFCB(omegas, bins=5, context_range=context_range),
        "ChebCB": ChebCB(omegas, degree=5, context_range=context_range),
    }
    key = jax.random.key(seed)
    for name, policy in policies.items():
        seen = jax.jit(lambda k, p=policy: replay(p, costs, k, cs).costs)(key)
        row(name, float(jnp.sum(seen)))
    return rows
