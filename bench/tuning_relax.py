"""Learning to relax: bandit and contextual-bandit tuning of omega over a sequence of
linear systems (Khodak, Chow, Balcan, Talwalkar, ICLR 2024), two experiments of the
paper, side by side with the figures of our own replay of the authors' MATLAB setup
(the `EXPECTED_*` tables below; see docs/tuning.md).

1. Synthetic: A_t = A + c_t I (5-point Laplacian, 10x10 interior grid, 4 on the
   diagonal), c_t = -0.15 + 0.6 Beta(0.5, 1.5) ("high variance") or Beta(2, 6) ("low
   variance"), b_t standard Gaussian resampled until ||b|| <= sqrt(n), x0 = 0, SOR
   (natural ordering) to rtol 1e-8. Costs are deterministic given (system, omega),
   so the policies are replayed on the full-information table: exactly the costs a
   live `solve_sequence` run would see (checked on a prefix).
2. Heat equation: u_t = kappa(t) Laplace(u) + f on the unit square, Crank-Nicolson,
   SSOR-PCG (natural ordering) to 1e-8 relative to ||b||, warm start from the
   previous step; context kappa at the start of the step. The table uses the exact
   trajectory (a DST solve) so every policy sees the same systems; the wall-clock
   comparison runs the live simulation (`solve_sequence` with `rhs_fn`, policy
   included) against pyamg smoothed-aggregation PCG.

Usage: `python bench/tuning_relax.py [--quick] [--seeds 5] [--skip-heat]`. Prints
tables and writes bench/results/tuning_relax.json. Medians over seeds.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


jax.config.update("jax_enable_x64", True)

from _common import command_line, machine_info  # noqa: E402

import jaxsolve as js  # noqa: E402
import jaxsolve.tuning as jt  # noqa: E402


OMEGAS = np.linspace(1.0, 1.95, 20)
CHECKPOINTS = (100, 500, 1000, 2000, 5000)
RESULTS_PATH = Path(__file__).parent / "results" / "tuning_relax.json"

# Figures of our replay of the authors' MATLAB setup (docs/tuning.md):
# mean iterations per instance (synthetic) and totals (heat).
EXPECTED_SYNTH = {
    "high": {
        "omega = 1": 617.5,
        "best fixed": 103.7,
        "instance-optimal": 58.8,
        "Young omega*": 56.4,
        "Tsallis-INF": 118.2,
        "Tsallis-INF-CB": 100.2,
        "ChebCB": 66.0,
        "curve": {100: 2.27, 500: 1.46, 1000: 1.31, 2000: 1.21, 5000: 1.15},
    },
    "low": {
        "omega = 1": 273.9,
        "best fixed": 60.0,
        "instance-optimal": 43.3,
        "Young omega*": 41.9,
        "Tsallis-INF": 67.6,
        "Tsallis-INF-CB": 62.6,
        "ChebCB": 46.8,
        "curve": {100: 1.92, 500: 1.32, 1000: 1.22, 2000: 1.14, 5000: 1.10},
    },
}
EXPECTED_HEAT = {
    25: {
        "CG": 85422,
        "omega = 1": 32800,
        "best fixed": 29454,
        "best fixed omega": 1.40,
        "instance-optimal": 24158,
        "Tsallis-INF": 30811,
        "Tsallis-INF-CB": 28977,
        "ChebCB": 25451,
    },
    50: {
        "CG": 164441,
        "omega = 1": 60725,
        "best fixed": 42933,
        "best fixed omega": 1.60,
        "instance-optimal": 34703,
        "Tsallis-INF": 44375,
        "Tsallis-INF-CB": 43018,
        "ChebCB": 35925,
    },
}


# -- synthetic --------------------------------------------------------------------


def synthetic_instances(variance: str, T: int, seed: int):
    rng = np.random.default_rng(seed)
    if variance == "high":
        c = -0.15 + 0.6 * rng.beta(0.5, 1.5, T)
    else:
        c = -0.15 + 0.6 * rng.beta(2.0, 6.0, T)
    n = 100
    b = np.empty((T, n))
    for t in range(T):
        # Radially truncated Gaussian (the paper's assumption on the right-hand
        # sides): resample until ||b|| <= sqrt(n).
        while True:
            v = rng.standard_normal(n)
            if v @ v <= n:
                b[t] = v
                break
    return c, b.reshape(T, 10, 10)


def predicted_sor_sweeps(c: np.ndarray, omegas: np.ndarray) -> np.ndarray:
    """Young's asymptotic SOR rate for consistently ordered matrices, to group
    (system, omega) pairs of similar cost in one vectorised batch."""
    mu = 4 * np.cos(np.pi / 11) / (4 + c[:, None])
    w = omegas[None, :]
    disc = np.maximum(w**2 * mu**2 - 4 * (w - 1), 0)
    rate = np.where(
        w >= 2 / (1 + np.sqrt(1 - mu**2)),
        w - 1,
        ((w * mu + np.sqrt(disc)) / 2) ** 2,
    )
    return np.log(1e-8) / np.log(np.clip(rate, 1e-12, 1 - 1e-12))


def sor_solver():
    return js.linear.SOR(1.0, rtol=1e-8, max_steps=10_000, ordering="natural")


def synthetic_policies():
    rng = (-0.15, 0.65)
    return {
        "Tsallis-INF": jt.TsallisINF(OMEGAS),
        "Tsallis-INF (RV)": jt.TsallisINF(OMEGAS, reduced_variance=True),
        "Tsallis-INF-CB": jt.TsallisINFCB(OMEGAS, bins=5, context_range=rng),
        "ChebCB": jt.ChebCB(OMEGAS, degree=5, context_range=rng),
        "ChebCB (expl. 0.25)": jt.ChebCB(
            OMEGAS, degree=5, context_range=rng, exploration=0.25
        ),
        "ChebCB (rate, expl. 0.25)": jt.ChebCB(
            OMEGAS, degree=5, context_range=rng, regress="rate", exploration=0.25
        ),
    }


@jax.jit
def _synthetic_table(c, b, order):
    ops = jax.vmap(lambda s: js.linear.poisson((10, 10), shift=s))(c)
    return jt.cost_table(sor_solver(), (ops, b), OMEGAS, batch_size=2048, order=order)


@jax.jit
def _young_costs(c, b):
    ops = jax.vmap(lambda s: js.linear.poisson((10, 10), shift=s))(c)
    omega = jt.young_omegas(ops)

    def one(op, rhs, w):
        solver = js.linear.SOR(w, rtol=1e-8, max_steps=10_000, ordering="natural")
        return js.linear.solve(op, rhs, solver, throw=False).stats["num_steps"]

    return jax.vmap(one)(ops, b, omega), omega


def _replay_fn(policy):
    @jax.jit
    def run(costs, contexts, key):
        return jt.replay(policy, costs, key, contexts).costs

    return run


def synthetic(variance: str, T: int, seeds: int) -> dict:
    policies = synthetic_policies()
    replays = {name: _replay_fn(p) for name, p in policies.items()}
    per_seed = []
    for seed in range(seeds):
        c, b = synthetic_instances(variance, T, seed)
        order = np.argsort(predicted_sor_sweeps(c, OMEGAS).reshape(-1), kind="stable")
        t0 = time.perf_counter()
        table = _synthetic_table(jnp.asarray(c), jnp.asarray(b), jnp.asarray(order))
        costs = np.asarray(table.costs)
        t_table = time.perf_counter() - t0
        young, young_w = _young_costs(jnp.asarray(c), jnp.asarray(b))
        row = {
            "table seconds": t_table,
            "failed solves": int(np.sum(~np.asarray(table.successful))),
            "fixed": {f"{w:.2f}": int(costs[:, i].sum()) for i, w in enumerate(OMEGAS)},
        }
        arm, best = jt.best_fixed(costs)
        row["omega = 1"] = int(costs[:, 0].sum())
        row["best fixed"] = int(best)
        row["best fixed omega"] = float(OMEGAS[int(arm)])
        row["instance-optimal"] = int(jt.instance_optimal(costs)[1])
        row["Young omega*"] = int(np.sum(young))
        row["curves"] = {}
        key = jax.random.key(1000 + seed)
        for name, run in replays.items():
            seen = np.asarray(run(table.costs, jnp.asarray(c), key))
            row[name] = int(seen.sum())
            ratio = np.asarray(jt.hindsight_ratio(seen, costs))
            row["curves"][name] = {
                str(n): float(ratio[n - 1]) for n in CHECKPOINTS if n <= T
            }
        per_seed.append(row)
        print(
            f"  [{variance} variance, seed {seed}] table {t_table:.1f} s, "
            f"best fixed {row['best fixed'] / T:.1f}/instance, Tsallis-INF "
            f"{row['Tsallis-INF'] / row['best fixed']:.3f}x, ChebCB "
            f"{row['ChebCB'] / row['instance-optimal']:.3f}x inst.-opt.",
            flush=True,
        )
    return {"T": T, "seeds": seeds, "per_seed": per_seed, "median": _medians(per_seed)}


def _medians(rows: list[dict]) -> dict:
    keys = [
        "omega = 1",
        "best fixed",
        "best fixed omega",
        "instance-optimal",
        "Young omega*",
        "Tsallis-INF",
        "Tsallis-INF (RV)",
        "Tsallis-INF-CB",
        "ChebCB",
        "ChebCB (expl. 0.25)",
        "ChebCB (rate, expl. 0.25)",
        "CG",
        "table seconds",
    ]
    out = {k: float(np.median([r[k] for r in rows])) for k in keys if k in rows[0]}
    if "fixed" in rows[0]:
        out["fixed"] = {
            w: float(np.median([r["fixed"][w] for r in rows])) for w in rows[0]["fixed"]
        }
    for name in (
        "Tsallis-INF",
        "Tsallis-INF (RV)",
        "Tsallis-INF-CB",
        "ChebCB",
        "ChebCB (expl. 0.25)",
        "ChebCB (rate, expl. 0.25)",
    ):
        if name not in rows[0]:
            continue
        out[f"{name} / best fixed"] = float(
            np.median([r[name] / r["best fixed"] for r in rows])
        )
        out[f"{name} / instance-optimal"] = float(
            np.median([r[name] / r["instance-optimal"] for r in rows])
        )
    out["curves"] = {
        name: {
            n: float(np.median([r["curves"][name][n] for r in rows]))
            for n in rows[0]["curves"][name]
        }
        for name in rows[0]["curves"]
    }
    return out


def print_synthetic(variance: str, res: dict) -> None:
    T, med, exp = res["T"], res["median"], EXPECTED_SYNTH[variance]
    print(
        f"\nSynthetic SOR, {variance} variance, T = {T}, median of {res['seeds']} "
        "seeds (iterations per instance)"
    )
    print(
        f"{'policy':<27}{'ours':>10}{'expected':>10}"
        f"{'/ best fixed':>14}{'/ inst.-opt':>13}"
    )
    names = [
        "omega = 1",
        "best fixed",
        "instance-optimal",
        "Young omega*",
        "Tsallis-INF",
        "Tsallis-INF (RV)",
        "Tsallis-INF-CB",
        "ChebCB",
        "ChebCB (expl. 0.25)",
        "ChebCB (rate, expl. 0.25)",
    ]
    for name in names:
        ours = med[name] / T
        label = name
        if name == "best fixed":
            label = f"best fixed ({med['best fixed omega']:.2f})"
        e = exp.get(name)
        print(
            f"{label:<27}{ours:>10.1f}{'-' if e is None else f'{e:.1f}':>10}"
            f"{med[name] / med['best fixed']:>14.3f}"
            f"{med[name] / med['instance-optimal']:>13.3f}"
        )
    fixed = "  ".join(f"{w}:{v / T:.0f}" for w, v in med["fixed"].items())
    print(f"each fixed omega: {fixed}")
    print("learning curve (cumulative cost / best fixed in hindsight on the prefix)")
    ns = list(med["curves"]["Tsallis-INF"])
    print(f"{'N':<20}" + "".join(f"{n:>8}" for n in ns))
    for name, curve in med["curves"].items():
        print(f"{name:<20}" + "".join(f"{curve[n]:>8.2f}" for n in ns))
    print(
        f"{'expected T-INF':<20}" + "".join(f"{exp['curve'][int(n)]:>8.2f}" for n in ns)
    )


def check_live_prefix(T: int = 200) -> dict:
    """The replay on the table equals a live `solve_sequence` run (same key)."""
    c, b = synthetic_instances("high", T, 0)
    order = np.argsort(predicted_sor_sweeps(c, OMEGAS).reshape(-1), kind="stable")
    table = _synthetic_table(jnp.asarray(c), jnp.asarray(b), jnp.asarray(order))
    out = {}
    for name, policy in synthetic_policies().items():
        key = jax.random.key(7)
        ops = jax.vmap(lambda s: js.linear.poisson((10, 10), shift=s))(jnp.asarray(c))
        live = jt.solve_sequence(sor_solver(), (ops, jnp.asarray(b)), policy, key, c)
        rep = jt.replay(policy, table.costs, key, jnp.asarray(c))
        out[name] = bool(np.array_equal(np.asarray(live.costs), np.asarray(rep.costs)))
    return out


# -- heat equation ----------------------------------------------------------------


def kappa(t):
    return np.maximum(0.1 * np.sin(2 * np.pi * t), -10 * np.sin(2 * np.pi * t))


def bump(x, y, cx, cy, r):
    q = np.minimum(1.0, ((x - cx) ** 2 + (y - cy) ** 2) / r**2)
    with np.errstate(divide="ignore"):
        return np.exp(1.0 - 1.0 / (1.0 - q))


class Heat:
    """The Crank-Nicolson sequence of the authors' heat-equation experiment on a
    node-centred grid with nx cells ((nx - 1)^2 unknowns, C order, axis 0 = x)."""

    def __init__(self, nx: int, steps: int = 5000, stop: float = 5.0):
        self.nx, self.steps, self.dt = nx, steps, stop / steps
        self.dx = 1.0 / nx
        g = np.arange(1, nx) * self.dx
        self.x, self.y = np.meshgrid(g, g, indexing="ij")
        self.u0 = bump(self.x, self.y, 0.5, 0.5, 0.25)
        k = np.arange(1, nx)
        s = np.sin(np.pi * k / (2 * nx)) ** 2
        # Eigenvalues of -L (h^-2-scaled Dirichlet Laplacian) in the DST-I basis.
        self.lam = 4 / self.dx**2 * (s[:, None] + s[None, :])
        t0 = np.arange(steps) * self.dt
        self.context = kappa(t0)
        grid = np.linspace(0.0, stop, steps)
        self.context_range = (float(kappa(grid).min()), float(kappa(grid).max()))
        self.k_half = kappa(t0 + self.dt / 2)
        half = t0 + self.dt / 2
        cx = 0.5 + np.cos(16 * np.pi * half) / 4
        cy = 0.5 + np.sin(16 * np.pi * half) / 4
        self.forcing = np.stack(
            [32 * bump(self.x, self.y, a, b, 0.125) for a, b in zip(cx, cy)]
        )
        self.coef = 0.5 * self.k_half * self.dt / self.dx**2

    def trajectory(self):
        """Exact CN trajectory (DST-I diagonalises the Laplacian): the systems
        (b_t) and the previous states (the warm starts)."""
        from scipy.fft import dstn

        u = self.u0
        bs, prev = [], []
        for t in range(self.steps):
            half = 0.5 * self.k_half[t] * self.dt
            lu = -dstn(self.lam * dstn(u, type=1, norm="ortho"), type=1, norm="ortho")
            b = u + half * lu + self.dt * self.forcing[t]
            prev.append(u)
            bs.append(b)
            u = dstn(
                dstn(b, type=1, norm="ortho") / (1 + half * self.lam),
                type=1,
                norm="ortho",
            )
        return np.stack(bs), np.stack(prev)

    def operators(self):
        m = self.nx - 1
        return jax.vmap(lambda k: js.linear.poisson((m, m), coefficient=k, shift=1.0))(
            jnp.asarray(self.coef)
        )

    def sparse(self, t):
        import scipy.sparse as sp

        if not hasattr(self, "_lap"):
            m = self.nx - 1
            one = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m), dtype=float)
            self._lap = sp.kronsum(one, one, format="csr")
            self._eye = sp.identity(m * m, format="csr")
        return (self._eye + self.coef[t] * self._lap).tocsr()


def ssor_solver():
    return js.linear.SSORPCG(1.0, rtol=1e-8, max_steps=10_000, ordering="natural")


def heat_policies(rng):
    return {
        "Tsallis-INF": jt.TsallisINF(OMEGAS),
        "Tsallis-INF (RV)": jt.TsallisINF(OMEGAS, reduced_variance=True),
        "Tsallis-INF-CB": jt.TsallisINFCB(OMEGAS, bins=6, context_range=rng),
        "ChebCB": jt.ChebCB(OMEGAS, degree=5, context_range=rng),
    }


def scipy_cg_total(heat: Heat, bs, prev) -> int:
    from scipy.sparse.linalg import cg

    total = 0
    for t in range(heat.steps):
        count = [0]

        def cb(_):
            count[0] += 1

        cg(
            heat.sparse(t),
            bs[t].reshape(-1),
            x0=prev[t].reshape(-1),
            rtol=1e-8,
            maxiter=10_000,
            callback=cb,
        )
        total += count[0]
    return total


def heat(nx: int, steps: int, seeds: int, timing: bool) -> dict:
    h = Heat(nx, steps)
    t0 = time.perf_counter()
    bs, prev = h.trajectory()
    ops = h.operators()
    table_fn = jax.jit(
        lambda ops, bs, prev: jt.cost_table(
            ssor_solver(), (ops, bs), OMEGAS, x0s=prev, batch_size=1000
        )
    )
    table = table_fn(ops, jnp.asarray(bs), jnp.asarray(prev))
    costs = np.asarray(table.costs)
    t_table = time.perf_counter() - t0
    out = {
        "nx": nx,
        "steps": steps,
        "table seconds": t_table,
        "failed solves": int(np.sum(~np.asarray(table.successful))),
        "context range": h.context_range,
        "fixed": {f"{w:.2f}": int(costs[:, i].sum()) for i, w in enumerate(OMEGAS)},
        "omega = 1": int(costs[:, 0].sum()),
    }
    arm, best = jt.best_fixed(costs)
    out["best fixed"] = int(best)
    out["best fixed omega"] = float(OMEGAS[int(arm)])
    out["instance-optimal"] = int(jt.instance_optimal(costs)[1])
    t0 = time.perf_counter()
    out["CG"] = scipy_cg_total(h, bs, prev)
    out["CG seconds"] = time.perf_counter() - t0
    policies = heat_policies(h.context_range)
    contexts = jnp.asarray(h.context)
    runs = {name: [] for name in policies}
    for name, policy in policies.items():
        run = _replay_fn(policy)
        for seed in range(seeds):
            seen = np.asarray(run(table.costs, contexts, jax.random.key(2000 + seed)))
            runs[name].append(int(seen.sum()))
        out[name] = float(np.median(runs[name]))
    out["per_seed"] = runs
    print(
        f"  [heat nx={nx}] table {t_table:.1f} s; best fixed {out['best fixed']} "
        f"(omega {out['best fixed omega']:.2f}), ChebCB "
        f"{out['ChebCB'] / out['instance-optimal']:.3f}x inst.-opt.",
        flush=True,
    )
    if timing:
        out["wall-clock"] = heat_timing(h, policies["ChebCB"], float(OMEGAS[int(arm)]))
    return out


def heat_timing(h: Heat, policy, best_omega: float) -> dict:
    """Live simulation: tuned SSOR-PCG (policy in the loop, rhs built from the
    previous solution) against pyamg smoothed-aggregation PCG (re-set-up each
    step, since A_t changes with kappa)."""
    import pyamg

    m = h.nx - 1
    ops = h.operators()
    data = (jnp.asarray(0.5 * h.k_half * h.dt), jnp.asarray(h.forcing))

    def rhs(u, d):
        half, f = d
        lap = js.linear.poisson((m, m), coefficient=1.0 / h.dx**2)
        return u - half * lap.mv(u) + h.dt * f

    def simulate(ops, data, contexts, key, policy):
        return jt.solve_sequence(
            ssor_solver(),
            (ops, data),
            policy,
            key,
            contexts,
            x0=jnp.asarray(h.u0),
            warm_start=True,
            rhs_fn=rhs,
        )

    fixed = jt.TsallisINF(jnp.asarray([best_omega]))  # one arm: a fixed omega
    sim = jax.jit(simulate)
    out = {}
    contexts = jnp.asarray(h.context)
    for label, pol in (("SSOR-PCG + ChebCB", policy), ("SSOR-PCG, best fixed", fixed)):
        t0 = time.perf_counter()
        res = sim(ops, data, contexts, jax.random.key(0), pol)
        jax.block_until_ready(res)
        compile_and_run = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = sim(ops, data, contexts, jax.random.key(0), pol)
        jax.block_until_ready(res)
        out[label] = {
            "seconds": time.perf_counter() - t0,
            "first call seconds": compile_and_run,
            "iterations": int(np.sum(np.asarray(res.num_steps))),
            "all successful": bool(
                np.all(np.asarray(res.result == js.RESULTS.successful))
            ),
        }
    u = h.u0.reshape(-1)
    iters = 0
    t0 = time.perf_counter()
    for t in range(h.steps):
        a = h.sparse(t)
        b = 2 * u - a @ u + h.dt * h.forcing[t].reshape(-1)
        ml = pyamg.smoothed_aggregation_solver(a)
        residuals = []
        u = ml.solve(b, x0=u, tol=1e-8, accel="cg", maxiter=1000, residuals=residuals)
        iters += len(residuals) - 1
    out["pyamg SA-PCG (setup each step)"] = {
        "seconds": time.perf_counter() - t0,
        "iterations": iters,
    }
    return out


# -- a sequence users run: variable, time-dependent diffusion, nx = 100 ------------


def poisson_csr(coefficient: np.ndarray, shift: float):
    """The CSR matrix of `js.linear.poisson(shape, coefficient, shift)` in 2-D, built
    independently from its definition (face coefficient = mean of the two node
    values, the node value on a boundary face), for pyamg and SciPy."""
    import scipy.sparse as sp

    k = np.asarray(coefficient, float)
    nx, ny = k.shape
    idx = np.arange(nx * ny).reshape(nx, ny)
    diag = np.full((nx, ny), float(shift))
    rows, cols, vals = [], [], []
    for axis in (0, 1):
        n = k.shape[axis]
        kk = np.moveaxis(k, axis, 0)
        faces = np.concatenate([kk[:1], 0.5 * (kk[:-1] + kk[1:]), kk[-1:]], axis=0)
        lo, hi = faces[:n], faces[1:]
        diag += np.moveaxis(lo + hi, 0, axis)
        ii = np.moveaxis(idx, axis, 0)
        inner = 0.5 * (kk[:-1] + kk[1:])  # face between node j and j + 1
        rows += [ii[:-1].ravel(), ii[1:].ravel()]
        cols += [ii[1:].ravel(), ii[:-1].ravel()]
        vals += [-inner.ravel(), -inner.ravel()]
    rows.append(idx.ravel())
    cols.append(idx.ravel())
    vals.append(diag.ravel())
    a = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(nx * ny, nx * ny),
    )
    return a.tocsr()


class VarHeat:
    """Crank-Nicolson for $u_t = \\nabla\\cdot(\\kappa(t) g(x, y) \\nabla u) + f$ on the
    unit square (zero Dirichlet), nx cells, $(nx - 1)^2$ unknowns: the diffusion
    coefficient varies in space ($g = 1 + 0.8 \\sin(2\\pi x)\\sin(3\\pi y)^2$, between
    0.2 and 1.8) and its scale $\\kappa(t) = 0.55 + 0.45 \\sin(2\\pi t)$ in time.
    System $t$: $(I + \\tfrac{\\Delta t}{2} L_t) u_{t+1} = (I - \\tfrac{\\Delta t}{2}
    L_t) u_t + \\Delta t f_t$, i.e. `poisson(coefficient = c_t g, shift = 1)` with
    $c_t = \\kappa(t)\\Delta t / (2 h^2)$. Context: $\\kappa(t)$."""

    def __init__(self, nx: int, steps: int, stop: float = 2.0):
        self.nx, self.steps, self.dt = nx, steps, stop / steps
        self.h = 1.0 / nx
        m = nx - 1
        g = np.arange(1, nx) * self.h
        x, y = np.meshgrid(g, g, indexing="ij")
        self.g = 1 + 0.8 * np.sin(2 * np.pi * x) * np.sin(3 * np.pi * y) ** 2
        t_half = (np.arange(steps) + 0.5) * self.dt
        self.kappa = 0.55 + 0.45 * np.sin(2 * np.pi * t_half)
        self.scale = self.kappa * self.dt / (2 * self.h**2)
        self.context_range = (0.1, 1.0)
        cx = 0.5 + np.cos(4 * np.pi * t_half) / 4
        cy = 0.5 + np.sin(4 * np.pi * t_half) / 4
        self.forcing = np.stack(
            [32 * bump(x, y, a, b, 0.125) for a, b in zip(cx, cy)]
        ).reshape(steps, m, m)
        self.u0 = bump(x, y, 0.5, 0.5, 0.25)

    def operators(self):
        m = self.nx - 1
        g = jnp.asarray(self.g)
        return jax.vmap(
            lambda c: js.linear.poisson((m, m), coefficient=c * g, shift=1.0)
        )(jnp.asarray(self.scale))

    def data(self):
        return (jnp.asarray(self.scale), jnp.asarray(self.forcing))

    def rhs_fn(self):
        m, g, dt = self.nx - 1, jnp.asarray(self.g), self.dt

        def rhs(u, d):
            c, f = d
            a = js.linear.poisson((m, m), coefficient=c * g, shift=1.0)
            return 2 * u - a.mv(u) + dt * f

        return rhs


def _timed(fn, *args):
    """(result, seconds of the second call): the first call compiles."""
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def varcoef(nx: int, steps: int, sample: int, rtol: float = 1e-8) -> dict:
    """Wall-clock of a whole simulation, by method: SSOR-PCG and red-black SOR with
    omega = 1, the best fixed omega (found in hindsight on a sample of the systems),
    Tsallis-INF and ChebCB; lineax CG; pyamg SA-PCG set up once (re-set-up when the
    scale moved by 10 %) and set up every step."""
    import lineax as lx

    h = VarHeat(nx, steps)
    m = nx - 1
    ops, data, rhs = h.operators(), h.data(), h.rhs_fn()
    contexts = jnp.asarray(h.kappa)
    u0 = jnp.asarray(h.u0)
    out = {"nx": nx, "unknowns": m * m, "steps": steps, "rtol": rtol, "methods": {}}
    solvers = {
        "SSOR-PCG": js.linear.SSORPCG(1.0, rtol=rtol, ordering="natural"),
        "SOR": js.linear.SOR(1.0, rtol=rtol, max_steps=20_000),
    }

    # The trajectory (b_t, u_{t-1}) from a tight reference run, for the hindsight
    # cost tables on a sample of the systems.
    @jax.jit
    def trajectory(ops, data, u0):
        def step(u, xs):
            op, d = xs
            b = rhs(u, d)
            sol = js.linear.solve(op, b, solvers["SSOR-PCG"], x0=u)
            return sol.value, (b, u)

        return jax.lax.scan(step, u0, (ops, data))[1]

    # The SciPy matrix the AMG anchor uses is the same operator.
    v = np.random.default_rng(0).standard_normal((m, m))
    a0 = poisson_csr(h.scale[0] * h.g, 1.0)
    mv = jax.tree.map(lambda a: a[0], ops).mv(jnp.asarray(v))
    assert np.allclose(a0 @ v.ravel(), np.asarray(mv).ravel(), rtol=1e-12, atol=1e-12)

    bs, prevs = trajectory(ops, data, u0)
    pick = np.linspace(0, steps - 1, sample).astype(int)
    sub_ops = jax.tree.map(lambda a: a[pick], ops)

    for sname, solver in solvers.items():
        t0 = time.perf_counter()
        table = jax.jit(
            lambda o, b, x: (
                jt.cost_table(solver, (o, b), OMEGAS, x0s=x, batch_size=sample).costs
            )
        )(sub_ops, bs[pick], prevs[pick])
        arm, _ = jt.best_fixed(np.asarray(table))
        best = float(OMEGAS[int(arm)])
        out[f"{sname} best fixed omega (hindsight, {sample} systems)"] = best
        out[f"{sname} hindsight table seconds"] = time.perf_counter() - t0

        @jax.jit
        def simulate(ops, data, contexts, key, policy):
            return jt.solve_sequence(
                solver,
                (ops, data),
                policy,
                key,
                contexts,
                x0=u0,
                warm_start=True,
                rhs_fn=rhs,
            )

        policies = {
            "omega = 1": jt.TsallisINF(jnp.asarray([1.0])),
            f"best fixed omega {best:.2f}": jt.TsallisINF(jnp.asarray([best])),
            "Tsallis-INF": jt.TsallisINF(OMEGAS),
            "ChebCB": jt.ChebCB(OMEGAS, degree=5, context_range=h.context_range),
        }
        for pname, policy in policies.items():
            res, sec = _timed(simulate, ops, data, contexts, jax.random.key(0), policy)
            ok = bool(np.all(np.asarray(res.result == js.RESULTS.successful)))
            # The policy's own time (select + update, compiled, in a scan): replay
            # it on the hindsight costs of the sampled systems, tiled to the
            # sequence's length (realistic costs and contexts, no solves).
            reps = -(-steps // sample)
            tiled = jnp.asarray(np.tile(np.asarray(table), (reps, 1))[:steps])
            ctx = jnp.asarray(np.tile(h.kappa[pick], reps)[:steps])
            if policy.num_arms == 1:
                tiled = tiled[:, :1]
            _, policy_sec = _timed(
                jax.jit(lambda c, k, x, p=policy: jt.replay(p, c, k, x).costs),
                tiled,
                jax.random.key(0),
                ctx,
            )
            out["methods"][f"{sname}, {pname}"] = {
                "seconds": sec,
                "iterations": int(np.sum(np.asarray(res.num_steps))),
                "all successful": ok,
                "policy seconds": policy_sec,
            }
            print(
                f"  [varcoef nx={nx}] {sname}, {pname}: {sec:.2f} s, "
                f"{int(np.sum(np.asarray(res.num_steps)))} its, policy "
                f"{policy_sec:.3f} s{'' if ok else ', FAILURES'}",
                flush=True,
            )

    cg = lx.CG(rtol=0.0, atol=0.0, max_steps=20_000)  # atol set per system below

    @jax.jit
    def cg_sim(ops, data, u0):
        def step(u, xs):
            op, d = xs
            b = rhs(u, d)
            solver = eqx.tree_at(lambda s: s.atol, cg, rtol * jnp.linalg.norm(b))
            sol = js.linear.solve(op, b, solver, x0=u, throw=False)
            return sol.value, sol.stats["num_steps"]

        return jax.lax.scan(step, u0, (ops, data))[1]

    steps_cg, sec = _timed(cg_sim, ops, data, u0)
    out["methods"]["lineax CG"] = {
        "seconds": sec,
        "iterations": int(np.sum(np.asarray(steps_cg))),
    }
    print(f"  [varcoef nx={nx}] lineax CG: {sec:.2f} s", flush=True)

    try:
        import pyamg
    except ImportError:
        print("  (pyamg not installed: install the bench extra for the AMG anchor)")
        return out
    forcing, g = h.forcing.reshape(steps, -1), h.g
    for label, every in (
        ("set up when scale moves 10 %", False),
        ("set up every step", True),
    ):
        u = h.u0.reshape(-1)
        iters, setups, ml, ref = 0, 0, None, None
        t0 = time.perf_counter()
        for t in range(steps):
            a = poisson_csr(h.scale[t] * g, 1.0)
            b = 2 * u - a @ u + h.dt * forcing[t]
            if every or ml is None or abs(h.scale[t] / ref - 1) > 0.1:
                ml, ref = pyamg.smoothed_aggregation_solver(a), h.scale[t]
                setups += 1
            res_hist: list = []
            u = ml.solve(
                b, x0=u, tol=rtol, accel="cg", maxiter=1000, residuals=res_hist
            )
            # pyamg's tol is relative to ||b||, the same rule as ours (2-norm).
            iters += len(res_hist) - 1
        out["methods"][f"pyamg SA-PCG, {label}"] = {
            "seconds": time.perf_counter() - t0,
            "iterations": iters,
            "setups": setups,
        }
        print(f"  [varcoef nx={nx}] pyamg {label}: {time.perf_counter() - t0:.2f} s")
    return out


def print_varcoef(res: dict) -> None:
    print(
        f"\nVariable-coefficient heat equation nx = {res['nx']} ({res['unknowns']} "
        f"unknowns), {res['steps']} CN steps, rtol {res['rtol']:g}: whole-simulation "
        "wall-clock (compile excluded)"
    )
    rows = sorted(res["methods"].items(), key=lambda kv: kv[1]["seconds"])
    fastest = rows[0][1]["seconds"]
    print(
        f"{'method':<48}{'seconds':>9}{'x fastest':>11}{'iterations':>12}{'policy s':>10}"
    )
    for name, v in rows:
        pol = v.get("policy seconds")
        print(
            f"{name:<48}{v['seconds']:>9.2f}{v['seconds'] / fastest:>11.2f}"
            f"{v['iterations']:>12}{'' if pol is None else f'{pol:.3f}':>10}"
        )


def print_heat(res: dict) -> None:
    nx = res["nx"]
    exp = EXPECTED_HEAT.get(nx, {}) if res["steps"] == 5000 else {}
    print(
        f"\nHeat equation nx = {nx} (n = {(nx - 1) ** 2}), {res['steps']} CN steps, "
        f"SSOR-PCG to 1e-8 (total iterations; learners: median of seeds)"
    )
    print(
        f"{'policy':<24}{'ours':>10}{'expected':>10}"
        f"{'/ best fixed':>14}{'/ inst.-opt':>13}"
    )
    for name in (
        "CG",
        "omega = 1",
        "best fixed",
        "instance-optimal",
        "Tsallis-INF",
        "Tsallis-INF (RV)",
        "Tsallis-INF-CB",
        "ChebCB",
    ):
        label = name
        if name == "best fixed":
            label = f"best fixed ({res['best fixed omega']:.2f})"
        e = exp.get(name)
        print(
            f"{label:<24}{res[name]:>10.0f}{'-' if e is None else e:>10}"
            f"{res[name] / res['best fixed']:>14.3f}"
            f"{res[name] / res['instance-optimal']:>13.3f}"
        )
    if "wall-clock" in res:
        print("wall-clock (live simulation, compile excluded)")
        for label, v in res["wall-clock"].items():
            print(f"  {label:<34}{v['seconds']:>8.2f} s  {v['iterations']:>8} its")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (CI)")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--skip-heat", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument(
        "--skip-varcoef", action="store_true", help="skip the nx = 100 sequence"
    )
    parser.add_argument(
        "--only-varcoef", action="store_true", help="run only the nx = 100 sequence"
    )
    parser.add_argument(
        "--heat-sizes", type=int, nargs="+", default=None, help="nx values (25 50)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default: bench/results/tuning_relax.json; with --quick a "
        "temporary file, so CI never overwrites the committed full results)",
    )
    args = parser.parse_args()
    quick = args.quick
    if args.out is None:
        args.out = (
            Path(tempfile.gettempdir()) / "tuning_relax_quick.json"
            if quick
            else RESULTS_PATH
        )
    seeds = args.seeds or (1 if quick else 5)
    T = 600 if quick else 5000
    results = {
        "quick": quick,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "jax": jax.__version__,
        "command": command_line(),
        "machine_info": machine_info(),
        "synthetic": {},
        "heat": {},
    }
    t_start = time.perf_counter()
    partial = args.only_varcoef or args.skip_synthetic or args.skip_heat
    if partial and not quick and args.out.exists():
        # A partial run updates the committed results instead of replacing them.
        old = json.loads(args.out.read_text())
        results = {**old, **{k: v for k, v in results.items() if k not in old}}
        results["synthetic"] = old.get("synthetic", {})
        results["heat"] = old.get("heat", {})

    def save():
        # Written after every experiment, so a long run leaves partial results.
        results["total seconds"] = time.perf_counter() - t_start
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, default=float))

    if args.only_varcoef:
        args.skip_synthetic = args.skip_heat = True
    if not args.skip_synthetic:
        results["replay equals live solve_sequence"] = check_live_prefix(
            100 if quick else 200
        )
        for variance in ("high", "low"):
            res = synthetic(variance, T, seeds)
            results["synthetic"][variance] = res
            print_synthetic(variance, res)
            save()
    if not args.skip_heat:
        sizes = args.heat_sizes or ((25,) if quick else (25, 50))
        steps = 300 if quick else 5000
        for nx in sizes:
            res = heat(nx, steps, 3 if not quick else 2, timing=True)
            results["heat"][str(nx)] = res
            print_heat(res)
            save()
    if not args.skip_varcoef:
        nx, steps, sample = (20, 60, 20) if quick else (100, 2000, 100)
        res = varcoef(nx, steps, sample)
        results["varcoef"] = res
        print_varcoef(res)
    save()
    print(f"\nwrote {args.out} ({results['total seconds']:.0f} s)")


if __name__ == "__main__":
    main()
