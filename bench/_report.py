"""Build the benchmark report (`REPORT.md` + PNG plots) from the bench JSONs.

    python -m jaxsolve bench --report-only      # bench/results/REPORT.md
    python -m jaxsolve bench                    # run every bench, then the report

One section per benchmark: its tables side by side with their anchors, the command,
date and machine that produced the JSON (from the JSON's own metadata) and any
notes it carries. A benchmark without special code here (e.g. a new script) gets a
generic table built from the rows in its JSON; a benchmark whose JSON is missing
gets a line saying it was not run. Plots need matplotlib (the `plot` extra); without
it the report is written with tables only and says so.

Only the standard library is needed (no JAX): the CLI imports this file from the
source checkout.
"""

from __future__ import annotations

import ast
import datetime
import json
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


BENCH_DIR = Path(__file__).resolve().parent
# Sections in this order first, then any other benchmark alphabetically.
ORDER = (
    "linear_sor",
    "tuning_relax",
    "linear_dcdm",
    "bridge_lightsb",
    "diffusion_momentum",
    "bilevel",
)
TITLES = {
    "linear_sor": "SOR and SSOR-PCG vs lineax CG, SciPy and pyamg (2-D Poisson)",
    "tuning_relax": "Learning to relax: bandit-tuned omega vs best fixed and "
    "instance-optimal",
    "linear_dcdm": "DCDM (shipped networks) vs CG, SSOR-PCG and AMG",
    "bridge_lightsb": "Light Schrödinger Bridge: cBW2-UVP vs Gaussian / Sinkhorn, "
    "speed vs PyTorch",
    "diffusion_momentum": "Heavy-ball diffusion samplers: divergence vs NFE, parity "
    "with diffusers",
    "bilevel": "Bilevel: LV-HBA, penalty and implicit baselines vs known solutions "
    "and published figures",
}
PLOT_DPI = 100


# --------------------------------------------------------------------- helpers --


def json_path(name: str, quick: bool, results_dir: Path) -> Path:
    """Where `bench/NAME.py` writes its JSON (the scripts' own convention)."""
    if quick:
        return Path(tempfile.gettempdir()) / f"{name}_quick.json"
    return Path(results_dir) / f"{name}.json"


def fmt(value: Any, spec: str = ".3g") -> str:
    """A table cell: `-` for missing, numbers with `spec`, text as is."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and spec.endswith("g"):
        return str(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return format(value, spec)
    text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


Column = tuple[str, Any, str]  # (header, key or callable(row), format spec)


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> list[str]:
    """A markdown table; a column's key may be a callable of the row."""
    if not rows:
        return ["*(no rows)*"]
    out = [
        "| " + " | ".join(h for h, _, _ in columns) + " |",
        "|"
        + "|".join("---" if s.endswith("s") else "---:" for _, _, s in columns)
        + "|",
    ]
    for row in rows:
        cells = []
        for _, key, spec in columns:
            value = key(row) if callable(key) else row.get(key)
            cells.append(fmt(value, spec))
        out.append("| " + " | ".join(cells) + " |")
    return out


def script_constant(name: str, constant: str) -> Any:
    """A literal module-level constant of `bench/NAME.py` (the anchors the script
    prints beside its results: published figures, our replays), read without
    importing the script (which would import JAX)."""
    path = BENCH_DIR / f"{name}.py"
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == constant for t in node.targets
        ):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return None
    return None


def _get(mapping: dict | None, key: Any) -> Any:
    """`mapping[key]` trying the key as is and as a string (JSON keys are strings)."""
    if not mapping:
        return None
    for k in (key, str(key), int(key) if str(key).isdigit() else None):
        if k in mapping:
            return mapping[k]
    return None


def _git_date(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%cI", "--", path.name],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=path.resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance(name: str, d: dict[str, Any], path: Path) -> list[str]:
    """The command, date, machine and versions behind a JSON, from its metadata."""
    lines = []
    command = d.get("command")
    if command:
        lines.append(f"- Command: `{command}`")
    else:
        quick = d.get("quick", _get(d.get("config"), "quick"))
        guess = f"python bench/{name}.py" + (" --quick" if quick else "")
        kind = "a quick run" if quick else "a full run"
        lines.append(
            f"- Command: not recorded in the JSON ({kind}, `quick: "
            f"{str(bool(quick)).lower()}`: `{guess}` with its defaults, unless a note "
            "below says otherwise)"
        )
    for key in sorted(k for k in d if k.endswith("_command")):
        prefix = key[: -len("_command")]
        when = d.get(f"{prefix}_machine")
        when = when.get("date_utc") if isinstance(when, dict) else None
        lines.append(
            f"- Extra data (`{prefix}`): `{d[key]}`" + (f", {when}" if when else "")
        )
    machine = d.get("machine")
    info = machine if isinstance(machine, dict) else d.get("machine_info")
    date = None
    if isinstance(info, dict):
        date = info.get("date_utc")
    date = date or d.get("date_utc")
    if date:
        lines.append(f"- Date (UTC): {date}")
    else:
        committed = _git_date(path)
        lines.append(
            "- Date: not recorded in the JSON"
            + (f" (file last committed {committed})" if committed else "")
        )
    if isinstance(info, dict):
        parts = [
            str(info.get("cpu_model") or info.get("machine") or "?"),
            f"{info.get('usable_cpus', info.get('cpu_count', '?'))} usable CPUs",
        ]
        if info.get("memory_gib"):
            parts.append(f"{info['memory_gib']} GiB")
        if info.get("loadavg"):
            parts.append(
                "load average at start "
                + ", ".join(f"{x:.1f}" for x in info["loadavg"])
            )
        if info.get("XLA_FLAGS"):
            parts.append(f"XLA_FLAGS `{info['XLA_FLAGS']}`")
        lines.append("- Machine: " + "; ".join(parts))
    elif isinstance(machine, str):
        lines.append(f"- Machine: {machine}")
    versions = d.get("versions")
    if isinstance(versions, dict):
        lines.append(
            "- Versions: "
            + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None)
        )
    elif d.get("jax"):
        lines.append(f"- Versions: jax {d['jax']}")
    wall = next((d[k] for k in ("total_s", "wall_s", "total seconds") if k in d), None)
    if isinstance(wall, (int, float)):
        lines.append(f"- Run time: {wall:.0f} s")
    return lines


