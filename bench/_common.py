"""Shared helpers for the scripts in `bench/`: thread settings, timing, versions,
machine info, a plain-text table and the JSON writer.

Import it from a bench script as `from _common import ...` (running
`python bench/<script>.py` puts `bench/` on `sys.path`). Call
`configure_threads` *before* importing jax: XLA reads its flags once.
"""

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any


def configure_threads(single: bool) -> None:
    """Pin XLA, OpenMP and BLAS to one thread when `single`.

    pyamg's and scipy's sparse kernels are single-threaded, so a like-for-like
    comparison runs XLA on one thread too; it also keeps timings stable on a
    machine shared with other jobs. Must run before `import jax`.
    """
    if not single:
        return
    if "jax" in sys.modules:
        raise RuntimeError("configure_threads must be called before importing jax.")
    flags = os.environ.get("XLA_FLAGS", "")
    extra = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = f"{flags} {extra}".strip()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def _stats(wall: Sequence[float], cpu: Sequence[float]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(wall),
        "min_s": min(wall),
        "all_s": list(wall),
        "cpu_median_s": statistics.median(cpu),
    }


def time_calls(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Run `fn()` `repeats` times; wall (`perf_counter`) and CPU (`process_time`)
    times of each call. `fn` must block until its result is ready (for JAX:
    `jax.block_until_ready`)."""
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return _stats(wall, cpu)


def time_first_and_steady(
    fn: Callable[[], Any], repeats: int
) -> tuple[Any, dict[str, Any]]:
    """Time a first (cold: tracing + compilation + run) call of `fn`, then `repeats`
    steady-state calls. Returns `(output of the first call, stats)`; stats has
    `first_s` and `compile_s = first_s - median_s` (clipped at 0)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    stats = time_calls(fn, repeats)
    stats["first_s"] = first
    stats["compile_s"] = max(first - stats["median_s"], 0.0)
    return out, stats


def time_interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int
) -> dict[str, dict[str, Any]]:
    """Time several callables round-robin (a, b, c, a, b, c, ...), so that a burst
    of load from other jobs hits them all alike; the ratios of the medians are then
    fairer than from back-to-back blocks."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: _stats(wall[k], cpu[k]) for k in fns}


def versions(packages: Sequence[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What the timings depend on: CPU, core counts, thread settings, load."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": _memory_gib(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple]) -> str:
    """`columns` is a sequence of `(header, key, format)`; a missing or `None`
    value prints as `-`."""
    cells = [[h for h, _, _ in columns]]
    for row in rows:
        line = []
        for _, key, fmt in columns:
            value = row.get(key)
            line.append("-" if value is None else format(value, fmt))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    # Text columns (format "s") align left, numbers right.
    left = [fmt.endswith("s") for _, _, fmt in columns]
    out = []
    for k, r in enumerate(cells):
        out.append(
            "  ".join(
                c.ljust(w) if (lft or k == 0) else c.rjust(w)
                for c, w, lft in zip(r, widths, left)
            ).rstrip()
        )
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _to_builtin(obj: Any) -> Any:
    """JSON fallback for NumPy/JAX scalars and arrays."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json(path: str, payload: dict[str, Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=_to_builtin)
        f.write("\n")


def command_line() -> str:
    """The command that is running, as a user would retype it from the repository
    root (`python bench/<script>.py --flags`), for the JSON's `command` field."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]))
    if script.startswith(".."):
        script = os.path.join("bench", os.path.basename(script))
    return " ".join(["python", script, *sys.argv[1:]])


def merge_json(path: str, updates: dict[str, Any]) -> None:
    """Add (or replace) the top-level keys in `updates` in the JSON at `path`,
    leaving every other key as it is: how a cheap extra run (e.g. data recorded for
    the report's plots) joins a committed full-run file without touching its
    measured numbers. Raises FileNotFoundError if `path` does not exist yet."""
    with open(path) as f:
        payload = json.load(f)
    payload.update(updates)
    write_json(path, payload)
