r"""`jaxsolve.save` / `jaxsolve.load`: one file format for everything trained or fitted.

A jaxsolve model file is

```
b"JAXSOLVE\n"                      magic line (9 bytes)
<8-byte little-endian length n>    length of the JSON header
<n bytes of UTF-8 JSON header>     {"format_version", "jaxsolve_version", "class",
                                    "hyperparameters", "payload_bytes",
                                    "payload_sha256"}
<payload>                          equinox.tree_serialise_leaves of the object
```

The payload holds only the array leaves (equinox's format); the structure comes from
`like`, a skeleton of the same class built with the same hyper-parameters (read them
back with [`jaxsolve.load_header`][] when you do not have them). Every way a file can
be wrong — missing, not a jaxsolve file, truncated, corrupted, another class, a newer
format, leaves of another shape — raises a `ValueError` (or `FileNotFoundError`) that
names the file and says what is wrong.
"""

import hashlib
import io
import json
import os
import pathlib
import struct
from typing import Any, TypeVar

import equinox as eqx
import jax
import numpy as np


_MAGIC = b"JAXSOLVE\n"
FORMAT_VERSION = 1
_T = TypeVar("_T")


def _class_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _jsonable(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    def default(o):
        if isinstance(o, (np.ndarray, np.generic, jax.Array)):
            return np.asarray(o).tolist()
        raise TypeError(
            f"hyperparameters must be JSON-serialisable; {type(o).__name__} is not "
            "(use numbers, strings, lists, dicts)."
        )

    return json.loads(json.dumps(hyperparameters, default=default))


def save(
    path: str | os.PathLike,
    obj: Any,
    *,
    hyperparameters: dict[str, Any] | None = None,
) -> pathlib.Path:
    """Save a trained or fitted object (any pytree of arrays, e.g. an `eqx.Module`).

    **Arguments:**

    - `path`: the file to write (parent folders are created).
    - `obj`: the object; its array leaves are stored with
        `equinox.tree_serialise_leaves`.
    - `hyperparameters`: JSON-serialisable values needed to rebuild a skeleton of
        `obj` (e.g. `{"ndim": 2, "width": 16}`), returned by
        [`jaxsolve.load_header`][].

    **Returns:** the path written.

    !!! example

        ```python
        import jax, equinox as eqx, jaxsolve as js
        net = eqx.nn.MLP(2, 1, 8, 2, key=jax.random.key(0))
        js.save("/tmp/net.jsv", net, hyperparameters={"width": 8})
        net2 = js.load("/tmp/net.jsv", like=eqx.nn.MLP(2, 1, 8, 2, key=jax.random.key(1)))
        ```
    """
    from .. import __version__

    path = pathlib.Path(path)
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, obj)
    payload = buf.getvalue()
    header = {
        "format_version": FORMAT_VERSION,
        "jaxsolve_version": __version__,
        "class": _class_name(obj),
        "hyperparameters": _jsonable(hyperparameters or {}),
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    head = json.dumps(header, sort_keys=True).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_MAGIC)
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        f.write(payload)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written model file
    return path


def _read(path: str | os.PathLike) -> tuple[pathlib.Path, dict[str, Any], bytes]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"jaxsolve model file {str(path)!r} does not exist.")
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise ValueError(
            f"{str(path)!r} is not a jaxsolve model file (it does not start with the "
            "jaxsolve magic bytes); files are written by `jaxsolve.save`."
        )
    pos = len(_MAGIC)
    if len(data) < pos + 8:
        raise ValueError(f"{str(path)!r} is truncated: the header length is missing.")
    (n,) = struct.unpack("<Q", data[pos : pos + 8])
    pos += 8
    if len(data) < pos + n:
        raise ValueError(
            f"{str(path)!r} is truncated: the header is cut short ({len(data) - pos} "
            f"of {n} bytes)."
        )
    try:
        header = json.loads(data[pos : pos + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{str(path)!r} is corrupted: its header is not JSON ({e}).")
    if not isinstance(header, dict) or "format_version" not in header:
        raise ValueError(f"{str(path)!r} is corrupted: its header has no version.")
    if header["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} uses jaxsolve file format version "
            f"{header['format_version']} (written by jaxsolve "
            f"{header.get('jaxsolve_version')}); this jaxsolve reads up to version "
            f"{FORMAT_VERSION}. Upgrade jaxsolve."
        )
    payload = data[pos + n :]
    expected = header.get("payload_bytes")
    if len(payload) != expected:
        raise ValueError(
            f"{str(path)!r} is truncated or has trailing data: the payload has "
            f"{len(payload)} bytes, the header says {expected}."
        )
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise ValueError(
            f"{str(path)!r} is corrupted: the payload's checksum does not match the "
            "header's."
        )
    return path, header, payload


def load_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a jaxsolve model file (`class`, `hyperparameters`,
    `jaxsolve_version`, `format_version`, ...), after checking the file is whole."""
    return _read(path)[1]


def load(path: str | os.PathLike, like: _T) -> _T:
    """Load an object saved by [`jaxsolve.save`][].

    **Arguments:**

    - `path`: the file.
    - `like`: a skeleton of the same class and hyper-parameters (its array values are
        ignored; `jax.ShapeDtypeStruct` leaves work too, e.g. from `eqx.filter_eval_shape`).

    **Returns:** an object like `like` with the saved arrays.

    Raises `FileNotFoundError` for a missing file, `ValueError` naming the file for a
    file that is not a jaxsolve file, truncated, corrupted, of another class, of a newer
    format, or whose arrays do not match the shapes/dtypes of `like`.
    """
    path, header, payload = _read(path)
    expected = _class_name(like)
    if header.get("class") != expected:
        raise ValueError(
            f"{str(path)!r} holds a {header.get('class')}, but `like` is a {expected}."
        )
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(payload), like)
    except Exception as e:  # equinox raises RuntimeError/ValueError/struct errors
        raise ValueError(
            f"{str(path)!r} does not match `like` (built with other "
            f"hyper-parameters? the file's are {header.get('hyperparameters')}): {e}"
        ) from e


__all__ = ["FORMAT_VERSION", "load", "load_header", "save"]
