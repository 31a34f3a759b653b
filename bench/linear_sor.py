"""jaxsolve SOR and SSOR-PCG against pyamg, SciPy and lineax on 2-D Poisson.

Every method solves the same system: the 5-point Dirichlet Laplacian (4 on the
diagonal, no h^2), the same N(0, 1) right-hand side (fixed seed), x0 = 0, float64,
with one stopping rule, ||b - A x||_2 <= 1e-6 ||b||_2. Afterwards the *true* relative
residual of every answer is recomputed with the assembled CSR matrix.

    python bench/linear_sor.py          # 64^2, 256^2 -> bench/results/linear_sor.json
    python bench/linear_sor.py --quick  # 32^2, 64^2, few repeats (CI, < 2 minutes)

Timings are medians of steady-state runs (`time.perf_counter`; jitted JAX calls end
in `jax.block_until_ready`); compile time is the first call minus that median. XLA,
OpenMP and BLAS run on one thread (pyamg's and SciPy's kernels are single-threaded);
`--multithread` lifts that.
"""

import argparse
import os
import sys
import time
from typing import ClassVar


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    command_line,
    configure_threads,
    format_table,
    machine_info,
    time_calls,
    time_first_and_steady,
    time_interleaved,
    versions,
    write_json,
)


# XLA reads its flags when jax is first imported, so this must come first.
configure_threads(single="--multithread" not in sys.argv)

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import lineax as lx  # noqa: E402
import numpy as np  # noqa: E402
import pyamg  # noqa: E402
import scipy.sparse.linalg as spla  # noqa: E402
from pyamg import amg_core  # noqa: E402
from pyamg.relaxation.relaxation import sor as pyamg_sor  # noqa: E402

import jaxsolve as js  # noqa: E402


jax.config.update("jax_enable_x64", True)

TAU = 1e-6
SEED = 0
SSOR_OMEGAS = (1.5, 1.7, 1.8, 1.9, 1.95)
RESULTS_JSON = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "linear_sor.json"
)


# ----------------------------------------------------------------------------------
# The problem


class Problem:
    """The n x n Poisson system in both forms: the jaxsolve matrix-free operator on
    (n, n) arrays, and pyamg's assembled CSR matrix on C-order vectors."""

    def __init__(self, n: int, seed: int = SEED):
        self.n = n
        self.size = n * n
        self.A = js.linear.poisson((n, n), dtype=jnp.float64)
        self.P = pyamg.gallery.poisson((n, n), format="csr", dtype=np.float64)
        self.b = np.random.default_rng(seed).standard_normal((n, n))
        self.b_flat = np.ascontiguousarray(self.b.reshape(-1))
        self.b_jax = jnp.asarray(self.b)
        self.bnorm = float(np.linalg.norm(self.b_flat))
        self.omega_young = float(js.linear.young_omega(self.A))

    def relres(self, x) -> float:
        """True ||b - A x||_2 / ||b||_2 with the assembled matrix."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        return float(np.linalg.norm(self.b_flat - self.P @ x) / self.bnorm)


def check_matrix(n: int = 8) -> float:
    """max |A.as_matrix() - pyamg.gallery.poisson| (both in C order)."""
    dense = np.asarray(js.linear.poisson((n, n), dtype=jnp.float64).as_matrix())
    csr = pyamg.gallery.poisson((n, n), format="csr", dtype=np.float64).toarray()
    return float(np.abs(dense - csr).max())


def _row(prob: Problem, method: str, **fields) -> dict:
    row = {"n": prob.n, "method": method}
    row.update(fields)
    return row


def _finish(row: dict, timing: dict, iters: int) -> dict:
    row["iters"] = int(iters)
    row["solve_ms"] = 1e3 * timing["median_s"]
    row["per_iter_us"] = 1e6 * timing["median_s"] / max(int(iters), 1)
    row["compile_s"] = timing.get("compile_s")
    row["timing"] = timing
    return row


# ----------------------------------------------------------------------------------
# jaxsolve and lineax (jitted; omega is an array field, so a new omega reuses the
# compiled code)


def _jaxsolve_solve(A, b, solver):
    sol = js.linear.solve(A, b, solver, throw=False)
    return sol.value, sol.stats["num_steps"], sol.result == js.RESULTS.successful


def _lineax_solve(A, b, solver):
    sol = lx.linear_solve(A, b, solver, throw=False)
    return sol.value, sol.stats["num_steps"], sol.result == lx.RESULTS.successful


def bench_jax(
    prob: Problem, method: str, fn, solver, repeats: int, cold: bool, **fields
) -> dict:
    """`cold=True` clears JAX's caches first, so that the first call compiles."""
    if cold:
        jax.clear_caches()
    jitted = eqx.filter_jit(fn)

    def call():
        return jax.block_until_ready(jitted(prob.A, prob.b_jax, solver))

    (x, steps, ok), timing = time_first_and_steady(call, repeats)
    row = _row(prob, method, relres=prob.relres(x), converged=bool(ok), **fields)
    return _finish(row, timing, int(steps))


