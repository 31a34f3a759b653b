"""DCDM networks shipped inside the package (made by `_make_pretrained.py`)."""

import functools
import pathlib

import jax

from .._core import load, load_header
from ._dcdm_network import DCDMNetwork


_DIR = pathlib.Path(__file__).resolve().parent / "pretrained"
_SUFFIX = ".jsv"


def _names() -> tuple[str, ...]:
    return tuple(sorted(p.name[: -len(_SUFFIX)] for p in _DIR.glob(f"*{_SUFFIX}")))


def pretrained_path(name: str) -> pathlib.Path:
    """The file of the shipped model `name`."""
    return _DIR / f"{name}{_SUFFIX}"


@functools.cache
def _load(name: str) -> DCDMNetwork:
    path = pretrained_path(name)
    header = load_header(path)
    hyper = header["hyperparameters"]["network"]
    # A skeleton with the saved hyper-parameters; its random values are overwritten.
    skeleton = DCDMNetwork(key=jax.random.key(0), **hyper)
    return load(path, like=skeleton)


def pretrained(name: str | None = None) -> tuple[str, ...] | DCDMNetwork:
    """The DCDM networks that ship with jaxsolve.

    `pretrained()` returns the tuple of available names; `pretrained(name)` loads one
    (offline, from the package's files) as a [`jaxsolve.linear.DCDMNetwork`][], for
    [`jaxsolve.linear.DeepConjugateDirection`][]. Each model was trained by
    `python -m jaxsolve.linear._make_pretrained` from a fixed key; its training
    settings, time and final loss are in `jaxsolve.load_header(path)`, with `path`
    from `jaxsolve.linear._pretrained.pretrained_path(name)`.

    - `"poisson2d"`: 2-D Dirichlet Poisson (5-point stencil), trained at one grid size
        and usable at any (fully convolutional, weight-shared coarse levels).
    - `"poisson3d"`: the same for 3-D (7-point stencil).

    !!! example

        ```python
        import jax.numpy as jnp, jaxsolve as js
        print(js.linear.pretrained())          # ('poisson2d', 'poisson3d')
        net = js.linear.pretrained("poisson2d")
        A = js.linear.poisson((128, 128))
        sol = js.linear.solve(A, jnp.ones((128, 128)), js.linear.DeepConjugateDirection(net))
        ```
    """
    names = _names()
    if name is None:
        return names
    if not isinstance(name, str) or name not in names:
        raise ValueError(
            f"js.linear.pretrained: no shipped model named {name!r}; available: "
            f"{names} (files in {str(_DIR)!r})."
        )
    return _load(name)