def notes(d: dict[str, Any]) -> list[str]:
    """Every `note` / `notes` / `*_note` field, verbatim."""
    out = []
    for key, value in d.items():
        if key in ("note", "notes") or key.endswith("_note"):
            for item in value if isinstance(value, list) else [value]:
                out.append(f"> **Note** ({key}): {item}")
                out.append(">")
    if out:
        out.pop()
    return out


class Plots:
    """matplotlib (Agg) if available; every figure saved small next to REPORT.md."""

    def __init__(self, out_dir: Path, enabled: bool = True):
        self.out_dir = Path(out_dir)
        self.plt = None
        self.error = None
        if enabled:
            try:
                import matplotlib

                matplotlib.use("Agg")
                import matplotlib.pyplot as plt

                self.plt = plt
            except ImportError as e:
                self.error = str(e)
        self.written: list[Path] = []

    def save(self, fig, filename: str, alt: str) -> list[str]:
        path = self.out_dir / filename
        fig.tight_layout()
        fig.savefig(path, dpi=PLOT_DPI)
        self.plt.close(fig)
        try:
            # Line plots need few colours: a 256-colour palette keeps them small.
            from PIL import Image

            with Image.open(path) as im:
                small = im.convert("RGB").quantize(colors=256)
            small.save(path, optimize=True)
        except ImportError:
            pass
        self.written.append(path)
        return ["", f"![{alt}]({filename})", ""]

    def figure(self, ncols: int = 1, nrows: int = 1, width: float = 5.0, height=3.6):
        fig, axes = self.plt.subplots(
            nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False
        )
        return fig, axes.ravel()


def _missing_plot(what: str, how: str) -> list[str]:
    return ["", f"*No plot of {what}: {how}*", ""]


# ------------------------------------------------------------------ linear_sor --


