"""DCDM with the shipped networks against CG (lineax, SciPy), SSOR-PCG and pyamg AMG-PCG.

Every method solves the same system from x0 = 0 with one stopping rule,
||b - A x||_2 <= rtol ||b||_2, and the *true* relative residual of every answer is
recomputed afterwards (column `relres`; a method that stops on a recursive residual
may sit slightly above rtol, which the table shows rather than hides).

Problems: Dirichlet Poisson (5-point 2-D, 7-point 3-D, no h^2), a variable-coefficient
2-D operator and a 2-D obstacle domain (neither seen in training); right-hand sides
"random" (N(0, 1), fixed seed) and "smooth" (all ones); rtol 1e-4 and 1e-6; float64,
and float32 at rtol 1e-4 (float32 cannot certify 1e-6 on these grids).

    python bench/linear_dcdm.py           # full -> bench/results/linear_dcdm.json
    python bench/linear_dcdm.py --quick   # small sizes, one repeat (CI; temporary JSON)

Timings: median of `--repeats` steady-state runs (`time.perf_counter`, jitted calls
end in `jax.block_until_ready`); pyamg's setup (hierarchy) and solve are timed
apart. XLA, OpenMP and BLAS run on one thread (pyamg's and SciPy's kernels are
single-threaded); `--multithread` lifts that. DCDM runs its network in float32 inside
float64 solves (as the paper does). Columns: `its` iterations, `setup` (AMG
hierarchy; 0 for the others: DCDM's training is a one-off, recorded in the model
file), `solve` seconds, `ms/it` solve time per iteration.
"""

import argparse
import os
import sys
import tempfile


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    command_line,
    configure_threads,
    format_table,
    machine_info,
    merge_json,
    time_calls,
    versions,
    write_json,
)


configure_threads(single="--multithread" not in sys.argv)

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import lineax as lx  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import scipy.sparse.linalg as spla  # noqa: E402
from equinox.internal import AbstractProgressMeter  # noqa: E402


try:
    import pyamg  # noqa: E402
except ImportError:  # the column is skipped, and the table says so
    pyamg = None

import jaxsolve as js  # noqa: E402


jax.config.update("jax_enable_x64", True)

RESULTS_JSON = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "linear_dcdm.json"
)
SEED = 0


# ----------------------------------------------------------------------------------
# Problems: the matrix-free operator and the same matrix assembled as CSR.


def to_csr(op: js.linear.PoissonOperator) -> sp.csr_matrix:
    """Assemble a PoissonOperator (C order), from its own face coefficients."""
    shape = op.grid_shape
    n = int(np.prod(shape))
    idx = np.arange(n).reshape(shape)
    rows, cols, vals = (
        [np.arange(n)],
        [np.arange(n)],
        [np.asarray(op.diagonal_grid()).ravel()],
    )
    for d, (lo, _) in enumerate(op.face_coefficients()):
        lo = np.broadcast_to(np.asarray(lo), shape)
        sl = [slice(None)] * len(shape)
        sl[d] = slice(1, None)
        sl_nb = list(sl)
        sl_nb[d] = slice(0, -1)
        i, j, v = (
            idx[tuple(sl)].ravel(),
            idx[tuple(sl_nb)].ravel(),
            lo[tuple(sl)].ravel(),
        )
        rows += [i, j]
        cols += [j, i]
        vals += [-v, -v]
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n, n),
    )


def masked_operator(base, mask):
    """Obstacle domain: the cells outside `mask` are removed (Dirichlet walls), their
    rows and columns replaced by the identity, so the operator stays SPD."""

    def mv(u):
        return mask * base.mv(mask * u) + (1 - mask) * u

    return lx.FunctionLinearOperator(
        mv, base.in_structure(), (lx.symmetric_tag, lx.positive_semidefinite_tag)
    )


