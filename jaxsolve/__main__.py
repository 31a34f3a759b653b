"""`python -m jaxsolve demo | info | bench`: the command-line entry point.

- `demo`: runs every solver family on a built-in problem and prints a results table.
- `info`: versions and devices.
- `bench NAME [--quick]`: runs `bench/NAME.py` from a source checkout
  (`python -m jaxsolve bench --help` lists the names).
"""

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence


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


def bench(name: str, quick: bool) -> int:
    names = _bench_names()
    if not names:
        print(
            "No bench/ folder here: run `python -m jaxsolve bench` from a source "
            "checkout of jaxsolve (the benchmarks are not installed with the package).",
            file=sys.stderr,
        )
        return 2
    if name not in names:
        print(f"No benchmark {name!r}. Available: {', '.join(names)}.", file=sys.stderr)
        return 2
    cmd = [sys.executable, os.path.join("bench", f"{name}.py")]
    cmd += ["--quick"] if quick else []
    # stderr is forwarded line by line (progress meters stay live) and scanned for
    # a missing optional package, which becomes a one-line hint instead of a
    # traceback's last line.
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    missing = None
    assert proc.stderr is not None
    for line in proc.stderr:
        sys.stderr.write(line)
        if "ModuleNotFoundError: No module named" in line:
            missing = line.split("No module named")[-1].strip().strip("'\"")
    code = proc.wait()
    if code != 0 and missing is not None:
        top = missing.split(".")[0]
        extra = _EXTRAS.get(top, "bench")
        print(
            f"\nbenchmark {name!r} needs the optional package {top!r}: install the "
            f"{extra!r} extra, e.g. `pip install -e '.[{extra}]'`.",
            file=sys.stderr,
        )
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
        help="run bench/NAME.py from a source checkout",
        description="Run one benchmark script; it prints a table side by side with "
        "its anchors and writes bench/results/NAME.json. Available here: "
        + (", ".join(names) if names else "none (run from a source checkout)")
        + ". Anchors need extras: 'bench' (SciPy, pyamg, POT, scikit-learn), "
        "'anchors' (PyTorch, diffusers).",
    )
    p_bench.add_argument("name", help="one of: " + (", ".join(names) or "none here"))
    p_bench.add_argument(
        "--quick", action="store_true", help="small sizes (what CI runs)"
    )
    args = parser.parse_args(argv)
    if args.command == "info":
        info()
        return 0
    if args.command == "demo":
        return demo(quick=args.quick)
    return bench(args.name, args.quick)


if __name__ == "__main__":
    sys.exit(main())