def jaxsolve_sor_rows(prob: Problem, repeats: int) -> list[dict]:
    rows = []
    for k, omega in enumerate((prob.omega_young, 1.9)):
        solver = js.linear.SOR(omega, rtol=TAU, max_steps=20_000, ordering="red_black")
        rows.append(
            bench_jax(
                prob,
                "jaxsolve SOR red-black",
                _jaxsolve_solve,
                solver,
                repeats,
                cold=k == 0,
                omega=omega,
                check="true residual every sweep",
                note=None if k == 0 else "new omega: reuses the compiled solve",
            )
        )
    # Natural ordering: the same ordering as pyamg's sweep, hence the same iterates.
    solver = js.linear.SOR(prob.omega_young, rtol=TAU, ordering="natural")
    rows.append(
        bench_jax(
            prob,
            "jaxsolve SOR natural",
            _jaxsolve_solve,
            solver,
            repeats,
            cold=True,
            omega=prob.omega_young,
            check="true residual every sweep",
        )
    )
    return rows


def jaxsolve_ssor_pcg_row(prob: Problem, repeats: int) -> tuple[dict, list[dict]]:
    """Scan a few omegas (one compile for all), then time the best from cold."""
    jax.clear_caches()
    jitted = eqx.filter_jit(_jaxsolve_solve)
    scan = []
    for omega in SSOR_OMEGAS:
        solver = js.linear.SSORPCG(omega, rtol=TAU)
        t0 = time.perf_counter()
        _, steps, ok = jax.block_until_ready(jitted(prob.A, prob.b_jax, solver))
        seconds = time.perf_counter() - t0
        scan.append({"omega": omega, "iters": int(steps), "ok": bool(ok), "s": seconds})
    best = min(scan, key=lambda s: (not s["ok"], s["iters"], s["s"]))
    solver = js.linear.SSORPCG(best["omega"], rtol=TAU)
    row = bench_jax(
        prob,
        "jaxsolve SSOR-PCG natural",
        _jaxsolve_solve,
        solver,
        repeats,
        cold=True,
        omega=best["omega"],
        check="true residual (recursive, certified by true)",
        note="omega: best of " + "/".join(f"{o:g}" for o in SSOR_OMEGAS),
    )
    return row, scan


def lineax_cg_row(prob: Problem, repeats: int) -> dict:
    # lineax's CG tests norm(r / (atol + rtol |b|)) <= 1 element-wise scaled, with
    # the max norm by default; rtol=0, atol=tau ||b||, two_norm is ||r||_2 <= tau
    # ||b||_2 (plus lineax's second test on the step, ||dx||_2 <= atol).
    solver = lx.CG(
        rtol=0.0,
        atol=TAU * prob.bnorm,
        norm=lx.internal.two_norm,
        max_steps=10 * prob.size,
    )
    return bench_jax(
        prob,
        "lineax CG (matrix-free)",
        _lineax_solve,
        solver,
        repeats,
        cold=True,
        check="recursive residual, true every 10",
    )


# ----------------------------------------------------------------------------------
# pyamg and SciPy


def pyamg_sor_solve(P, b, omega: float, max_sweeps: int, check_every: int = 1):
    """Forward SOR sweeps from zero until ||b - P x||_2 <= tau ||b||_2, testing the
    true residual every `check_every` sweeps (what a solver built on the bare sweep
    has to do)."""
    x = np.zeros_like(b)
    target = TAU * np.linalg.norm(b)
    for k in range(1, max_sweeps + 1):
        pyamg_sor(P, x, b, omega, iterations=1, sweep="forward")
        if k % check_every == 0 and np.linalg.norm(b - P @ x) <= target:
            return x, k, True
    return x, max_sweeps, False


def pyamg_bare_sweeps(P, b, omega: float, sweeps: int) -> np.ndarray:
    """`sweeps` forward SOR sweeps with pyamg's public `sor` (no residual test)."""
    x = np.zeros_like(b)
    pyamg_sor(P, x, b, omega, iterations=sweeps, sweep="forward")
    return x