class Problem:
    def __init__(self, kind, n, dim, rhs, dtype):
        self.kind, self.n, self.dim, self.rhs = kind, n, dim, rhs
        self.dtype = dtype
        shape = (n,) * dim
        self.shape = shape
        grids = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
        mask = None
        if kind == "poisson":
            op = js.linear.poisson(shape, dtype=dtype)
            self.label = f"Poisson {dim}-D {n}^{dim}"
        elif kind == "varcoef":
            # A smooth field with contrast 100 (k from 0.1 to 10).
            k = 10.0 ** (np.sin(2 * np.pi * grids[0]) * np.cos(3 * np.pi * grids[1]))
            op = js.linear.poisson(
                shape, coefficient=jnp.asarray(k, dtype), dtype=dtype
            )
            self.label = f"var. coef. (contrast 100) {n}^{dim}"
        elif kind == "obstacle":
            r2 = (grids[0] - 0.5) ** 2 + (grids[1] - 0.4) ** 2
            mask = np.where(
                (r2 < 0.15**2) | ((np.abs(grids[0] - 0.75) < 0.03) & (grids[1] > 0.3)),
                0.0,
                1.0,
            )
            op = js.linear.poisson(shape, dtype=dtype)
            self.label = f"obstacle domain {n}^{dim}"
        else:
            raise ValueError(kind)
        csr = to_csr(op)
        if mask is not None:
            m = sp.diags(mask.ravel())
            csr = (m @ csr @ m + sp.diags(1 - mask.ravel())).tocsr()
            op = masked_operator(op, jnp.asarray(mask, dtype))
        self.mask = None if mask is None else jnp.asarray(mask, dtype)
        self.op = op
        self.csr = csr.astype(np.float64)
        if rhs == "random":
            b = np.random.default_rng(SEED).standard_normal(shape)
        else:
            b = np.ones(shape)
        if mask is not None:
            b = b * mask
        self.b64 = b.ravel()
        self.b = jnp.asarray(b, dtype)
        self.bnorm = float(np.linalg.norm(self.b64))

    def relres(self, x) -> float:
        x = np.asarray(x, np.float64).ravel()
        return float(np.linalg.norm(self.b64 - self.csr @ x) / self.bnorm)


# ----------------------------------------------------------------------------------
# Methods. Each returns (iterations, x, result string) from a jitted call.


@eqx.filter_jit
def _js_solve(op, b, solver):
    sol = js.linear.solve(op, b, solver, throw=False)
    return sol.value, sol.stats["num_steps"], sol.result


def _result_name(result) -> str:
    return "ok" if result == js.RESULTS.successful else "FAILED"


def run_dcdm(p, rtol, net, repeats):
    solver = js.linear.DeepConjugateDirection(
        net, rtol=rtol, max_steps=2000, mask=p.mask, network_dtype="float32"
    )
    fn = lambda: jax.block_until_ready(_js_solve(p.op, p.b, solver))
    x, its, res = fn()
    t = time_calls(fn, repeats)
    return int(its), x, _result_name(res), 0.0, t["median_s"]


def run_ssor(p, rtol, repeats):
    # Near-optimal SSOR-PCG relaxation for the model problem (Axelsson 1994, 7.4).
    omega = 2 / (1 + 2 * np.sin(np.pi / (2 * (p.n + 1))))
    solver = js.linear.SSORPCG(omega=omega, rtol=rtol, max_steps=20_000)
    fn = lambda: jax.block_until_ready(_js_solve(p.op, p.b, solver))
    x, its, res = fn()
    t = time_calls(fn, repeats)
    return int(its), x, _result_name(res), 0.0, t["median_s"]


@eqx.filter_jit
def _lineax_cg(op, b, atol):
    # The note's emulation of ||r||_2 <= tau ||b||_2 (lineax's default rule is an
    # element-wise max norm).
    cg = lx.CG(rtol=0.0, atol=atol, norm=jnp.linalg.norm, max_steps=50_000)
    sol = lx.linear_solve(op, b, cg, throw=False)
    return sol.value, sol.stats["num_steps"], sol.result