def section_linear_sor(d: dict, plots: Plots) -> list[str]:
    cfg = d.get("config", {})
    rows = d.get("rows", [])
    out = [
        f"Same system for every method: 5-point Dirichlet Laplacian, b ~ N(0, 1), "
        f"x0 = 0, float64, stop at ||b - Ax|| <= {cfg.get('tau', 1e-6):g} ||b||; "
        "`relres` is the true relative residual recomputed afterwards. Anchors: "
        "lineax CG, SciPy CG, pyamg SOR and AMG. Times are medians "
        f"({cfg.get('repeats', '?')} repeats, single-threaded: "
        f"{cfg.get('single_threaded')}).",
    ]
    cols = [
        ("method", "method", "s"),
        ("omega", "omega", ".4g"),
        ("iterations", "iters", "d"),
        ("solve ms", "solve_ms", ".4g"),
        ("us / iter", "per_iter_us", ".4g"),
        ("setup ms", "setup_ms", ".4g"),
        ("compile s", "compile_s", ".2g"),
        ("true relres", "relres", ".1e"),
        ("ok", "ok", "s"),
        ("note", "note", "s"),
    ]
    for n in cfg.get("sizes", sorted({r["n"] for r in rows})):
        out += ["", f"**{n} x {n} grid** (N = {n * n})", ""]
        out += md_table([r for r in rows if r.get("n") == n], cols)
    scan = d.get("ssor_pcg_omega_scan", {})
    if scan:
        omegas = sorted({s["omega"] for v in scan.values() for s in v})
        out += ["", "**SSOR-PCG iterations vs omega**", ""]
        table = []
        for n, v in scan.items():
            by = {s["omega"]: s["iters"] for s in v}
            table.append({"grid": f"{n}^2", **{str(w): by.get(w) for w in omegas}})
        out += md_table(
            table, [("grid", "grid", "s")] + [(f"{w:g}", str(w), "d") for w in omegas]
        )
    for n, c in d.get("ordering_check", {}).items():
        out.append(
            f"\nOrdering check, {n}^2, omega {c['omega']}: pyamg SOR on the red-black "
            f"permuted matrix takes {c['pyamg_red_black_sweeps']} sweeps, jaxsolve "
            f"red-black {c['jaxsolve_red_black_sweeps']} (natural order: "
            f"{c['pyamg_natural_sweeps']})."
        )
    sweeps = d.get("sweep_timing", [])
    if sweeps:
        out += [
            "",
            "**Time per red-black SOR sweep** (fixed sweeps, Young's omega, "
            "interleaved repeats; us per sweep)",
            "",
        ]
        table = [
            {
                "grid": f"{t['n']}^2",
                "sweeps": t["sweeps"],
                **t["per_sweep_us"],
                "r1": t["ratio_jaxsolve_solver_to"].get("pyamg_sor"),
                "r2": t["ratio_jaxsolve_solver_to"].get("pyamg_kernel"),
                "c1": t.get("cpu_ratio_jaxsolve_solver_to", {}).get("pyamg_sor"),
            }
            for t in sweeps
        ]
        out += md_table(
            table,
            [
                ("grid", "grid", "s"),
                ("sweeps", "sweeps", "d"),
                ("jaxsolve solver", "jaxsolve_solver", ".1f"),
                ("jaxsolve, no test", "jaxsolve_no_test", ".1f"),
                ("pyamg sor()", "pyamg_sor", ".1f"),
                ("pyamg kernel", "pyamg_kernel", ".1f"),
                ("pyamg sor() + norm", "pyamg_sor_plus_norm", ".1f"),
                ("jaxsolve / sor()", "r1", ".2f"),
                ("jaxsolve / kernel", "r2", ".2f"),
                ("CPU time ratio / sor()", "c1", ".2f"),
            ],
        )
    target = d.get("target")
    if target:
        out.append(
            f"\nTarget: {target['statement']}: ratio {target['ratio_vs_pyamg_sor']:.2f} "
            f"vs sor(), {target['ratio_vs_pyamg_kernel']:.2f} vs the bare kernel -> "
            f"**{'met' if target['met'] else 'NOT met'}**."
        )
    # Plot: iterations vs omega.
    if plots.plt and scan:
        fig, (ax,) = plots.figure(width=6.0)
        for k, (n, v) in enumerate(scan.items()):
            color = f"C{k}"
            ax.plot(
                [s["omega"] for s in v],
                [s["iters"] for s in v],
                "o-",
                color=color,
                label=f"SSOR-PCG {n}^2",
            )
            sor = [
                r
                for r in rows
                if str(r.get("n")) == str(n) and r["method"] == "jaxsolve SOR red-black"
            ]
            if sor:
                ax.plot(
                    [r["omega"] for r in sor],
                    [r["iters"] for r in sor],
                    "s--",
                    color=color,
                    alpha=0.6,
                    label=f"SOR red-black {n}^2",
                )
                ax.axvline(sor[0]["omega"], color=color, lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("omega (dotted: Young's optimal omega)")
        ax.set_ylabel(f"iterations to {cfg.get('tau', 1e-6):g}")
        ax.set_title("2-D Poisson: iterations vs omega", fontsize=10)
        ax.legend(fontsize=8)
        out += plots.save(fig, "linear_sor_omega.png", "iterations vs omega")
    return out


# ---------------------------------------------------------------- tuning_relax --

SYNTH_POLICIES = (
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
)
HEAT_POLICIES = (
    "CG",
    "omega = 1",
    "best fixed",
    "instance-optimal",
    "Tsallis-INF",
    "Tsallis-INF (RV)",
    "Tsallis-INF-CB",
    "ChebCB",
)


def _policy_rows(med, policies, scale, expected) -> list[dict]:
    rows = []
    for name in policies:
        if name not in med:
            continue
        label = name
        if name == "best fixed":
            label = f"best fixed (omega {med['best fixed omega']:.2f})"
        rows.append(
            {
                "policy": label,
                "ours": med[name] / scale,
                "expected": _get(expected, name),
                "vs best": med[name] / med["best fixed"],
                "vs opt": med[name] / med["instance-optimal"],
            }
        )
    return rows


def section_tuning_relax(d: dict, plots: Plots) -> list[str]:
    anchors = d.get("expected") or {
        "synthetic": script_constant("tuning_relax", "EXPECTED_SYNTH"),
        "heat": script_constant("tuning_relax", "EXPECTED_HEAT"),
    }
    out = [
        "Policies choose omega for each system of a sequence; costs are total "
        "iterations. Anchors: the best fixed omega in hindsight, the "
        "instance-optimal omega (an oracle per system) and `expected`, the figures "
        "of our replay of the authors' setup (Khodak et al., ICLR 2024; see "
        "docs/tuning.md)."
    ]
    for variance, res in d.get("synthetic", {}).items():
        med, T = res["median"], res["T"]
        exp = _get(anchors.get("synthetic"), variance) or {}
        out += [
            "",
            f"**Synthetic SOR, {variance} variance**: T = {T} systems, median of "
            f"{res['seeds']} seeds; iterations per system",
            "",
        ]
        out += md_table(
            _policy_rows(med, SYNTH_POLICIES, T, exp),
            [
                ("policy", "policy", "s"),
                ("ours", "ours", ".1f"),
                ("expected", "expected", ".1f"),
                ("/ best fixed", "vs best", ".3f"),
                ("/ instance-optimal", "vs opt", ".3f"),
            ],
        )
        curves = med.get("curves", {})
        if curves:
            ns = list(next(iter(curves.values())))
            out += [
                "",
                "Learning curve: cumulative cost / best fixed omega in hindsight on "
                "the first N systems",
                "",
            ]
            table = [{"policy": k, **v} for k, v in curves.items()]
            if exp.get("curve"):
                table.append(
                    {
                        "policy": "expected Tsallis-INF",
                        **{n: _get(exp["curve"], n) for n in ns},
                    }
                )
            out += md_table(
                table,
                [("policy", "policy", "s")] + [(f"N = {n}", n, ".2f") for n in ns],
            )
    for nx, res in d.get("heat", {}).items():
        exp = _get(anchors.get("heat"), int(nx)) if res.get("steps") == 5000 else {}
        out += [
            "",
            f"**Heat equation, nx = {nx}** (n = {(int(nx) - 1) ** 2}), "
            f"{res['steps']} Crank-Nicolson steps, SSOR-PCG to 1e-8; total "
            "iterations (learners: median of seeds)",
            "",
        ]
        out += md_table(
            _policy_rows(res, HEAT_POLICIES, 1, exp),
            [
                ("policy", "policy", "s"),
                ("ours", "ours", ".0f"),
                ("expected", "expected", ".0f"),
                ("/ best fixed", "vs best", ".3f"),
                ("/ instance-optimal", "vs opt", ".3f"),
            ],
        )
        wall = res.get("wall-clock")
        if wall:
            out += ["", "Wall-clock, live simulation (compilation excluded):", ""]
            out += _method_table(wall)
    live = d.get("heat50_live_after_cached_refits")
    if live:
        out += ["", "Heat nx = 50, live simulation after cached refits:", ""]
        out += _method_table(live)
    var = d.get("varcoef")
    if var:
        out += [
            "",
            f"**Variable-coefficient sequence**: nx = {var['nx']} "
            f"({var['unknowns']} unknowns), {var['steps']} systems, rtol "
            f"{var['rtol']:g}",
            "",
        ]
        out += _method_table(var["methods"])
    replay = d.get("replay equals live solve_sequence")
    if replay:
        same = all(replay.values())
        out.append(
            f"\nReplay on the cost table equals a live `solve_sequence` run: "
            f"{'yes' if same else 'NO'} ({', '.join(replay)})."
        )
    synth = d.get("synthetic", {})
    if plots.plt and (synth or d.get("heat")):
        panels = [
            (f"synthetic, {v} variance", r["median"], r["T"]) for v, r in synth.items()
        ]
        panels += [(f"heat, nx = {nx}", r, 1) for nx, r in d.get("heat", {}).items()]
        ncols = min(len(panels), 2)
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plots.figure(ncols, nrows, width=4.6, height=3.2)
        for ax, (title, med, scale) in zip(axes, panels):
            omegas = [float(w) for w in med["fixed"]]
            ax.plot(
                omegas,
                [v / scale for v in med["fixed"].values()],
                "k.-",
                label="fixed omega",
            )
            for k, (name, ls) in enumerate(
                (
                    ("instance-optimal", "--"),
                    ("ChebCB", "-"),
                    ("Tsallis-INF-CB", "-."),
                    ("Tsallis-INF", ":"),
                )
            ):
                if name in med:
                    ax.axhline(med[name] / scale, ls=ls, color=f"C{k}", label=name)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("omega")
            ax.set_ylabel("iterations per system" if scale != 1 else "total iterations")
        for ax in axes[len(panels) :]:
            ax.axis("off")
        axes[0].legend(fontsize=7)
        out += plots.save(fig, "tuning_relax_omega.png", "iterations vs omega")
    curves = {v: r["median"].get("curves") for v, r in synth.items()}
    curves = {v: c for v, c in curves.items() if c}
    if plots.plt and curves:
        fig, axes = plots.figure(len(curves), width=4.6, height=3.4)
        for ax, (variance, cur) in zip(axes, curves.items()):
            for k, (name, c) in enumerate(cur.items()):
                ax.plot(
                    [int(n) for n in c],
                    list(c.values()),
                    "o-",
                    color=f"C{k}",
                    label=name,
                )
            exp = (_get(anchors.get("synthetic"), variance) or {}).get("curve")
            if exp:
                ax.plot(
                    [int(n) for n in exp],
                    list(exp.values()),
                    "x--",
                    color="C0",
                    alpha=0.6,
                    label="expected Tsallis-INF",
                )
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("systems seen N")
            ax.set_ylabel("cost / best fixed in hindsight")
            ax.set_title(f"synthetic, {variance} variance", fontsize=9)
        axes[0].legend(fontsize=7)
        out += plots.save(fig, "tuning_relax_regret.png", "regret curves")
    return out


def _method_table(methods: dict[str, dict]) -> list[str]:
    rows = [{"method": k, **v} for k, v in methods.items()]
    return md_table(
        rows,
        [
            ("method", "method", "s"),
            ("seconds", "seconds", ".3g"),
            ("first call s", "first call seconds", ".3g"),
            ("iterations", "iterations", "d"),
            ("setups", "setups", "d"),
            ("all successful", "all successful", "s"),
        ],
    )


# ----------------------------------------------------------------- linear_dcdm --

DCDM_METHODS = (
    "DCDM (shipped net)",
    "CG (lineax)",
    "CG (scipy)",
    "SSOR-PCG (ours)",
    "AMG-SA + CG (pyamg)",
    "AMG-RS + CG (pyamg)",
)


def _pivot(rows, keys, methods, cell) -> list[dict]:
    table: dict[tuple, dict] = {}
    for r in rows:
        k = tuple(r.get(x) for x in keys)
        table.setdefault(k, dict(zip(keys, k)))[r["method"]] = cell(r)
    return list(table.values())


def section_linear_dcdm(d: dict, plots: Plots) -> list[str]:
    rows = d.get("rows", [])
    methods = [m for m in DCDM_METHODS if any(r["method"] == m for r in rows)]
    methods += sorted({r["method"] for r in rows} - set(methods))
    out = [
        "Every method from x0 = 0 to ||b - Ax|| <= rtol ||b||; `relres` recomputed "
        "afterwards. DCDM runs its network in float32 inside the solve. Anchors: "
        "CG (lineax, SciPy), our SSOR-PCG, pyamg AMG (setup timed apart)."
    ]
    ratios = d.get("dcdm_vs_cg", [])
    if ratios:
        met = sum(r["ratio"] <= 0.2 for r in ratios)
        out += [
            "",
            f"**DCDM iterations / CG iterations** (goal <= 0.2: met in {met} of "
            f"{len(ratios)} cases)",
            "",
        ]
        out += md_table(
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
    keys = ("problem", "rhs", "dtype", "rtol")
    key_cols = [
        ("problem", "problem", "s"),
        ("rhs", "rhs", "s"),
        ("dtype", "dtype", "s"),
        ("rtol", "rtol", ".0e"),
    ]

    def its(r):
        return str(r["its"]) + ("" if r.get("result", "ok") == "ok" else " (FAILED)")

    if rows:
        out += ["", "**Iterations** (side by side)", ""]
        out += md_table(
            _pivot(rows, keys, methods, its), key_cols + [(m, m, "s") for m in methods]
        )
        out += [
            "",
            "**Time, seconds** (median solve; AMG: setup + solve)",
            "",
        ]
        out += md_table(
            _pivot(
                rows, keys, methods, lambda r: r["solve_s"] + (r.get("setup_s") or 0)
            ),
            key_cols + [(m, m, ".3g") for m in methods],
        )
        ok = [r for r in rows if r.get("result", "ok") == "ok"]
        if ok:
            worst = max(ok, key=lambda r: r["relres"] / r["rtol"])
            out.append(
                "\nLargest true relres / rtol of a solve reported successful: "
                f"{worst['relres'] / worst['rtol']:.2f} ({worst['method']}, "
                f"{worst['problem']}, {worst['rhs']} rhs, {worst['dtype']}, rtol "
                f"{worst['rtol']:g}); {len(rows) - len(ok)} solves FAILED."
            )
    training = d.get("training", {})
    if training:
        out += ["", "**Training of the shipped networks** (one-off)", ""]
        out += md_table(
            [{"network": k, **v} for k, v in training.items()],
            [
                ("network", "network", "s"),
                ("operator", "operator", "s"),
                ("steps", "steps", "d"),
                ("batch", "batch_size", "d"),
                ("wall s", "wall_s", ".0f"),
                ("loss first", "loss_first", ".3g"),
                ("loss last (mean)", "loss_last_mean", ".3g"),
            ],
        )
    hist = d.get("histories")
    if plots.plt and hist:
        fig, axes = plots.figure(len(hist), width=4.8, height=3.6)
        for ax, (label, h) in zip(axes, hist.items()):
            for k, m in enumerate(DCDM_METHODS):
                if m in h:
                    ax.semilogy(
                        range(len(h[m])), h[m], ".-", color=f"C{k}", label=m, ms=3
                    )
            ax.axhline(h["rtol"], color="k", lw=0.8, ls=":")
            ax.set_xscale("symlog", linthresh=10)
            ax.set_xlim(left=0)
            ax.set_xlabel("iteration")
            ax.set_ylabel("||b - A x_k|| / ||b||")
            ax.set_title(f"{label}, {h['rhs']} rhs, {h['dtype']}", fontsize=9)
        axes[0].legend(fontsize=7)
        out += plots.save(fig, "linear_dcdm_residuals.png", "DCDM residual histories")
    elif plots.plt:
        quick = " --quick" if d.get("quick") else ""
        out += _missing_plot(
            "residual histories",
            "this JSON has no `histories` (quick runs skip them; add them with "
            f"`python bench/linear_dcdm.py{quick} --histories-only`, about 20 s).",
        )
    scaling = [
        r
        for r in rows
        if r.get("dim") == 2
        and str(r.get("problem", "")).startswith("Poisson")
        and r["dtype"] == "float64"
        and r["rhs"] == "random"
        and r["rtol"] == 1e-6
    ]
    if plots.plt and len({r["n"] for r in scaling}) > 1:
        fig, (ax,) = plots.figure(width=5.6)
        for k, m in enumerate(DCDM_METHODS):
            pts = sorted((r["n"] ** 2, r["its"]) for r in scaling if r["method"] == m)
            if pts:
                ax.loglog(*zip(*pts), "o-", color=f"C{k}", label=m)
        ax.set_xlabel("unknowns")
        ax.set_ylabel("iterations to 1e-6")
        ax.set_title("2-D Poisson, random rhs, float64", fontsize=9)
        ax.legend(fontsize=7)
        out += plots.save(
            fig, "linear_dcdm_iterations.png", "iterations vs problem size"
        )
    return out


# -------------------------------------------------------------- bridge_lightsb --


def section_bridge_lightsb(d: dict, plots: Plots) -> list[str]:
    s = d.get("settings", {})
    out = [
        f"K = {s.get('K')}, batch {s.get('batch')}, {s.get('fit_steps')} fit steps, "
        f"{s.get('optimizer')}, {s.get('dtype')}. Instances: {s.get('instances')}. "
        "cBW2-UVP in % (lower is better). Anchors: the Gaussian closed-form EOT plan "
        "and a discrete Sinkhorn plan on the same instances; the paper's figures "
        "(recalled, on the paper's own instances: orientation only); training speed "
        "vs the same step in PyTorch and the authors' code (figures from the issue)."
    ]
    quality = d.get("quality", [])
    if quality:
        out += ["", "**cBW2-UVP (%)**", ""]
        out += md_table(
            quality,
            [
                ("D", "D", "d"),
                ("eps", "eps", "g"),
                ("LightSB (ours)", "lightsb_uvp", ".3g"),
                ("Gaussian EOT", "gaussian_uvp", ".3g"),
                ("Sinkhorn", "sinkhorn_uvp", ".3g"),
                ("paper (recalled)*", "paper_uvp_recalled", ".2f"),
                ("true potential", "true_potential_uvp", ".1e"),
                ("LightSB fit s", "fit_s", ".2f"),
                ("Sinkhorn s", "sinkhorn_s", ".2f"),
            ],
        )
    speed = d.get("speed", [])
    if speed:
        out += [
            "",
            "**Training speed, fit steps/s** (medians, interleaved; eps = 1)",
            "",
        ]
        out += md_table(
            speed,
            [
                ("D", "D", "d"),
                ("jaxsolve", "jax_steps_per_s", ".0f"),
                ("PyTorch bcast", "torch_bcast_best_steps_per_s", ".0f"),
                ("PyTorch gemm", "torch_gemm_best_steps_per_s", ".0f"),
                ("authors' code*", "authors_steps_per_s_issue", ".0f"),
                ("x vs bcast", "ratio_vs_torch_bcast", ".1f"),
                ("x vs gemm", "ratio_vs_torch_gemm", ".1f"),
                ("x vs authors*", "ratio_vs_authors_issue", ".1f"),
                ("first call s", "jax_first_call_s", ".1f"),
            ],
        )
        if d.get("torch_available") is False:
            out.append("\nPyTorch was not installed: its columns are empty.")
    if plots.plt and quality:
        epss = sorted({r["eps"] for r in quality})
        fig, axes = plots.figure(len(epss), width=4.2, height=3.4)
        series = (
            ("LightSB", "lightsb_uvp"),
            ("Gaussian", "gaussian_uvp"),
            ("Sinkhorn", "sinkhorn_uvp"),
            ("paper*", "paper_uvp_recalled"),
        )
        for ax, eps in zip(axes, epss):
            rs = sorted((r for r in quality if r["eps"] == eps), key=lambda r: r["D"])
            width = 0.8 / len(series)
            for k, (label, key) in enumerate(series):
                xs = [i + (k - 1.5) * width for i in range(len(rs))]
                ys = [r.get(key) or float("nan") for r in rs]
                ax.bar(xs, ys, width, label=label, color=f"C{k}")
            ax.set_xticks(range(len(rs)), [str(r["D"]) for r in rs])
            ax.set_yscale("log")
            ax.set_xlabel("D")
            ax.set_title(f"eps = {eps:g}", fontsize=9)
        axes[0].set_ylabel("cBW2-UVP (%)")
        axes[0].legend(fontsize=7)
        out += plots.save(fig, "bridge_lightsb_uvp.png", "cBW2-UVP grid")
    if plots.plt and speed:
        fig, (ax,) = plots.figure(width=5.0)
        dims = [r["D"] for r in speed]
        for k, (label, key) in enumerate(
            (
                ("jaxsolve", "jax_steps_per_s"),
                ("PyTorch bcast", "torch_bcast_best_steps_per_s"),
                ("PyTorch gemm", "torch_gemm_best_steps_per_s"),
                ("authors' code*", "authors_steps_per_s_issue"),
            )
        ):
            ys = [r.get(key) for r in speed]
            if any(y is not None for y in ys):
                ax.plot(
                    dims,
                    [y or float("nan") for y in ys],
                    "o-",
                    color=f"C{k}",
                    label=label,
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("D")
        ax.set_ylabel("fit steps / s")
        ax.legend(fontsize=7)
        out += plots.save(fig, "bridge_lightsb_speed.png", "training speed")
    return out


# ---------------------------------------------------------- diffusion_momentum --


def _sampler_order(rows) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r["sampler"] not in seen:
            seen.append(r["sampler"])
    return seen


def _nfe_pivot(rows, value, note=None) -> tuple[list[dict], list[int]]:
    nfes = sorted({r["nfe"] for r in rows})
    table = []
    for s in _sampler_order(rows):
        row = {"sampler": s}
        for r in rows:
            if r["sampler"] == s:
                cell = value(r)
                if note is not None and note(r) is not None:
                    cell += f" ({note(r)})"
                row[r["nfe"]] = cell
        table.append(row)
    return table, nfes


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def section_diffusion_momentum(d: dict, plots: Plots) -> list[str]:
    out = [
        f"Endpoint error against the exact probability-flow ODE from the same x_T "
        f"({d.get('samples', '?')} samples); `diverged` = fraction of samples "
        "non-finite or beyond 2x the reference's range. Anchors (in parentheses): the "
        "figures of our replay of Wizadwongsa et al. (ICLR 2024), D = 64, w = 15."
    ]
    sets = []
    for label, block in d.get("mixture", {}).items():
        sets.append((f"Gaussian mixture {label}", block["rows"]))
    if d.get("digits"):
        sets.append(("digits denoiser (learned)", d["digits"]["rows"]))
    panels = []
    for title, rows in sets:
        ws = sorted({r["w"] for r in rows})
        w = 3.0 if "digits" in title and 3.0 in ws else max(ws)
        for grid in sorted({r["grid"] for r in rows}, key=lambda g: g != "uniform"):
            sel = [r for r in rows if r["w"] == w and r["grid"] == grid]
            if not sel:
                continue
            panels.append((f"{title}, {grid} grid, w = {w:g}", sel))
            table, nfes = _nfe_pivot(
                sel,
                lambda r: _pct(r["diverged"]),
                lambda r: _pct(r["exp_div"]) if "exp_div" in r else None,
            )
            out += [
                "",
                f"**Diverged % by NFE: {title}, {grid} time grid, w = {w:g}**",
                "",
            ]
            out += md_table(
                table, [("sampler", "sampler", "s")] + [(str(n), n, "s") for n in nfes]
            )
    for title, rows in sets[:]:
        sel = [r for r in rows if "exp_rmse" in r]
        if sel:
            table, nfes = _nfe_pivot(
                sel,
                lambda r: fmt(r["rmse"], ".3g"),
                lambda r: fmt(r["exp_rmse"], ".2g"),
            )
            out += [
                "",
                f"**Endpoint RMSE by NFE, {title}, uniform grid, w = 15** (replay's "
                "figure in parentheses)",
                "",
            ]
            out += md_table(
                table, [("sampler", "sampler", "s")] + [(str(n), n, "s") for n in nfes]
            )
    par = d.get("parity")
    if par:
        out += [
            "",
            f"**Parity with diffusers** (same model, timesteps and x_T, float64, D = "
            f"{par['dim']}, w = {par['w']}; goal <= 1e-5)",
            "",
        ]
        out += md_table(
            par["rows"],
            [
                ("scheduler", "scheduler", "s"),
                ("NFE", "nfe", "d"),
                ("rel. diff", "rel_diff", ".2e"),
            ],
        )
    if plots.plt and panels:
        ncols = min(len(panels), 2)
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plots.figure(ncols, nrows, width=4.2, height=2.6)
        names = _sampler_order(panels[0][1])
        colors = {s: f"C{k % 10}" for k, s in enumerate(names)}
        for ax, (title, sel) in zip(axes, panels):
            for s in _sampler_order(sel):
                pts = sorted(
                    (r["nfe"], 100 * r["diverged"]) for r in sel if r["sampler"] == s
                )
                ls = "--" if "HB" in s else "-"
                ax.plot(*zip(*pts), "o" + ls, ms=3, color=colors.get(s), label=s)
                exp = sorted(
                    (r["nfe"], 100 * r["exp_div"])
                    for r in sel
                    if r["sampler"] == s and "exp_div" in r
                )
                if exp:
                    ax.plot(*zip(*exp), "x", color=colors.get(s), ms=6)
            nfes = sorted({r["nfe"] for r in sel})
            if len(nfes) > 1:
                ax.set_xscale("log")
                ax.set_xticks(nfes, [str(n) for n in nfes])
                ax.minorticks_off()
            ax.set_title(title, fontsize=8)
            ax.set_xlabel("NFE")
            ax.set_ylabel("diverged %")
        for ax in axes[len(panels) :]:
            ax.axis("off")
        axes[0].legend(fontsize=6, ncol=2)
        out += plots.save(
            fig,
            "diffusion_momentum_divergence.png",
            "divergence vs NFE (x: the replay's figures)",
        )
    return out


# ----------------------------------------------------------------------- bilevel --


def section_bilevel(d: dict, plots: Plots) -> list[str]:
    published = d.get("published") or script_constant("bilevel", "PUBLISHED") or {}
    out = [
        "Anchors: the LLC toy's known solution (x* = -0.3, y1* = 0.7, y2* = -0.4) and "
        "our replay of the reference script; the LLSC hypergradient's closed form; "
        "the published SVM figures (BLOCC authors' notebook, diabetes)."
    ]
    llc = d.get("llc", [])
    if llc:
        out += ["", "**LLC toy (n = 100)**: relative errors", ""]
        out += md_table(
            llc,
            [
                ("method", "method", "s"),
                ("steps", "steps", "d"),
                ("rel. err. x", "rel_err_x", ".2e"),
                ("rel. err. y1", "rel_err_y1", ".2e"),
                ("rel. err. y2", "rel_err_y2", ".2e"),
                ("violation", "violation", ".1e"),
                ("time s", "time_s", ".3f"),
                ("replay's rel. err. x", "anchor_rel_err_x", "s"),
            ],
        )
    llsc = d.get("llsc")
    if llsc:
        out.append(
            f"\n**LLSC toy**: implicit (KKT) hypergradient vs the closed form: relative "
            f"error {llsc['hypergradient_rel_err']:.1e} "
            f"({llsc['hypergradient_time_s']:.2f} s); projected gradient norm at the "
            f"start {llsc['start_projected_grad_norm']:.3g}."
        )
        out += [""] + md_table(
            llsc.get("runs", []),
            [
                ("method", "method", "s"),
                ("steps", "steps", "d"),
                ("projected grad. norm", "projected_grad_norm", ".3g"),
                ("F", "F", ".4g"),
                ("y gap", "y_gap", ".3g"),
                ("violation", "violation", ".1e"),
                ("finite", "finite", "s"),
                ("time s", "time_s", ".3f"),
            ],
        )
    for name, res in d.get("svm", {}).items():
        rows = [{"method": m, **v} for m, v in res.items()]
        if name == "diabetes":
            for m, (acc, t) in published.items():
                rows.append(
                    {
                        "method": f"{m} (published)",
                        "test_acc_mean": acc,
                        "time_s_median": t,
                    }
                )
        out += [
            "",
            f"**Linear-SVM hyper-parameters, {name}** (mean over seeds; "
            "`retrained` = the SVM re-solved exactly at the learned weights)",
            "",
        ]
        out += md_table(
            rows,
            [
                ("method", "method", "s"),
                ("steps", "steps", "d"),
                ("init", "init", "s"),
                ("test acc.", "test_acc_mean", ".4f"),
                ("std", "test_acc_std", ".3f"),
                ("retrained", "retrained_test_acc_mean", ".4f"),
                ("val. acc.", "val_acc_mean", ".4f"),
                ("time s", "time_s_median", ".3g"),
                ("NaN runs", "nonfinite_runs", "d"),
                ("seeds", "seeds", "d"),
            ],
        )
    clean = d.get("cleaning")
    if clean:
        out += [
            "",
            "**Data hyper-cleaning, breast-cancer** (40 % of labels flipped)",
            "",
        ]
        out += md_table(
            [{"method": m, **v} for m, v in clean.items()],
            [
                ("method", "method", "s"),
                ("steps", "steps", "d"),
                ("test acc.", "test_acc_mean", ".4f"),
                ("std", "test_acc_std", ".3f"),
                ("flipped down-weighted", "flipped_downweighted", ".3f"),
                ("clean down-weighted", "clean_downweighted", ".3f"),
                ("time s", "time_s_median", ".3g"),
                ("NaN runs", "nonfinite_runs", "d"),
            ],
        )
    conv = d.get("llc_convergence")
    if plots.plt and conv:
        fig, axes = plots.figure(2, width=4.6, height=3.4)
        for k, (m, c) in enumerate(conv["methods"].items()):
            axes[0].loglog(
                conv["steps"], c["rel_err_x"], "o-", ms=3, color=f"C{k}", label=m
            )
            axes[1].loglog(
                conv["steps"], c["rel_err_y"], "o-", ms=3, color=f"C{k}", label=m
            )
        for ax, v in zip(axes, ("x", "y = (y1, y2)")):
            ax.set_xlabel("steps")
            ax.set_ylabel(f"relative error in {v}")
            ax.set_title(f"LLC toy: {v}", fontsize=9)
        axes[0].legend(fontsize=7)
        out += plots.save(fig, "bilevel_convergence.png", "bilevel convergence")
    elif plots.plt:
        quick = " --quick" if d.get("quick") else ""
        out += _missing_plot(
            "bilevel convergence",
            "this JSON has no `llc_convergence` (quick runs skip it; add it with "
            f"`python bench/bilevel.py{quick} --convergence-only`, about 1.5 min).",
        )
    return out


# ----------------------------------------------------------------------- generic --

_META_KEYS = {"machine", "machine_info", "versions", "command", "config", "settings"}


def _tables_in(obj: Any, path: str = "", depth: int = 0):
    """(path, rows) for every list of dicts in the JSON, depth first (3 levels)."""
    if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        yield path, obj
    elif isinstance(obj, dict) and depth < 3:
        for k, v in obj.items():
            if depth == 0 and (k in _META_KEYS or k.endswith(("_machine", "_command"))):
                continue
            yield from _tables_in(v, f"{path}.{k}" if path else k, depth + 1)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def section_generic(d: dict, plots: Plots, max_rows: int = 60) -> list[str]:
    """Any JSON: its top-level numbers and every list of row dicts as a table."""
    out = ["*(generic section: no special code for this benchmark yet)*"]
    top = {
        k: v
        for k, v in d.items()
        if _scalar(v)
        and k not in _META_KEYS
        and not k.endswith(("note", "notes"))
        and not k.endswith("_command")
    }
    if top:
        out.append("")
        out += [f"- `{k}`: {fmt(v, '.4g')}" for k, v in top.items()]
    found = False
    for path, rows in _tables_in(d):
        found = True
        columns: list[str] = []
        for r in rows:
            columns += [k for k, v in r.items() if _scalar(v) and k not in columns]
        columns = columns[:12]
        # Text columns align left, numbers right.
        specs = [
            "s"
            if all(isinstance(r.get(c), (str, bool, type(None))) for r in rows)
            else ".4g"
            for c in columns
        ]
        out += ["", f"**{path}** ({len(rows)} rows)", ""]
        out += md_table(rows[:max_rows], list(zip(columns, columns, specs)))
        if len(rows) > max_rows:
            out.append(f"\n*({len(rows) - max_rows} more rows in the JSON)*")
    if not found:
        out.append("\n*No table rows (lists of records) found in this JSON.*")
    return out


SECTIONS: dict[str, Callable[[dict, Plots], list[str]]] = {
    "linear_sor": section_linear_sor,
    "tuning_relax": section_tuning_relax,
    "linear_dcdm": section_linear_dcdm,
    "bridge_lightsb": section_bridge_lightsb,
    "diffusion_momentum": section_diffusion_momentum,
    "bilevel": section_bilevel,
}


# ------------------------------------------------------------------------ driver --


def build_report(
    names: Sequence[str],
    quick: bool,
    out_dir: Path,
    results_dir: Path = Path("bench", "results"),
    runs: dict[str, dict[str, Any]] | None = None,
    plots: bool = True,
) -> Path:
    """Write `out_dir/REPORT.md` (and its PNGs) from the JSONs of `names` (plus any
    other JSON in `results_dir` for a full report); `runs` (name -> `code`,
    `seconds`, `why`, `start`) adds a run summary. Returns the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_dir = Path(results_dir)
    names = list(names)
    if not quick and results_dir.is_dir():
        names += [p.stem for p in results_dir.glob("*.json") if p.stem not in names]
    names = [n for n in ORDER if n in names] + sorted(
        n for n in names if n not in ORDER
    )
    pl = Plots(out_dir, enabled=plots)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    kind = "quick runs (`--quick`, CI sizes)" if quick else "full runs"
    lines = [
        "# jaxsolve benchmark report",
        "",
        f"Built {now} from the JSONs of the {kind} by `bench/_report.py` "
        f"(`python -m jaxsolve bench{' --quick' if quick else ''} --report-only` "
        "rebuilds it; `python -m jaxsolve bench` runs every benchmark first). Each "
        "section gives the command, date and machine that produced its numbers. "
        "Timings come from a shared 2-core machine unless a section says otherwise: "
        "compare iteration counts and errors first.",
    ]
    if quick:
        lines += [
            "",
            "**Quick runs: small sizes and few repeats, for CI. The measured figures "
            "are in the committed full-run report, bench/results/REPORT.md.**",
        ]
    if pl.plt is None:
        why = pl.error or "disabled"
        lines += [
            "",
            f"*Plots skipped: matplotlib is not available ({why}); tables only.*",
        ]
    if runs:
        lines += ["", "## Run summary", ""]
        lines += md_table(
            [
                {
                    "bench": n,
                    "status": "ok" if r["code"] == 0 else f"FAILED (exit {r['code']})",
                    "seconds": r["seconds"],
                    "why": r.get("why") or "",
                }
                for n, r in runs.items()
            ],
            [
                ("benchmark", "bench", "s"),
                ("status", "status", "s"),
                ("seconds", "seconds", ".0f"),
                ("reason", "why", "s"),
            ],
        )
        total = sum(r["seconds"] for r in runs.values())
        lines.append(f"\nTotal: {total:.0f} s.")
    lines += ["", "## Contents", ""]
    lines += [f"- [{n}](#{n}): {TITLES.get(n, f'bench/{n}.py')}" for n in names]
    for name in names:
        lines += ["", f"## {name}", "", f"*{TITLES.get(name, f'bench/{name}.py')}*", ""]
        path = json_path(name, quick, results_dir)
        run = (runs or {}).get(name)
        if runs is not None and run is None:
            lines.append(
                "*Not part of this run (its script appeared after the run started, "
                "or there is no script): the JSON is shown as found.*"
            )
            lines.append("")
        if run is not None and run["code"] != 0:
            lines.append(
                f"**`bench/{name}.py` FAILED in this run** (exit {run['code']}): "
                f"{run.get('why')}"
            )
            lines.append("")
        if not path.is_file():
            lines.append(f"Not run: no results file `{_show(path)}`.")
            continue
        if run is not None and path.stat().st_mtime < run.get("start", 0):
            lines.append(
                f"*The JSON below predates this run (it was not rewritten): "
                f"`{_show(path)}`.*"
            )
            lines.append("")
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            lines.append(f"Could not read `{_show(path)}`: {e}")
            continue
        if not isinstance(d, dict):
            lines.append(f"`{_show(path)}` is not a JSON object: skipped.")
            continue
        lines += provenance(name, d, path)
        lines.append(f"- Results file: `{_show(path)}`")
        note_lines = notes(d)
        if note_lines:
            lines += [""] + note_lines
        lines.append("")
        section = SECTIONS.get(name, section_generic)
        try:
            lines += section(d, pl)
        except Exception as e:
            # A JSON whose layout changed (or a plot that failed): one section must
            # not cost the whole report; still report what the JSON holds.
            lines.append(
                f"*This JSON does not have the layout the `{name}` section expects "
                f"({type(e).__name__}: {e}); generic tables instead.*"
            )
            lines += section_generic(d, pl)
    report = out_dir / "REPORT.md"
    report.write_text("\n".join(lines).rstrip() + "\n")
    return report


def _show(path: Path) -> str:
    """A path relative to the current folder when it lies inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(Path(path).resolve()) if rel.startswith("..") else rel
