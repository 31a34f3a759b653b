"""The command-line entry point."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def _run(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "jaxsolve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_info():
    out = _run("info")
    assert out.returncode == 0, out.stderr
    assert "jax" in out.stdout and "devices" in out.stdout


def test_bench_missing_script_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "jaxsolve", "bench", "nope"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "source checkout" in out.stderr


def test_bench_lists_names_and_names_a_missing_extra(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "fake_one.py").write_text("import torch_is_not_here_xyz\n")
    (tmp_path / "bench" / "_helper.py").write_text("")

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "jaxsolve", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    out = run("bench", "--help")
    assert out.returncode == 0 and "fake_one" in out.stdout
    assert "_helper" not in out.stdout
    out = run("bench", "nope")
    assert out.returncode == 2 and "Available: fake_one" in out.stderr
    out = run("bench", "fake_one")
    assert out.returncode != 0
    assert "needs the optional package 'torch_is_not_here_xyz'" in out.stderr
    assert "pip install" in out.stderr


@pytest.mark.slow
def test_demo_quick_runs_every_method():
    out = _run("demo", "--quick")
    assert out.returncode == 0, out.stdout + out.stderr
    for method in ("SOR red-black", "SSOR-PCG", "CG (lineax)", "direct", "ChebCB"):
        assert method in out.stdout
    assert "FAILED" not in out.stdout


# --- `python -m jaxsolve bench` with no NAME: every benchmark, then the report ---

REPO = Path(__file__).resolve().parents[1]


def _load_report_module():
    spec = importlib.util.spec_from_file_location(
        "_bench_report_under_test", REPO / "bench" / "_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_all_keeps_going_after_a_failure_and_reports_it(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # A passing script writing its quick JSON where the real ones do ($TMPDIR).
    (bench / "a_pass.py").write_text(
        "import json, os, tempfile\n"
        "rows = [{'method': 'mine', 'iters': 12345}, {'method': 'anchor', "
        "'iters': 67890}]\n"
        "path = os.path.join(tempfile.gettempdir(), 'a_pass_quick.json')\n"
        "json.dump({'command': 'python bench/a_pass.py --quick', 'quick': True, "
        "'rows': rows, 'note': 'a note to show'}, open(path, 'w'))\n"
        "print('A RAN')\n"
    )
    (bench / "b_fail.py").write_text("raise RuntimeError('boom in b_fail')\n")
    # Runs after the failure; writes no JSON.
    (bench / "c_after.py").write_text("print('C RAN')\n")
    # An old quick JSON of the failing script: the report must not pass it off as
    # this run's.
    (tmp / "b_fail_quick.json").write_text('{"rows": [{"old": 1}]}')
    os.utime(tmp / "b_fail_quick.json", (0, 0))
    env = {**os.environ, "TMPDIR": str(tmp)}
    out = subprocess.run(
        [sys.executable, "-m", "jaxsolve", "bench", "--quick"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert out.returncode != 0
    assert "A RAN" in out.stdout and "C RAN" in out.stdout
    assert "b_fail" in out.stderr and "RuntimeError: boom in b_fail" in out.stdout
    report = tmp / "jaxsolve_bench_quick" / "REPORT.md"
    assert str(report) in out.stdout
    # A quick run never writes the committed report's place.
    assert not (bench / "results" / "REPORT.md").exists()
    text = report.read_text()
    assert "| method | iters |" in text
    assert "| mine | 12345 |" in text and "| anchor | 67890 |" in text
    assert "`python bench/a_pass.py --quick`" in text and "a note to show" in text
    assert "FAILED in this run" in text and "RuntimeError: boom in b_fail" in text
    assert "predates this run" in text
    assert "## c_after" in text and "Not run: no results file" in text
    for name in ("a_pass", "b_fail", "c_after"):
        assert text.count(f"## {name}\n") == 1


def test_bench_report_only_on_the_committed_results(tmp_path):
    committed = REPO / "bench" / "results" / "REPORT.md"
    before = committed.read_bytes() if committed.exists() else None
    out = subprocess.run(
        [sys.executable, "-m", "jaxsolve", "bench", "--report-only", "--out",
         str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    text = (tmp_path / "REPORT.md").read_text()
    jsons = sorted((REPO / "bench" / "results").glob("*.json"))
    assert jsons
    for path in jsons:
        assert text.count(f"## {path.stem}\n") == 1, path.stem
    # The tables carry the JSONs' numbers: the SOR iteration counts, the DCDM/CG
    # ratios, each in its own row.
    sor = json.loads((REPO / "bench" / "results" / "linear_sor.json").read_text())
    for row in sor["rows"]:
        assert f"| {row['method']} |" in text
        assert f"| {row['iters']} |" in text
    dcdm = json.loads((REPO / "bench" / "results" / "linear_dcdm.json").read_text())
    for r in dcdm["dcdm_vs_cg"]:
        assert f"| {r['its']} | {r['cg_its']} | {r['ratio']:.3f} |" in text
    # Every plot it links exists, and is small.
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        png = tmp_path / link
        assert png.is_file() and png.stat().st_size < 150_000, link
    # The committed report is untouched.
    after = committed.read_bytes() if committed.exists() else None
    assert after == before


def test_report_generic_table_missing_json_and_no_matplotlib(tmp_path, monkeypatch):
    report = _load_report_module()
    results = tmp_path / "results"
    results.mkdir()
    (results / "mystery.json").write_text(
        json.dumps(
            {
                "command": "python bench/mystery.py",
                "machine": {"cpu_model": "Z80", "usable_cpus": 1, "date_utc": "1999"},
                "speedup": 3.25,
                "sweep": {"cases": [{"devices": 1, "rate": 10.5, "ok": True},
                                    {"devices": 8, "rate": 70.25, "ok": False}]},
            }
        )
    )  # fmt: skip
    # No matplotlib: the report is still written, tables only, and says so.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path = report.build_report(["mystery", "absent"], False, tmp_path / "out", results)
    text = path.read_text()
    assert "Plots skipped" in text
    assert "## mystery\n" in text and "generic section" in text
    assert "`python bench/mystery.py`" in text and "Z80" in text and "1999" in text
    assert "`speedup`: 3.25" in text
    assert "**sweep.cases** (2 rows)" in text
    assert "| devices | rate | ok |" in text
    assert "| 1 | 10.5 | yes |" in text and "| 8 | 70.25 | no |" in text
    assert "## absent\n" in text and "Not run: no results file" in text
    assert not list((tmp_path / "out").glob("*.png"))