def run_lineax_cg(p, rtol, repeats):
    atol = jnp.asarray(rtol * p.bnorm, p.dtype)
    fn = lambda: jax.block_until_ready(_lineax_cg(p.op, p.b, atol))
    x, its, res = fn()
    t = time_calls(fn, repeats)
    ok = "ok" if res == lx.RESULTS.successful else "FAILED"
    return int(its), x, ok, 0.0, t["median_s"]


def run_scipy_cg(p, rtol, repeats):
    a = p.csr.astype(p.dtype)
    b = np.asarray(p.b).ravel()
    count = [0]

    def solve():
        count[0] = 0

        def cb(_):
            count[0] += 1

        return spla.cg(a, b, rtol=rtol, atol=0.0, maxiter=50_000, callback=cb)

    x, info = solve()
    its = count[0]
    t = time_calls(solve, repeats)
    return its, x, "ok" if info == 0 else "FAILED", 0.0, t["median_s"]


def run_amg(p, rtol, repeats, kind):
    if p.dtype != jnp.float64:
        return None
    build = (
        pyamg.smoothed_aggregation_solver if kind == "sa" else pyamg.ruge_stuben_solver
    )
    ml = build(p.csr)
    setup = time_calls(lambda: build(p.csr), repeats)["median_s"]
    residuals: list[float] = []

    def solve():
        residuals.clear()
        return ml.solve(p.b64, tol=rtol, accel="cg", maxiter=500, residuals=residuals)

    x = solve()
    its = len(residuals) - 1
    t = time_calls(solve, repeats)
    return its, x, "ok", setup, t["median_s"]


# ----------------------------------------------------------------------------------
# Residual histories for the report's plot (`--histories-only` adds them to an
# existing JSON). Nothing above is re-measured.


class _ResidualRecorder(AbstractProgressMeter):
    """A progress meter that hands every step's progress to the host. jaxsolve's
    linear loop reports progress = log(r0 / r_k) / log(r0 / tol); with x0 = 0 and
    atol = 0, r0 = ||b|| and tol = rtol ||b||, so r_k / ||b|| = rtol ** progress
    (exact while r_k > tol; the last step is replaced by the final true residual)."""

    def init(self):
        return jnp.array(0, jnp.int32)

    def step(self, state, progress):
        state = state + 1
        jax.debug.callback(_record_progress, state, progress)
        return state

    def close(self, state):
        return None


_PROGRESS: list[tuple[int, float]] = []


def _record_progress(k, p):
    _PROGRESS.append((int(k), float(p)))


def _jaxsolve_history(p, solver, rtol):
    _PROGRESS.clear()
    sol = eqx.filter_jit(
        lambda s: js.linear.solve(
            p.op, p.b, s, throw=False, progress_meter=_ResidualRecorder()
        )
    )(solver)
    jax.block_until_ready(sol.value)
    hist = [1.0] + [rtol**q for _, q in sorted(_PROGRESS)]
    hist[-1] = p.relres(sol.value)
    return hist


