"""The notebooks and the README agree with the project's one home address,
`[project.urls] Repository` in pyproject.toml: every notebook installs jaxsolve from it
(only when jaxsolve is not importable) and every Colab badge points at it. Also: the
notebooks are committed with their outputs cleared."""

import json
import pathlib
import re
import tomllib

import pytest


ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_BADGE = re.compile(
    r"https://colab\.research\.google\.com/github/"
    r"(?P<slug>[^/\s)]+/[^/\s)]+)/blob/(?P<branch>[^/\s)]+)/(?P<file>[^\s)\"']+)"
)


def _repository() -> str:
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    return urls["Repository"]


def _source(cell) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def _notebook(path):
    return json.loads(path.read_text())


def test_home_address_is_a_github_repository():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", _repository())
    assert len(NOTEBOOKS) >= 6


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_uses_the_home_address(path):
    repo = _repository()
    cells = _notebook(path)["cells"]
    code = [_source(c) for c in cells if c["cell_type"] == "code"]
    first = code[0]
    # Installs exactly `jaxsolve @ git+<Repository>` (the quoted arguments after
    # pip's "install", options aside) ...
    assert '"-m", "pip", "install"' in first
    after = first.split('"install"', 1)[1].split("]", 1)[0]
    targets = [t for t in re.findall(r'"([^"]*)"', after) if not t.startswith("-")]
    assert targets == [f"jaxsolve @ git+{repo}"], targets
    # ... only when jaxsolve is not importable.
    assert 'find_spec("jaxsolve") is None' in first
    # No other cell installs anything, and nothing installs `jaxsolve` from PyPI.
    for src in code[1:]:
        assert "pip install" not in src and '"install"' not in src, src[:200]
    for src in code:
        bare = r"""pip.{0,40}install[^\n]*?(?:\s|["'])jaxsolve(?:\[[^\]]*\])?(?=["'\s]|$)(?! @)"""
        assert not re.search(bare, src, flags=re.M), src[:300]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badges_point_at_the_home_address(path):
    slug = _repository().removeprefix("https://github.com/")
    text = "\n".join(_source(c) for c in _notebook(path)["cells"])
    badges = list(_BADGE.finditer(text))
    assert badges, f"{path.name} has no Open-in-Colab badge"
    for m in badges:
        assert m["slug"] == slug, m.group(0)
        assert m["branch"] == "main", m.group(0)
        # A notebook's badge opens that notebook.
        assert m["file"] == f"notebooks/{path.name}", m.group(0)
    # Any other link to a jaxsolve repository is to the home address too.
    for url in re.findall(r"github\.com/[\w.-]+/jaxsolve\b", text):
        assert url == f"github.com/{slug}", url


def test_readme_badges_point_at_the_home_address():
    slug = _repository().removeprefix("https://github.com/")
    text = (ROOT / "README.md").read_text()
    badges = list(_BADGE.finditer(text))
    assert badges, "the README has no Open-in-Colab badge"
    for m in badges:
        assert m["slug"] == slug, m.group(0)
        assert (ROOT / m["file"]).is_file(), f"badge to a missing {m['file']}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_cleared(path):
    for cell in _notebook(path)["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
