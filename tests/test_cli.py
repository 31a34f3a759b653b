"""The command-line entry point."""

import subprocess
import sys

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
