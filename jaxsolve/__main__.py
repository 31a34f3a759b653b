"""`python -m jaxsolve demo | info | bench`: the command-line entry point.

- `demo`: runs every solver family on a built-in problem and prints a results table.
- `info`: versions and devices.
- `bench NAME [--quick]`: runs `bench/NAME.py` from a source checkout
  (`python -m jaxsolve bench --help` lists the names).
- `bench [--quick]`: runs every `bench/*.py` in turn (each in its own process; a
  failure is reported and the others still run), then writes the report
  `bench/results/REPORT.md` with its PNG plots (with `--quick`: a separate report
  next to the quick JSONs in the temporary directory, never over the committed one).
- `bench --report-only [--quick] [--out DIR]`: rebuilds the report from the JSONs
  already there, running nothing.
"""

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


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


# The families whose `<family>/_demo.py` provides `demo_rows(quick) -> list[dict]`,
# in the order the demo prints them.
FAMILIES = ("linear", "tuning", "bridge", "diffusion", "bilevel")


def _family_rows(family: str, quick: bool) -> list[dict[str, object]] | None:
    import importlib

    try:
        module = importlib.import_module(f"jaxsolve.{family}._demo")
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.startswith("jaxsolve"):
            return None  # the family is not in this version
        raise
    return module.demo_rows(quick)


def demo(quick: bool = False) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    print(
        "jaxsolve demo: every solver family on a built-in problem "
        f"(backend: {jax.default_backend()}, float64"
        f"{', quick sizes' if quick else ''})"
    )
    failed = 0
    for family in FAMILIES:
        t0 = time.perf_counter()
        rows = _family_rows(family, quick)
        if not rows:
            continue
        problems = sorted({str(r.get("problem", "")) for r in rows})
        print(f"\n{family}: {'; '.join(problems)}  ({time.perf_counter() - t0:.1f} s)")
        columns: list[str] = []
        for r in rows:
            columns += [c for c in r if c not in ("family", "problem", *columns)]
        print_table(rows, columns)
        failed += sum(r.get("result", "ok") != "ok" for r in rows)
    return 1 if failed else 0


# Optional packages each benchmark may need, and the extra that installs them.
_EXTRAS = {
    "scipy": "bench",
    "pyamg": "bench",
    "ot": "bench",
    "sklearn": "bench",
    "torch": "anchors",
    "diffusers": "anchors",
    "matplotlib": "plot",
}


def _bench_names() -> list[str]:
    if not os.path.isdir("bench"):
        return []
    return sorted(
        f[:-3]
        for f in os.listdir("bench")
        if f.endswith(".py") and not f.startswith("_")
    )


def _no_checkout() -> int:
    print(
        "No bench/ folder here: run `python -m jaxsolve bench` from a source "
        "checkout of jaxsolve (the benchmarks are not installed with the package).",
        file=sys.stderr,
    )
    return 2


def _pump(stream, sink, tail) -> None:
    for line in stream:
        sink.write(line)
        sink.flush()
        tail.append(line.rstrip("\n"))


def _why(code: int, out: Sequence[str], err: Sequence[str]) -> str:
    """One line saying why a benchmark process failed."""
    if code < 0:
        return f"killed by signal {-code}"
    # The exception a traceback ends with, else the script's own FAILED line.
    for line in reversed(err):
        head = line.split(":", 1)[0]
        if (
            ":" in line
            and not line[:1].isspace()
            and head.endswith(("Error", "Exception"))
        ):
            return line.strip()
    for line in reversed(out):
        if "FAILED" in line:
            return line.strip()
    for line in reversed(err):
        if line.strip():
            return line.strip()
    return f"exit status {code}"


def _run_script(name: str, quick: bool) -> tuple[int, str | None]:
    """Run `bench/NAME.py` in its own process; `(exit code, why it failed)`."""
    import collections
    import threading

    cmd = [sys.executable, os.path.join("bench", f"{name}.py")]
    cmd += ["--quick"] if quick else []
    # Both streams are forwarded line by line (progress meters stay live) and their
    # last lines kept, to say in one line why a script failed; a missing optional
    # package becomes a hint naming the extra instead of a traceback's last line.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Line by line through the pipe, as on a terminal.
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    out: collections.deque[str] = collections.deque(maxlen=200)
    err: collections.deque[str] = collections.deque(maxlen=200)
    pump = threading.Thread(target=_pump, args=(proc.stdout, sys.stdout, out))
    pump.start()
    _pump(proc.stderr, sys.stderr, err)
    pump.join()
    code = proc.wait()
    if code == 0:
        return 0, None
    missing = None
    for line in err:
        if "ModuleNotFoundError: No module named" in line:
            missing = line.split("No module named")[-1].strip().strip("'\"")
    if missing is not None:
        top = missing.split(".")[0]
        extra = _EXTRAS.get(top, "bench")
        return code, (
            f"benchmark {name!r} needs the optional package {top!r}: install the "
            f"{extra!r} extra, e.g. `pip install -e '.[{extra}]'`."
        )
    return code, _why(code, out, err)


