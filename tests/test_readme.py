"""Every Python block of the README runs, as a new user would run it: in order, in one
fresh interpreter (no test configuration), and in seconds."""

import re
import subprocess
import sys
import time
from pathlib import Path


README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_blocks():
    assert len(_blocks()) >= 5


def test_readme_python_blocks_run(tmp_path):
    # Blocks build on each other (the README's narrative), so they run in sequence
    # in one process; a marker per block says which one failed.
    code = "\n".join(
        f"print('--- README block {i}', flush=True)\n{block}"
        for i, block in enumerate(_blocks())
    )
    script = tmp_path / "readme.py"
    script.write_text(code)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    elapsed = time.perf_counter() - t0
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    print(f"README blocks ran in {elapsed:.1f} s")