def pyamg_kernel_sweeps(P, b, omega: float, sweeps: int) -> np.ndarray:
    """The C++ kernel behind `sor` called directly: no Python-level checks."""
    x = np.zeros_like(b)
    for _ in range(sweeps):
        amg_core.sor_gauss_seidel(
            P.indptr, P.indices, P.data, x, b, 0, P.shape[0], 1, omega
        )
    return x


def pyamg_sor_rows(prob: Problem, repeats: int) -> list[dict]:
    rows = []
    for omega in (prob.omega_young, 1.9):
        x, iters, ok = pyamg_sor_solve(prob.P, prob.b_flat, omega, 20_000)
        timing = time_calls(
            lambda: pyamg_sor_solve(prob.P, prob.b_flat, omega, 20_000), repeats
        )
        bare = time_calls(
            lambda: pyamg_bare_sweeps(prob.P, prob.b_flat, omega, iters), repeats
        )
        row = _row(
            prob,
            "pyamg SOR forward",
            omega=omega,
            relres=prob.relres(x),
            converged=ok,
            check="true residual every sweep",
            bare_per_sweep_us=1e6 * bare["median_s"] / iters,
            bare_timing=bare,
        )
        rows.append(_finish(row, timing, iters))
    return rows


def scipy_cg(P, b, M=None):
    count = [0]

    def callback(xk):
        count[0] += 1

    x, info = spla.cg(
        P, b, rtol=TAU, atol=0.0, maxiter=10 * P.shape[0], M=M, callback=callback
    )
    return x, count[0], info == 0


def pyamg_ssor_preconditioner(P, omega: float) -> spla.LinearOperator:
    """M^{-1} r: a forward then a backward pyamg SOR sweep from zero (the exact SSOR
    preconditioner up to a constant factor, which CG ignores). `sweep='symmetric'`
    cannot be used: pyamg 5.4.1 drops omega there."""

    def matvec(r):
        z = np.zeros_like(r)
        pyamg_sor(P, z, r, omega, iterations=1, sweep="forward")
        pyamg_sor(P, z, r, omega, iterations=1, sweep="backward")
        return z

    return spla.LinearOperator(P.shape, matvec=matvec, dtype=np.float64)


def scipy_cg_rows(prob: Problem, repeats: int, ssor_omega: float) -> list[dict]:
    rows = []
    ssor = pyamg_ssor_preconditioner(prob.P, ssor_omega)
    for method, M, omega in (
        ("scipy CG", None, None),
        ("scipy CG + pyamg SSOR", ssor, ssor_omega),
    ):
        x, iters, ok = scipy_cg(prob.P, prob.b_flat, M)
        timing = time_calls(lambda: scipy_cg(prob.P, prob.b_flat, M), repeats)
        row = _row(
            prob,
            method,
            omega=omega,
            relres=prob.relres(x),
            converged=bool(ok),
            check="recursive residual",
            note=None if M is None else "extra: compiled SSOR-PCG reference",
        )
        rows.append(_finish(row, timing, iters))
    return rows


def pyamg_amg_rows(prob: Problem, repeats: int) -> list[dict]:
    rows = []
    for method, build in (
        ("pyamg SA + CG", pyamg.smoothed_aggregation_solver),
        ("pyamg RS + CG", pyamg.ruge_stuben_solver),
    ):
        setup = time_calls(lambda: build(prob.P), repeats)
        ml = build(prob.P)

        def solve():
            residuals = []
            x = ml.solve(prob.b_flat, tol=TAU, accel="cg", residuals=residuals)
            return x, residuals

        x, residuals = solve()
        timing = time_calls(solve, repeats)
        row = _row(
            prob,
            method,
            relres=prob.relres(x),
            converged=bool(residuals[-1] <= TAU * prob.bnorm),
            check="recursive residual",
            setup_ms=1e3 * setup["median_s"],
            setup_timing=setup,
            note=None if "SA" in method else "extra",
        )
        rows.append(_finish(row, timing, len(residuals) - 1))
    return rows