def bench(name: str, quick: bool) -> int:
    names = _bench_names()
    if not names:
        return _no_checkout()
    if name not in names:
        print(f"No benchmark {name!r}. Available: {', '.join(names)}.", file=sys.stderr)
        return 2
    code, why = _run_script(name, quick)
    if code != 0 and why is not None and "optional package" in why:
        print(f"\n{why}", file=sys.stderr)
    return code


def _report_module():
    """`bench/_report.py` of the checkout in the current folder, else the one of the
    checkout jaxsolve itself is installed from (editable install)."""
    import importlib.util

    here = Path("bench", "_report.py")
    if not here.is_file():
        here = Path(__file__).resolve().parents[1] / "bench" / "_report.py"
    if not here.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_jaxsolve_bench_report", here)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_report_dir(quick: bool) -> Path:
    """Where the report goes: `bench/results/` for full runs; for `--quick`, a folder
    next to the quick JSONs (the temporary directory), so a CI run never overwrites
    the committed full-run report."""
    if quick:
        return Path(tempfile.gettempdir()) / "jaxsolve_bench_quick"
    return Path("bench", "results")


def _write_report(
    quick: bool, out: Path | None, runs: dict[str, dict[str, object]] | None
) -> int:
    report = _report_module()
    if report is None:
        print("bench/_report.py not found: no report written.", file=sys.stderr)
        return 1
    out_dir = out if out is not None else default_report_dir(quick)
    path = report.build_report(
        names=_bench_names(),
        quick=quick,
        out_dir=out_dir,
        results_dir=Path("bench", "results"),
        runs=runs,
    )
    print(f"\nreport: {path}")
    return 0


def bench_all(quick: bool, out: Path | None, report_only: bool) -> int:
    """Run every benchmark (unless `report_only`), then write the report."""
    names = _bench_names()
    if not names:
        return _no_checkout()
    runs: dict[str, dict[str, object]] | None = None
    if not report_only:
        runs = {}
        for name in names:
            print(
                f"\n===== bench/{name}.py{' --quick' if quick else ''} =====",
                flush=True,
            )
            t0 = time.perf_counter()
            start = time.time()
            code, why = _run_script(name, quick)
            seconds = time.perf_counter() - t0
            runs[name] = {"code": code, "seconds": seconds, "why": why, "start": start}
            status = "ok" if code == 0 else f"FAILED (exit {code}): {why}"
            print(f"===== {name}: {status}, {seconds:.0f} s =====", flush=True)
        print("\nsummary:")
        for name, r in runs.items():
            status = (
                "ok" if r["code"] == 0 else f"FAILED (exit {r['code']}): {r['why']}"
            )
            print(f"  {name:<22} {r['seconds']:7.1f} s  {status}")
        print(f"  {'total':<22} {sum(r['seconds'] for r in runs.values()):7.1f} s")
    code = _write_report(quick, out, runs)
    failed = [n for n, r in (runs or {}).items() if r["code"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return code


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
    names = _bench_names()
    p_bench = sub.add_parser(
        "bench",
        help="run bench/NAME.py, or every benchmark and the report",
        description="Run one benchmark script; it prints a table side by side with "
        "its anchors and writes bench/results/NAME.json. Without NAME, run every "
        "script in turn (a failure is reported, the others still run) and write "
        "bench/results/REPORT.md (with --quick: a report next to the quick JSONs in "
        "the temporary directory). Available here: "
        + (", ".join(names) if names else "none (run from a source checkout)")
        + ". Anchors need extras: 'bench' (SciPy, pyamg, POT, scikit-learn), "
        "'anchors' (PyTorch, diffusers); plots need 'plot' (matplotlib).",
    )
    p_bench.add_argument(
        "name",
        nargs="?",
        default=None,
        help="one of: "
        + (", ".join(names) or "none here")
        + " (default: all of them, then the report)",
    )
    p_bench.add_argument(
        "--quick", action="store_true", help="small sizes (what CI runs)"
    )
    p_bench.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild the report from the JSONs already there",
    )
    p_bench.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for REPORT.md and its PNGs (default: bench/results, or "
        f"{default_report_dir(True)} with --quick)",
    )
    args = parser.parse_args(argv)
    if args.command == "info":
        info()
        return 0
    if args.command == "demo":
        return demo(quick=args.quick)
    if args.name is None:
        return bench_all(args.quick, args.out, args.report_only)
    if args.report_only or args.out is not None:
        p_bench.error(
            "--report-only and --out go without NAME (they concern the report)"
        )
    return bench(args.name, args.quick)


if __name__ == "__main__":
    sys.exit(main())