def residual_histories(
    nets, rtol=1e-6, cases=(("poisson", 128, 2), ("poisson", 16, 3))
):
    """Relative residual ||b - A x_k|| / ||b|| after every iteration, float64,
    random right-hand side: DCDM and SSOR-PCG from jaxsolve's own loop (the residual
    it stops on), SciPy CG (the true residual of each iterate, from its callback)
    and pyamg SA + CG (its recorded residuals)."""
    out = {}
    for kind, n, dim in cases:
        p = Problem(kind, n, dim, "random", jnp.float64)
        omega = 2 / (1 + 2 * np.sin(np.pi / (2 * (p.n + 1))))
        h = {
            "DCDM (shipped net)": _jaxsolve_history(
                p,
                js.linear.DeepConjugateDirection(
                    nets[dim], rtol=rtol, max_steps=2000, network_dtype="float32"
                ),
                rtol,
            ),
            "SSOR-PCG (ours)": _jaxsolve_history(
                p, js.linear.SSORPCG(omega=omega, rtol=rtol, max_steps=20_000), rtol
            ),
        }
        cg = [1.0]
        spla.cg(
            p.csr,
            p.b64,
            rtol=rtol,
            atol=0.0,
            maxiter=50_000,
            callback=lambda x: cg.append(p.relres(x)),
        )
        h["CG (scipy)"] = cg
        if pyamg is not None:
            res: list[float] = []
            pyamg.smoothed_aggregation_solver(p.csr).solve(
                p.b64, tol=rtol, accel="cg", maxiter=500, residuals=res
            )
            h["AMG-SA + CG (pyamg)"] = [r / res[0] for r in res]
        out[p.label] = {"rhs": "random", "dtype": "float64", "rtol": rtol, **h}
        print(
            f"residual history {p.label}: "
            + ", ".join(f"{k} {len(v) - 1} its" for k, v in h.items()),
            flush=True,
        )
    return out


# ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--multithread", action="store_true")
    parser.add_argument("--sizes2d", default="32,64,128,256")
    parser.add_argument("--sizes3d", default="16,32,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--histories-only",
        action="store_true",
        help="only record the residual histories (for the report's plot) and add "
        "them to the existing JSON at --out (default bench/results/linear_dcdm.json)",
    )
    args = parser.parse_args()
    if args.histories_only:
        out = args.out or (
            os.path.join(tempfile.gettempdir(), "linear_dcdm_quick.json")
            if args.quick
            else RESULTS_JSON
        )
        nets = {
            2: js.linear.pretrained("poisson2d"),
            3: js.linear.pretrained("poisson3d"),
        }
        merge_json(
            out,
            {
                "histories": residual_histories(nets),
                "histories_command": command_line(),
                "histories_machine": machine_info(),
            },
        )
        print(f"\nadded residual histories to {out}")
        return 0
    if args.quick:
        sizes2d, sizes3d, repeats = [32, 64], [16], 1
        out = args.out or os.path.join(tempfile.gettempdir(), "linear_dcdm_quick.json")
    else:
        sizes2d = [int(s) for s in args.sizes2d.split(",") if s]
        sizes3d = [int(s) for s in args.sizes3d.split(",") if s]
        repeats = args.repeats
        out = args.out or RESULTS_JSON
    nets = {2: js.linear.pretrained("poisson2d"), 3: js.linear.pretrained("poisson3d")}
    training = {
        name: js.load_header(js.linear._pretrained.pretrained_path(name))[
            "hyperparameters"
        ]["training"]
        for name in ("poisson2d", "poisson3d")
    }
    if pyamg is None:
        print(
            "pyamg is not installed: the AMG columns are skipped (pip install pyamg)."
        )

    cases = []
    for dim, sizes in ((2, sizes2d), (3, sizes3d)):
        for n in sizes:
            for rhs in ("random", "smooth"):
                cases.append(("poisson", n, dim, rhs, jnp.float64, (1e-4, 1e-6)))
                if not args.quick or n == sizes[0]:
                    cases.append(("poisson", n, dim, rhs, jnp.float32, (1e-4,)))
    extra_n = 64 if args.quick else 128
    for kind in ("varcoef", "obstacle"):
        cases.append((kind, extra_n, 2, "random", jnp.float64, (1e-6,)))

    rows = []
    for kind, n, dim, rhs, dtype, tols in cases:
        p = Problem(kind, n, dim, rhs, dtype)
        # Large problems: one timed run (the iteration counts do not vary).
        reps = repeats if n**dim <= 128**2 else 1
        for rtol in tols:
            methods = {
                "DCDM (shipped net)": lambda: run_dcdm(p, rtol, nets[dim], reps),
                "CG (lineax)": lambda: run_lineax_cg(p, rtol, reps),
                "CG (scipy)": lambda: run_scipy_cg(p, rtol, reps),
                "SSOR-PCG (ours)": lambda: run_ssor(p, rtol, reps),
            }
            if pyamg is not None:
                methods["AMG-SA + CG (pyamg)"] = lambda: run_amg(p, rtol, reps, "sa")
                methods["AMG-RS + CG (pyamg)"] = lambda: run_amg(p, rtol, reps, "rs")
            for method, fn in methods.items():
                got = fn()
                if got is None:
                    continue
                its, x, res, setup, solve = got
                rows.append(
                    {
                        "problem": p.label,
                        "kind": kind,
                        "dim": dim,
                        "n": n,
                        "rhs": rhs,
                        "dtype": jnp.dtype(dtype).name,
                        "rtol": rtol,
                        "method": method,
                        "its": its,
                        "setup_s": setup,
                        "solve_s": solve,
                        "ms_per_it": 1e3 * solve / max(its, 1),
                        "relres": p.relres(x),
                        "result": res,
                    }
                )
                r = rows[-1]
                print(
                    f"{r['problem']:>28} {rhs:>6} {r['dtype']:>7} {rtol:.0e} "
                    f"{method:>20}: {its:5d} its, {setup:7.3f} + {solve:8.4f} s, "
                    f"relres {r['relres']:.1e} {res}",
                    flush=True,
                )

    # DCDM vs CG iteration ratios (the goal: <= 0.2 at every size).
    ratios = []
    for r in rows:
        if r["method"] != "DCDM (shipped net)":
            continue
        cg = [
            s for s in rows
            if s["method"] == "CG (scipy)" and all(
                s[k] == r[k] for k in ("problem", "rhs", "dtype", "rtol")
            )
        ]  # fmt: skip
        if cg and cg[0]["its"]:
            ratios.append(
                {**r, "cg_its": cg[0]["its"], "ratio": r["its"] / cg[0]["its"]}
            )
    columns = [
        ("problem", "problem", "s"),
        ("rhs", "rhs", "s"),
        ("dtype", "dtype", "s"),
        ("rtol", "rtol", ".0e"),
        ("method", "method", "s"),
        ("its", "its", "d"),
        ("setup [s]", "setup_s", ".3f"),
        ("solve [s]", "solve_s", ".4f"),
        ("ms/it", "ms_per_it", ".3f"),
        ("relres", "relres", ".1e"),
        ("result", "result", "s"),
    ]
    print()
    print(format_table(rows, columns))
    print("\nDCDM iterations / CG iterations (goal <= 0.2):")
    print(
        format_table(
            ratios,
            [
                ("problem", "problem", "s"),
                ("rhs", "rhs", "s"),
                ("dtype", "dtype", "s"),
                ("rtol", "rtol", ".0e"),
                ("DCDM its", "its", "d"),
                ("CG its", "cg_its", "d"),
                ("ratio", "ratio", ".3f"),
            ],
        )
    )
    write_json(
        out,
        {
            "benchmark": "linear_dcdm",
            "command": command_line(),
            "quick": args.quick,
            "repeats": repeats,
            "machine": machine_info(),
            "versions": versions(
                ["jaxsolve", "jax", "jaxlib", "equinox", "lineax", "scipy", "pyamg"]
            ),
            "training": training,
            "rows": rows,
            "dcdm_vs_cg": [
                {
                    k: r[k]
                    for k in (
                        "problem",
                        "rhs",
                        "dtype",
                        "rtol",
                        "its",
                        "cg_its",
                        "ratio",
                    )
                }
                for r in ratios
            ],
            # Full runs only (about 20 s): the quick run stays short for CI.
            "histories": None if args.quick else residual_histories(nets),
        },
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