def ordering_check(prob: Problem, omega: float) -> dict:
    """Sweep counts depend on the ordering away from Young's omega: run pyamg's SOR
    on the red-black permuted matrix, which must match jaxsolve's red-black SOR."""
    n = prob.n
    red = (np.indices((n, n)).sum(axis=0) % 2 == 0).reshape(-1)
    perm = np.concatenate([np.flatnonzero(red), np.flatnonzero(~red)])
    permuted = prob.P[perm][:, perm].tocsr()
    _, rb_sweeps, _ = pyamg_sor_solve(permuted, prob.b_flat[perm], omega, 20_000)
    _, nat_sweeps, _ = pyamg_sor_solve(prob.P, prob.b_flat, omega, 20_000)
    solver = js.linear.SOR(omega, rtol=TAU, max_steps=20_000, ordering="red_black")
    _, steps, _ = eqx.filter_jit(_jaxsolve_solve)(prob.A, prob.b_jax, solver)
    return {
        "omega": omega,
        "pyamg_red_black_sweeps": rb_sweeps,
        "pyamg_natural_sweeps": nat_sweeps,
        "jaxsolve_red_black_sweeps": int(steps),
    }


# ----------------------------------------------------------------------------------
# Time per sweep, precisely: a fixed number of sweeps, no early stop


def _fixed_sweeps(A, b, omega, sweeps: int):
    """`sweeps` red-black sweeps without a stopping test (the solver's carry: the
    residual of the previous sweep feeds the next)."""
    split = js.linear.SOR(omega, ordering="red_black").init(A, {})[1]

    def body(_, carry):
        x, r = carry
        x = x + split.lower_solve(r, omega)
        return x, b - split.mv(x)

    return jax.lax.fori_loop(0, sweeps, body, (jnp.zeros_like(b), b))[0]


class _SORNoStagnation(js.linear.SOR):
    # For timing a fixed number of sweeps: never stop on stagnation (the solver
    # would rightly stop once the residual reaches the rounding floor).
    stagnation_window: ClassVar[int] = 2**30


def sweep_timing(prob: Problem, sweeps: int, repeats: int) -> dict:
    omega = prob.omega_young
    # rtol far below rounding, so exactly `max_steps` sweeps run (each with the true
    # residual and its norm, and the stagnation bookkeeping, as in a real solve).
    solver = _SORNoStagnation(omega, rtol=1e-30, max_steps=sweeps, ordering="red_black")
    solve = eqx.filter_jit(_jaxsolve_solve)
    fixed = jax.jit(_fixed_sweeps, static_argnums=3)
    omega_arr = jnp.asarray(omega)
    _, steps, _ = jax.block_until_ready(solve(prob.A, prob.b_jax, solver))
    assert int(steps) == sweeps, (int(steps), sweeps)
    jax.block_until_ready(fixed(prob.A, prob.b_jax, omega_arr, sweeps))
    P, b = prob.P, prob.b_flat
    norm_every = lambda: _pyamg_sweeps_with_norm(P, b, omega, sweeps)
    fns = {
        "jaxsolve_solver": lambda: jax.block_until_ready(
            solve(prob.A, prob.b_jax, solver)
        ),
        "jaxsolve_no_test": lambda: jax.block_until_ready(
            fixed(prob.A, prob.b_jax, omega_arr, sweeps)
        ),
        "pyamg_sor": lambda: pyamg_bare_sweeps(P, b, omega, sweeps),
        "pyamg_kernel": lambda: pyamg_kernel_sweeps(P, b, omega, sweeps),
        "pyamg_sor_plus_norm": norm_every,
    }
    timings = time_interleaved(fns, repeats)
    per_sweep_us = {k: 1e6 * t["median_s"] / sweeps for k, t in timings.items()}
    cpu_per_sweep_us = {k: 1e6 * t["cpu_median_s"] / sweeps for k, t in timings.items()}
    js_us = per_sweep_us["jaxsolve_solver"]
    return {
        "n": prob.n,
        "omega": omega,
        "sweeps": sweeps,
        "repeats": repeats,
        "per_sweep_us": per_sweep_us,
        "cpu_per_sweep_us": cpu_per_sweep_us,
        "ratio_jaxsolve_solver_to": {
            "pyamg_sor": js_us / per_sweep_us["pyamg_sor"],
            "pyamg_kernel": js_us / per_sweep_us["pyamg_kernel"],
            "pyamg_sor_plus_norm": js_us / per_sweep_us["pyamg_sor_plus_norm"],
        },
        # CPU time is less sensitive to other jobs on a shared machine (all the
        # timed code runs on one thread).
        "cpu_ratio_jaxsolve_solver_to": {
            k: cpu_per_sweep_us["jaxsolve_solver"] / cpu_per_sweep_us[k]
            for k in ("pyamg_sor", "pyamg_kernel", "pyamg_sor_plus_norm")
        },
        "timings": timings,
    }


