"""`js.sweep` at scale: 10,000 independent SOR solves sharded over 1, 2, 4, 8 simulated
CPU devices, against a Python loop of single jitted solves.

The instances: the 2-D Dirichlet Poisson operator on a GRID x GRID grid (default 8 x 8,
64 unknowns), float64, red-black SOR to `rtol = 1e-6` (true residual), for every pair of
100 relaxation factors omega in [1.3, 1.7] (Young's optimum for 8 x 8, 1.49, in the
middle) and N / 100 right-hand sides b ~ N(0, I): N instances `(omega_i, b_i)`.

    python bench/scale_sweep.py          # N = 10,000; grids 8x8 and 4x4; 1, 2, 4, 8
                                         # devices; loop subset 200; pods P = 8, 64
                                         # -> bench/results/scale_sweep.json
    python bench/scale_sweep.py --quick  # N = 1,000; 8x8; 1 and 8 devices; loop
                                         # subset 50; P = 8
                                         # -> $TMPDIR/scale_sweep_quick.json (< 90 s)

The speed-up over the loop is the per-solve overhead of a small jitted solve (dispatch
and, mostly, XLA's per-iteration cost of a while loop on CPU) against the per-lane
cost of the batched loop, times the lane efficiency (each device's batched loop runs
until its slowest lane has converged): it is larger on smaller grids, hence two grids.

Two configurations of `js.sweep` are timed: the default (one GSPMD-partitioned
program; a batched solver loop all-reduces its "any lane running" flag across devices
every step) and "tuned" (`independent=True`: each device runs its lanes as its own
program, no collectives; `chunk_size=500`: 500 lanes at a time, which keeps a chunk's
arrays in cache and lets each chunk's loop stop at its own slowest lane).

Every device count runs in its own subprocess (`XLA_FLAGS=
--xla_force_host_platform_device_count=D` is read when JAX starts). Timings: the first
call (trace + compile + run) and the median of steady-state calls of
`js.sweep(solve_one, omegas, bs)` (including the placement of the inputs on the
devices), `jax.block_until_ready`; compile time = first call - median. The loop
baseline times `jax.jit(solve_one)` on an evenly spread subset of the instances, one
call at a time, and extrapolates its mean time per instance to N (the table says so).
XLA runs with its default threading: the simulated devices share this machine's cores
(2 here), so more simulated devices cannot give more than about 2x.

The pod projection ("on paper"): the batch is split into P contiguous shards, as
`js.sweep` splits it; each shard is timed alone on one device, and a pod of P devices,
each as fast as that one device and running its shard independently (the sweep program
has no collectives: counted in the compiled HLO), finishes when its slowest shard
does. Interconnect (placing inputs, a multi-host gather of the results) is left out and
its size is reported.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    format_table,
    machine_info,
    time_calls,
    time_interleaved,
    versions,
    write_json,
)


HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_JSON = os.path.join(HERE, "results", "scale_sweep.json")
RTOL = 1e-6
N_OMEGA = 100
OMEGA_RANGE = (1.3, 1.7)


# ----------------------------------------------------------------------------------
# Workers (each in its own process: the device count is fixed when JAX starts)


def _problem(n: int, grid: int):
    import jax
    import jax.numpy as jnp

    import jaxsolve as js

    operator = js.linear.poisson((grid, grid), dtype=jnp.float64)
    n_omega = min(N_OMEGA, n)
    n_rhs = -(-n // n_omega)
    omegas = jnp.linspace(*OMEGA_RANGE, n_omega)
    bs = jax.random.normal(jax.random.key(0), (n_rhs, grid, grid), jnp.float64)
    # Instance i: omega i // n_rhs, right-hand side i % n_rhs (omega-major).
    w = jnp.repeat(omegas, n_rhs)[:n]
    b = jnp.tile(bs, (n_omega, 1, 1))[:n]

    def solve_one(omega, rhs):
        solver = js.linear.SOR(omega, rtol=RTOL, max_steps=5_000)
        sol = js.linear.solve(operator, rhs, solver, throw=False)
        return sol.value, sol.stats["num_steps"], sol.result == js.RESULTS.successful

    return operator, w, b, solve_one


def _first_call(fn) -> tuple:
    """(output, seconds) of a first call: trace + compile + run."""
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def _collectives(args, chunk: int | None, independent: bool) -> int | None:
    """Collective ops in the compiled sweep program (a diagnostic through a private
    cache; None if it cannot be read)."""
    try:
        from jaxsolve._core import _sweep

        for key, jitted in reversed(_sweep._cache.items()):
            # (sweep stores its balanced chunk size, not the requested one)
            if key[-1] == independent and (key[-2] is None) == (chunk is None):
                text = jitted.lower(None, list(args)).compile().as_text()
                break
        else:
            return None
    except Exception:  # noqa: BLE001 - a diagnostic only
        return None
    ops = r"(all-reduce|all-gather|collective-permute|all-to-all|reduce-scatter)"
    return len(re.findall(ops + r"(-start)?\(", text))


def worker_sweep(devices: int, n: int, grid: int, args) -> dict:
    """Time js.sweep (default, and tuned: `independent=True, chunk_size=chunk`) on
    `devices` devices; on one device
    also the bare jax.jit(jax.vmap), the loop of single solves over a subset, and the
    pod projection. The timed variants run round-robin (`time_interleaved`), so that a
    burst of load from other jobs on this shared machine hits them alike."""
    import hashlib

    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxsolve as js

    jax.config.update("jax_enable_x64", True)
    assert jax.device_count() == devices, jax.devices()
    operator, w, b, solve_one = _problem(n, grid)
    chunk = args.chunk

    fns = {
        "sweep": lambda: jax.block_until_ready(js.sweep(solve_one, w, b)),
        "tuned": lambda: jax.block_until_ready(
            js.sweep(solve_one, w, b, chunk_size=chunk, independent=True)
        ),
    }
    (x, steps, ok), first = _first_call(fns["sweep"])
    (xc, steps_c, _), first_c = _first_call(fns["tuned"])
    compile_s = {"sweep": first, "tuned": first_c}
    loop_info = None
    if devices == 1:
        bare_fn = jax.jit(jax.vmap(solve_one))
        fns["bare"] = lambda: jax.block_until_ready(bare_fn(w, b))
        _, compile_s["bare"] = _first_call(fns["bare"])
        single = jax.jit(solve_one)
        index = np.unique(np.linspace(0, n - 1, args.loop_subset).round().astype(int))
        inputs = [(w[i], b[i]) for i in index]  # sliced beforehand: not timed
        _, compile_s["loop"] = _first_call(lambda: single(*inputs[0]))

        def loop():
            return [jax.block_until_ready(single(wi, bi))[1] for wi, bi in inputs]

        loop_steps = [int(s) for s in loop()]
        fns["loop"] = loop
        # The loop as a notebook user writes it: the public API called eagerly
        # (solver construction and checks, jaxsolve's own compiled-solve dispatch).
        wf = [float(wi) for wi, _ in inputs]

        def eager_loop():
            return [
                jax.block_until_ready(solve_one(wi, bi)[1])
                for wi, (_, bi) in zip(wf, inputs)
            ]

        _, compile_s["eager_loop"] = _first_call(eager_loop)
        fns["eager_loop"] = eager_loop
        loop_info = {"subset": len(index), "index": index.tolist()}
    timing = time_interleaved(fns, args.repeats)
    for k, t in timing.items():
        t["compile_s"] = max(compile_s[k] - t["median_s"], 0.0)

    steps = np.asarray(steps)
    assert np.array_equal(steps, np.asarray(steps_c)), "tuned steps differ"
    residual = jax.vmap(lambda xi, bi: bi - operator.mv(xi))(x, b)
    relres = jnp.linalg.norm(residual.reshape(n, -1), axis=1) / jnp.linalg.norm(
        b.reshape(n, -1), axis=1
    )
    lanes = -(-n // devices)
    # js.sweep's balanced chunks: as few as chunk_size allows, of equal size.
    group = lanes if chunk >= lanes else -(-lanes // -(-lanes // chunk))
    lanes_tuned = group * -(-lanes // group)
    padded = steps[np.minimum(np.arange(devices * lanes_tuned), n - 1)]

    def lane_efficiency(group):
        # Useful lane-iterations / lane-iterations run: a batched loop runs until
        # the slowest lane of its group has converged. Default (GSPMD): one group,
        # the whole batch; tuned: each chunk of each device.
        run = sum(
            len(padded[k : k + group]) * int(padded[k : k + group].max())
            for k in range(0, len(padded), group)
        )
        return float(steps.sum() / run)

    row = {
        "devices": devices,
        "n": n,
        "lanes_per_device": lanes,
        "chunk_size": chunk,
        "timing": timing,
        "instances_per_s": n / timing["sweep"]["median_s"],
        "tuned_instances_per_s": n / timing["tuned"]["median_s"],
        "all_converged": bool(np.all(ok)),
        "max_relres": float(relres.max()),
        "max_abs_diff_tuned": float(jnp.max(jnp.abs(x - xc))),
        "steps_min": int(steps.min()),
        "steps_mean": float(steps.mean()),
        "steps_max": int(steps.max()),
        "steps_sha256": hashlib.sha256(steps.astype(np.int64).tobytes()).hexdigest(),
        "lane_efficiency": lane_efficiency(len(padded)),
        "lane_efficiency_tuned": lane_efficiency(group),
        "collectives_in_program": _collectives((w, b), None, False),
        "collectives_in_program_tuned": _collectives((w, b), chunk, True),
        "result_bytes": int(sum(a.nbytes for a in (x, steps, ok))),
    }
    if loop_info is not None:
        loop_info["steps"] = loop_steps
        loop_info["steps_match_sweep"] = loop_steps == steps[index].tolist()
        per = timing["loop"]["median_s"] / loop_info["subset"]
        loop_info["per_instance_s"] = per
        loop_info["extrapolated_s"] = per * n
        per_eager = timing["eager_loop"]["median_s"] / loop_info["subset"]
        loop_info["eager_per_instance_s"] = per_eager
        loop_info["eager_extrapolated_s"] = per_eager * n
        row["loop"] = loop_info
        row["pods"] = [
            _pod_projection(solve_one, w, b, p, args.repeats, chunk) for p in args.pods
        ]
    return row


def _pod_projection(solve_one, w, b, pod: int, repeats: int, chunk: int) -> dict:
    """Time each of `pod` contiguous shards alone on this device (tuned as in the
    sweep)."""
    import jax
    import jax.numpy as jnp

    import jaxsolve as js

    n = w.shape[0]
    lanes = -(-n // pod)
    times = []
    for k in range(0, n, lanes):
        shard = (w[k : k + lanes], b[k : k + lanes])
        if shard[0].shape[0] < lanes:  # the last shard, padded as sweep pads it
            pad = lanes - shard[0].shape[0]
            shard = tuple(
                jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) for a in shard
            )
        fn = lambda: jax.block_until_ready(  # noqa: E731
            js.sweep(solve_one, *shard, chunk_size=chunk, independent=True)
        )
        fn()
        times.append(time_calls(fn, repeats)["median_s"])
    slowest = max(times)
    return {
        "pod_devices": pod,
        "lanes_per_device": lanes,
        "shard_median_s": times,
        "projected_s": slowest,
        "projected_instances_per_s": n / slowest,
        "projected_per_device_instances_per_s": n / pod / slowest,
        "shard_imbalance": slowest / (sum(times) / len(times)),
    }


def run_worker(devices: int, grid: int, args) -> dict:
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = (
        f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    )
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker"]
    cmd += ["--devices", str(devices), "--n", str(args.n), "--grids", str(grid)]
    cmd += ["--repeats", str(args.repeats), "--loop-subset", str(args.loop_subset)]
    cmd += ["--pods", ",".join(map(str, args.pods)), "--chunk", str(args.chunk)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"worker ({devices} devices) failed:\n{out.stderr}")
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


# ----------------------------------------------------------------------------------

COLUMNS = [
    ("method", "method", "s"),
    ("devices", "devices", "d"),
    ("time s", "median_s", ".3f"),
    ("compile s", "compile_s", ".1f"),
    ("instances/s", "rate", ",.0f"),
    ("vs loop", "speedup", ".1f"),
    ("vs eager loop", "speedup_eager", ".1f"),
    ("vs 1 dev", "vs1", ".2f"),
    ("scaling eff", "efficiency", ".2f"),
    ("lane eff", "lane_eff", ".2f"),
]
POD_COLUMNS = [
    ("P devices", "pod_devices", "d"),
    ("lanes/device", "lanes_per_device", "d"),
    ("slowest shard s", "projected_s", ".4f"),
    ("imbalance", "shard_imbalance", ".2f"),
    ("pod instances/s", "projected_instances_per_s", ",.0f"),
    ("per device inst/s", "projected_per_device_instances_per_s", ",.0f"),
]


def run_grid(grid: int, device_counts: list[int], args) -> dict:
    print(
        f"\n== N = {args.n} SOR solves ({grid}x{grid} Poisson, float64, rtol {RTOL}), "
        f"{N_OMEGA} omegas in {OMEGA_RANGE} x right-hand sides",
        flush=True,
    )
    rows = []
    for d in device_counts:
        row = run_worker(d, grid, args)
        rows.append(row)
        t = row["timing"]
        print(
            f"  {d} device(s): sweep {t['sweep']['median_s']:.3f} s, tuned "
            f"{t['tuned']['median_s']:.3f} s (medians)",
            flush=True,
        )

    # Checks: the iteration counts are the same on every device count, tuned or
    # not, and equal the single solves'; every instance converged.
    base = rows[0]
    assert all(r["steps_sha256"] == base["steps_sha256"] for r in rows), "steps differ"
    assert all(r["all_converged"] and r["max_relres"] <= RTOL * 1.001 for r in rows)
    loop = base["loop"]
    assert loop["steps_match_sweep"], "loop and sweep iteration counts differ"

    loop_s = loop["extrapolated_s"]
    eager_s = loop["eager_extrapolated_s"]
    table = [
        {
            "method": f"loop, eager js.linear.solve ({loop['subset']} timed, extrapolated)",
            "devices": 1,
            "median_s": eager_s,
            "rate": args.n / eager_s,
            "speedup": loop_s / eager_s,
            "speedup_eager": 1.0,
        },
        {
            "method": f"loop, jit per solve ({loop['subset']} timed, extrapolated)",
            "devices": 1,
            "median_s": loop_s,
            "compile_s": base["timing"]["loop"]["compile_s"],
            "rate": args.n / loop_s,
            "speedup": 1.0,
            "speedup_eager": eager_s / loop_s,
        }
    ]
    for key, label, eff in (
        ("sweep", "js.sweep", "lane_efficiency"),
        (
            "tuned",
            f"js.sweep, independent, chunk_size={args.chunk}",
            "lane_efficiency_tuned",
        ),
    ):
        one = args.n / base["timing"][key]["median_s"]
        for r in rows:
            t = r["timing"][key]
            rate = args.n / t["median_s"]
            table.append(
                {
                    "method": label,
                    "devices": r["devices"],
                    "median_s": t["median_s"],
                    "compile_s": t["compile_s"],
                    "rate": rate,
                    "speedup": loop_s / t["median_s"],
                    "speedup_eager": eager_s / t["median_s"],
                    "vs1": rate / one,
                    "efficiency": rate / one / r["devices"],
                    "lane_eff": r[eff],
                }
            )
    bare = base["timing"]["bare"]
    table.append(
        {
            "method": "jax.jit(jax.vmap), no sweep (reference)",
            "devices": 1,
            "median_s": bare["median_s"],
            "compile_s": bare["compile_s"],
            "rate": args.n / bare["median_s"],
            "speedup": loop_s / bare["median_s"],
            "speedup_eager": eager_s / bare["median_s"],
            "lane_eff": base["lane_efficiency"],
        }
    )
    print()
    print(format_table(table, COLUMNS))
    print(
        f"\nloop: {1e6 * loop['per_instance_s']:.0f} us per single solve (median of "
        f"{args.repeats} timed passes over the subset, interleaved with the sweeps); "
        f"iterations per instance: min {base['steps_min']}, mean "
        f"{base['steps_mean']:.1f}, max {base['steps_max']} (identical on every device "
        f"count, tuned or not, and in the loop); max true relative residual "
        f"{base['max_relres']:.2e}; collectives in the sweep program (default / "
        f"tuned): {[r['collectives_in_program'] for r in rows]} / "
        f"{[r['collectives_in_program_tuned'] for r in rows]}"
    )
    print(
        "\nPod on paper: each of P devices runs one contiguous shard (tuned: "
        f"independent, chunk_size={args.chunk}; timed alone on one device here); the "
        "pod finishes with its slowest shard."
    )
    print(format_table(base["pods"], POD_COLUMNS))
    print(
        f"result size {base['result_bytes'] / 1e6:.2f} MB (what a multi-host gather "
        "moves to every process)"
    )
    return {
        "problem": {
            "operator": f"poisson(({grid}, {grid})), float64",
            "solver": f"SOR red-black, rtol {RTOL}, max_steps 5000, throw=False",
            "omegas": f"{N_OMEGA} in {OMEGA_RANGE}",
            "n": args.n,
        },
        "sweeps": rows,
        "table": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--grids", type=str, default=None, help="e.g. 8,4")
    parser.add_argument("--devices", type=str, default=None, help="e.g. 1,2,4,8")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--loop-subset", type=int, default=None)
    parser.add_argument("--pods", type=str, default=None, help="e.g. 8,64")
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    q = args.quick
    args.n = args.n or (1_000 if q else 10_000)
    args.repeats = args.repeats or (3 if q else 5)
    args.loop_subset = args.loop_subset or (50 if q else 200)
    args.pods = [int(p) for p in (args.pods or ("8" if q else "8,64")).split(",")]
    grids = [int(g) for g in (args.grids or ("8" if q else "8,4")).split(",")]

    if args.worker:
        row = worker_sweep(int(args.devices), args.n, grids[0], args)
        print("RESULT " + json.dumps(row), flush=True)
        return

    device_counts = [
        int(d) for d in (args.devices or ("1,8" if q else "1,2,4,8")).split(",")
    ]
    t_start = time.perf_counter()
    results = {str(g): run_grid(g, device_counts, args) for g in grids}
    print(f"\ntotal bench time {time.perf_counter() - t_start:.0f} s")
    payload = {
        "benchmark": "scale_sweep",
        "quick": q,
        "chunk_size": args.chunk,
        "grids": results,
        "versions": versions(["jax", "jaxlib", "equinox", "lineax", "numpy"]),
        "machine": machine_info(),
        "notes": (
            "Simulated devices (XLA_FLAGS=--xla_force_host_platform_device_count) "
            "share the machine's cores; the loop baseline is extrapolated from a "
            "timed subset, interleaved with the sweeps on one device; pod figures "
            "assume devices as fast as one simulated device here running independent "
            "shards, interconnect not counted."
        ),
    }
    path = args.json or (
        os.path.join(tempfile.gettempdir(), "scale_sweep_quick.json")
        if q
        else RESULTS_JSON
    )
    write_json(path, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
