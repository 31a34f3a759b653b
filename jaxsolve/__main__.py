"""`python -m jaxsolve demo | info | bench`: the command-line entry point.

- `demo`: runs every solver family on a built-in problem and prints a results table.
- `info`: versions and devices.
- `bench NAME [--quick]`: runs `bench/NAME.py` from a source checkout.
"""

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in (
        "jaxsolve",
        "jax",
        "jaxlib",
        "equinox",
        "lineax",
        "optax",
        "diffrax",
        "numpy",
    ):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def info() -> None:
    import jax

    for k, v in _versions().items():
        print(f"{k:>10}: {v}")
    print(f"{'backend':>10}: {jax.default_backend()}")
    print(f"{'devices':>10}: {', '.join(str(d) for d in jax.devices())}")
    print(f"{'x64':>10}: {jax.config.jax_enable_x64}")


def _time(fn: Callable[[], object], repeats: int = 3) -> tuple[float, float]:
    """(first call, median of `repeats` later calls) in seconds; blocks on results."""
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return first, median


def print_table(rows: Sequence[dict[str, object]], columns: Sequence[str]) -> None:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [
        max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)
    ]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def linear_demo_rows(n: int = 64) -> list[dict[str, object]]:
    """SOR vs SSOR-PCG vs CG vs a direct solve on the 2-D Poisson problem."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import lineax as lx

    import jaxsolve as js

    op = js.linear.poisson((n, n))
    b = jax.random.normal(jax.random.key(0), (n, n))
    rtol = 1e-6
    bnorm = float(jnp.linalg.norm(b))
    problem = f"2-D Poisson {n}x{n}, rtol {rtol:g}"
    rows = []

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
                "result": "ok" if sol.result == js.RESULTS.successful else "FAILED",
            }
        )

    # Best omega by a small sweep: one vmapped solve over the grid (no recompiles).
    omegas = jnp.linspace(1.70, 1.98, 15)

    @eqx.filter_jit
    def sweep(cls, omegas):
        return jax.vmap(
            lambda w: js.linear.solve(
                op, b, cls(omega=w, rtol=rtol), throw=False
            ).stats["num_steps"]
        )(omegas)

    sor_steps = sweep(js.linear.SOR, omegas)
    best_sor = omegas[int(jnp.argmin(sor_steps))]
    young = js.linear.young_omega(op)
    ssor_omegas = jnp.linspace(1.0, 1.95, 20)
    best_ssor = ssor_omegas[int(jnp.argmin(sweep(js.linear.SSORPCG, ssor_omegas)))]

    for label, w in (
        ("SOR red-black, Young's omega", young),
        ("SOR red-black, best swept omega", best_sor),
        ("SOR red-black, omega = 1 (Gauss-Seidel)", 1.0),
    ):
        solver = js.linear.SOR(omega=w, rtol=rtol, max_steps=100_000)
        add(label, w, lambda s=solver: js.linear.solve(op, b, s, throw=False))
    solver = js.linear.SSORPCG(omega=best_ssor, rtol=rtol)
    add(
        "SSOR-PCG natural, best swept omega",
        best_ssor,
        lambda: js.linear.solve(op, b, solver, throw=False),
    )
    # Plain CG: lineax's CG with the same 2-norm stopping rule as ours.
    cg = lx.CG(
        rtol=0.0,
        atol=rtol * bnorm,
        norm=lambda r: jnp.linalg.norm(r),
        max_steps=10 * n * n,
    )
    add("CG (lineax)", None, lambda: js.linear.solve(op, b, cg, throw=False))
    dense_op = lx.MatrixLinearOperator(op.as_matrix(), lx.positive_semidefinite_tag)
    add(
        "direct (dense Cholesky, lineax)",
        None,
        lambda: js.linear.solve(dense_op, b.reshape(-1), lx.Cholesky()),
        iterative=False,
    )
    return rows


def demo(quick: bool = False) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    print(
        "jaxsolve demo: every solver family on a built-in problem "
        f"(backend: {jax.default_backend()}, float64)\n"
    )
    rows = linear_demo_rows(32 if quick else 64)
    try:
        from jaxsolve.tuning._demo import demo_rows as tuning_rows
    except ImportError:
        tuning_rows = None
    columns = [
        "method",
        "omega",
        "iterations",
        "time [s]",
        "compile [s]",
        "rel. residual",
        "result",
    ]
    print(f"Linear: {rows[0]['problem']} (random b; time = median of 3 compiled runs)")
    print_table(rows, columns)
    failed = sum(r["result"] != "ok" for r in rows)
    if tuning_rows is not None:
        trows = tuning_rows()
        if trows:
            print(f"\nTuning: {trows[0].get('problem', '')}")
            cols = [c for c in trows[0] if c not in ("family", "problem")]
            print_table(trows, cols)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxsolve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run every family on a built-in problem")
    p_demo.add_argument("--quick", action="store_true", help="smaller problems")
    sub.add_parser("info", help="print versions and devices")
    p_bench = sub.add_parser("bench", help="run bench/NAME.py from a source checkout")
    p_bench.add_argument("name")
    p_bench.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "info":
        info()
        return 0
    if args.command == "demo":
        return demo(quick=args.quick)
    script = os.path.join("bench", f"{args.name}.py")
    if not os.path.exists(script):
        print(
            f"No benchmark {script!r}: run this from a source checkout of jaxsolve "
            "(the bench/ folder is not installed with the package).",
            file=sys.stderr,
        )
        return 2
    cmd = [sys.executable, script] + (["--quick"] if args.quick else [])
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