def _pyamg_sweeps_with_norm(P, b, omega: float, sweeps: int) -> np.ndarray:
    x = np.zeros_like(b)
    for _ in range(sweeps):
        pyamg_sor(P, x, b, omega, iterations=1, sweep="forward")
        np.linalg.norm(b - P @ x)
    return x


# ----------------------------------------------------------------------------------


COLUMNS = (
    ("method", "method", "s"),
    ("omega", "omega", ".4f"),
    ("iters", "iters", "d"),
    ("us/iter", "per_iter_us", ".1f"),
    ("bare us/sweep", "bare_per_sweep_us", ".1f"),
    ("solve ms", "solve_ms", ".1f"),
    ("compile s", "compile_s", ".2f"),
    ("setup ms", "setup_ms", ".1f"),
    ("true relres", "relres", ".2e"),
    ("ok", "ok", "s"),
)


def run_size(prob: Problem, repeats: int) -> tuple[list[dict], list[dict]]:
    rows = jaxsolve_sor_rows(prob, repeats)
    rows += pyamg_sor_rows(prob, repeats)
    ssor_row, scan = jaxsolve_ssor_pcg_row(prob, repeats)
    rows.append(ssor_row)
    rows += scipy_cg_rows(prob, repeats, ssor_row["omega"])
    rows.append(lineax_cg_row(prob, repeats))
    rows += pyamg_amg_rows(prob, repeats)
    for row in rows:
        row["ok"] = "yes" if row["converged"] and row["relres"] <= TAU else "NO"
    return rows, scan


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32^2 and 64^2, CI")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--out",
        default=None,
        help="JSON path (default: bench/results/linear_sor.json; with --quick a "
        "file in the temp directory, so a CI run never overwrites the results)",
    )
    parser.add_argument(
        "--multithread", action="store_true", help="leave XLA/BLAS threading alone"
    )
    args = parser.parse_args(argv)

    sizes = (32, 64) if args.quick else (64, 256)
    repeats = args.repeats or (3 if args.quick else 5)
    sweep_repeats = 3 if args.quick else 7
    sweeps = {32: 2000, 64: 2000 if args.quick else 4000, 256: 1000}
    out = args.out
    if out is None:
        out = (
            os.path.join(os.environ.get("TMPDIR", "/tmp"), "linear_sor_quick.json")
            if args.quick
            else RESULTS_JSON
        )

    info = machine_info()
    vers = versions(["jax", "jaxlib", "lineax", "equinox", "pyamg", "scipy", "numpy"])
    vers["jaxsolve"] = js.__version__
    print("versions:", ", ".join(f"{k} {v}" for k, v in vers.items()))
    print(
        f"machine: {info['cpu_model']}, {info['usable_cpus']} usable CPUs, "
        f"XLA_FLAGS={info['XLA_FLAGS']!r}, load average {info['loadavg']}"
    )
    diff = check_matrix(8)
    print(f"check: max |A.as_matrix() - pyamg.gallery.poisson| at 8^2 = {diff:.1e}")
    assert diff == 0.0, diff
    print(
        f"stopping rule for all: ||b - A x||_2 <= {TAU:g} ||b||_2, x0 = 0, float64, "
        f"b ~ N(0, 1) with seed {SEED}; times are medians of {repeats} runs"
    )

    all_rows, scans, sweep_rows, orderings = [], {}, [], {}
    for n in sizes:
        prob = Problem(n)
        young_closed = 2 / (1 + np.sin(np.pi / (n + 1)))
        assert abs(prob.omega_young - young_closed) < 1e-12
        rows, scan = run_size(prob, repeats)
        all_rows += rows
        scans[n] = scan
        print(
            f"\n== 2-D Poisson {n}x{n} (N = {prob.size}), Young's omega "
            f"{prob.omega_young:.4f} =="
        )
        print(format_table(rows, COLUMNS))
        print(
            "   SSOR-PCG omega scan (iterations): "
            + ", ".join(f"{s['omega']:g}: {s['iters']}" for s in scan)
        )
        check = ordering_check(prob, 1.9)
        orderings[n] = check
        print(
            "   ordering check, omega 1.9: pyamg SOR on the red-black permuted "
            f"matrix takes {check['pyamg_red_black_sweeps']} sweeps (jaxsolve "
            f"red-black: {check['jaxsolve_red_black_sweeps']}; natural order: "
            f"{check['pyamg_natural_sweeps']})"
        )
        timing = sweep_timing(prob, sweeps[n], sweep_repeats)
        sweep_rows.append(timing)
    print(
        "\nus/iter: time per sweep or iteration including its stopping test "
        "(SOR: the true residual and its norm every sweep, in Python for pyamg);\n"
        "bare us/sweep: pyamg's sor(iterations=iters) alone. compile s: first call "
        "minus the median (0 for the second omega: omega is an array, no recompile)."
    )

    print(
        "\n== Time per red-black SOR sweep (fixed sweeps, Young's omega, "
        "interleaved repeats) =="
    )
    table = []
    for t in sweep_rows:
        us = t["per_sweep_us"]
        table.append(
            {
                "n": f"{t['n']}^2",
                "sweeps": t["sweeps"],
                "js": us["jaxsolve_solver"],
                "js_nt": us["jaxsolve_no_test"],
                "py": us["pyamg_sor"],
                "pyk": us["pyamg_kernel"],
                "pyn": us["pyamg_sor_plus_norm"],
                "r1": t["ratio_jaxsolve_solver_to"]["pyamg_sor"],
                "r2": t["ratio_jaxsolve_solver_to"]["pyamg_kernel"],
            }
        )
    print(
        format_table(
            table,
            (
                ("grid", "n", "s"),
                ("sweeps", "sweeps", "d"),
                ("jaxsolve solver us", "js", ".1f"),
                ("jaxsolve no-test us", "js_nt", ".1f"),
                ("pyamg sor() us", "py", ".1f"),
                ("pyamg kernel us", "pyk", ".1f"),
                ("pyamg sor()+norm us", "pyn", ".1f"),
                ("js/pyamg sor()", "r1", ".2f"),
                ("js/pyamg kernel", "r2", ".2f"),
            ),
        )
    )
    print(
        "   jaxsolve solver = SOR through js.linear.solve (sweep + true residual + "
        "its norm); no-test = the same sweeps in a fori_loop without the norm;\n"
        "   pyamg sor() = relaxation.sor(iterations=N); kernel = "
        "amg_core.sor_gauss_seidel called directly; +norm = a sweep then "
        "||b - A x||_2."
    )
    target = None
    big = [t for t in sweep_rows if t["n"] == 256]
    if big:
        ratio = big[0]["ratio_jaxsolve_solver_to"]["pyamg_sor"]
        ratio_k = big[0]["ratio_jaxsolve_solver_to"]["pyamg_kernel"]
        cpu = big[0]["cpu_ratio_jaxsolve_solver_to"]
        target = {
            "statement": "red-black SOR time per sweep at 256^2 no slower than "
            "pyamg's compiled SOR",
            "ratio_vs_pyamg_sor": ratio,
            "ratio_vs_pyamg_kernel": ratio_k,
            "cpu_ratio_vs_pyamg_sor": cpu["pyamg_sor"],
            "cpu_ratio_vs_pyamg_kernel": cpu["pyamg_kernel"],
            "met": bool(max(ratio, ratio_k) <= 1.0),
        }
        print(
            f"\nTarget (256^2 time per sweep, jaxsolve / pyamg): {ratio:.2f} vs sor(), "
            f"{ratio_k:.2f} vs the bare kernel (CPU time: {cpu['pyamg_sor']:.2f}, "
            f"{cpu['pyamg_kernel']:.2f}) -> {'MET' if target['met'] else 'NOT MET'}"
        )

    info["loadavg_end"] = list(os.getloadavg())
    payload = {
        "benchmark": "linear_sor",
        "command": command_line(),
        "description": __doc__.strip().splitlines()[0],
        "config": {
            "quick": args.quick,
            "sizes": list(sizes),
            "tau": TAU,
            "seed": SEED,
            "repeats": repeats,
            "sweep_repeats": sweep_repeats,
            "ssor_omegas": list(SSOR_OMEGAS),
            "single_threaded": not args.multithread,
            "timer": "time.perf_counter (wall), time.process_time (cpu)",
        },
        "versions": vers,
        "machine": info,
        "matrix_check_max_abs_diff_8x8": diff,
        "rows": all_rows,
        "ssor_pcg_omega_scan": {str(k): v for k, v in scans.items()},
        "ordering_check": {str(k): v for k, v in orderings.items()},
        "sweep_timing": sweep_rows,
        "target": target,
    }
    write_json(out, payload)
    print(f"\nwrote {out}")
    failed = [r for r in all_rows if r["ok"] != "yes"]
    for r in failed:
        print(f"FAILED: n={r['n']} {r['method']}: true relres {r['relres']:.2e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
