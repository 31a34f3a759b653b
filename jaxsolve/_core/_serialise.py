r"""`jaxsolve.save` / `jaxsolve.load`: one file format for everything trained or fitted.

A jaxsolve model file (`.jsv`) is

```
b"JAXSOLVE\n"                      magic line (9 bytes)
<8-byte little-endian length n>    length of the JSON header
<n bytes of UTF-8 JSON header>     {"format_version", "jaxsolve_version", "class",
                                    "hyperparameters", "leaves", "payload_bytes",
                                    "payload_sha256", "header_sha256"}
<payload>                          one `.npy` record per stored leaf, in tree order
```

The payload holds the leaves only; the tree's structure comes from `like`, a
skeleton of the same class built with the same hyper-parameters (read them back
with [`jaxsolve.load_header`][] when you do not have them). The header's `leaves`
lists every leaf (its path in the tree, kind, shape and dtype), so a `like` of
another structure or shape is refused with a message naming the first leaf that
differs, before anything is read.

**What can be stored** (format version 2):

- JAX and NumPy arrays (restored as the same kind, dtype and weak type);
- typed PRNG key arrays (`jax.random.key`): stored as `jax.random.key_data` with
  the implementation's name, restored with `jax.random.wrap_key_data`; the key in
  `like` must use the same implementation;
- `equinox.Enumeration` members such as [`jaxsolve.RESULTS`][] (scalar or
  batched): stored by member *name*, so a file stays readable when members are
  added or reordered; `like` must hold a member of the same enumeration;
- Python `bool`, `int`, `float`, `complex` and `str` leaves (exactly: a Python
  float keeps all 64 bits whatever `jax_enable_x64` says);
- `None` (an empty subtree: it must be `None` in `like` too).

Other leaves (functions, arbitrary objects) are not stored: the loaded object
keeps `like`'s. Static fields of an `eqx.Module` are never stored; they come from
`like`.

**What `like` must be**, family by family (the file's `hyperparameters` say
which skeleton to build; [`jaxsolve.save`][] records an object's own
`hyperparameters` when it has them):

| saved object | `like` |
|---|---|
| `js.linear.DCDMNetwork` | `js.linear.DCDMNetwork(**hp, key=jax.random.key(0))` |
| `js.bridge.LightSB` | `js.bridge.LightSB.from_hyperparameters(hp)` |
| `js.diffusion.DigitsDenoiser` | `js.diffusion.DigitsDenoiser(**hp, key=jax.random.key(0))` (or `js.diffusion.pretrained_digits(path)`) |
| a policy state (`TsallisINF`, `TsallisINFCB`, `ChebCB`) | `policy.init(jax.random.key(0))` for the same policy (same grid size, bins, degree) |
| `js.tuning.SequenceSolution`, `js.Solution` | `eqx.filter_eval_shape` of the call that produced it (same shapes, `throw=False` or not), or any result of that call |

with `hp = js.load_header(path)["hyperparameters"]`.

Every way a file can be wrong — missing, not a jaxsolve file, truncated,
corrupted, another class, another format version, leaves of another structure,
kind, shape or dtype — raises a `ValueError` (or `FileNotFoundError`) that names
the file and says what is wrong. Files of format version 1 (plain array leaves,
no `leaves` list; the weights shipped with jaxsolve 0.1) still load.
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
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np


_MAGIC = b"JAXSOLVE\n"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_T = TypeVar("_T")


class _Unreadable(ValueError):
    """A problem with the file; `load` prefixes the file's name."""


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

    if not isinstance(hyperparameters, dict):
        raise TypeError(
            "hyperparameters must be a dict of JSON-serialisable values, got "
            f"{type(hyperparameters).__name__}."
        )
    return json.loads(json.dumps(hyperparameters, default=default))


# ----------------------------------------------------------------- leaf kinds --


class _Probe(eqx.Enumeration):
    member = ""


# The class of enumeration members (equinox does not export it by name).
_EnumerationItem = type(_Probe.member)


def _is_enum(x: Any) -> bool:
    return isinstance(x, _EnumerationItem)


def _is_key_dtype(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _enum_names(cls: Any) -> list[str]:
    """Member names of an `eqx.Enumeration` in the order of their integer codes."""
    items = cls._name_to_item.items()
    return [n for n, _ in sorted(items, key=lambda kv: int(kv[1]._value))]


def _key_impl(dtype: Any) -> str:
    """The name of a key dtype's PRNG implementation (e.g. `threefry2x32`).
    `jax.random.key_impl` takes key arrays only, so ask it about a traced one (no
    computation runs; this also covers `jax.ShapeDtypeStruct` leaves)."""
    names: list[str] = []
    jax.eval_shape(lambda: names.append(str(jax.random.key_impl(jnp.empty((), dtype)))))
    return names[0]


_PY_SCALARS = (bool, int, float, complex)


def _describe(leaf: Any) -> dict[str, Any]:
    """What the header records about a leaf (and what `like` must agree with)."""
    if _is_enum(leaf):
        cls = leaf._enumeration
        return {
            "kind": "enum",
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "shape": list(np.shape(leaf._value)),
        }
    if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
        if _is_key_dtype(leaf.dtype):
            return {
                "kind": "key",
                "impl": _key_impl(leaf.dtype),
                "shape": list(leaf.shape),
            }
        return {
            "kind": "array",
            "shape": list(leaf.shape),
            "dtype": str(leaf.dtype),
            "weak_type": bool(getattr(leaf, "weak_type", False)),
        }
    if isinstance(leaf, (np.ndarray, np.generic)):
        kind = "numpy" if isinstance(leaf, np.ndarray) else "numpy_scalar"
        return {"kind": kind, "shape": list(np.shape(leaf)), "dtype": str(leaf.dtype)}
    if isinstance(leaf, _PY_SCALARS):
        return {"kind": "python", "type": type(leaf).__name__}
    if isinstance(leaf, str):
        return {"kind": "str"}
    return {"kind": "object", "type": type(leaf).__qualname__}


def _write_leaf(f: io.BytesIO, leaf: Any, desc: dict[str, Any]) -> dict[str, Any]:
    kind = desc["kind"]
    if kind == "enum":
        np.save(f, np.asarray(leaf._value, np.int32), allow_pickle=False)
        desc = dict(desc, members=_enum_names(leaf._enumeration))
    elif kind == "key":
        jnp.save(f, jax.random.key_data(leaf))
    elif kind == "array":
        jnp.save(f, leaf)  # `jnp` handles bfloat16
    elif kind in ("numpy", "numpy_scalar"):
        np.save(f, np.asarray(leaf), allow_pickle=False)
    elif kind == "python":
        # NumPy, not `jnp`: a Python float keeps float64 whatever jax_enable_x64 is.
        np.save(f, np.asarray(leaf), allow_pickle=False)
    elif kind == "str":
        desc = dict(desc, value=leaf)
    return desc


def _flatten(tree: Any) -> tuple[list[str], list[Any]]:
    paths_leaves, _ = jtu.tree_flatten_with_path(tree, is_leaf=_is_enum)
    return [jtu.keystr(p) for p, _ in paths_leaves], [x for _, x in paths_leaves]


# ----------------------------------------------------------------------- save --


def save(
    path: str | os.PathLike,
    obj: Any,
    *,
    hyperparameters: dict[str, Any] | None = None,
) -> pathlib.Path:
    """Save a trained or fitted object: a network, a fitted model, a policy state, a
    [`jaxsolve.Solution`][]; any pytree of arrays, keys, result codes and Python
    scalars (see the module notes for what is stored).

    **Arguments:**

    - `path`: the file to write (parent folders are created; the write is atomic).
    - `obj`: the object.
    - `hyperparameters`: JSON-serialisable values needed to rebuild a skeleton of
        `obj` (e.g. `{"ndim": 2, "width": 16}`), returned by
        [`jaxsolve.load_header`][]. Default: `obj.hyperparameters` (a property or a
        method, as `DCDMNetwork`, `LightSB` and `DigitsDenoiser` have), else `{}`.

    **Returns:** the path written.

    !!! example

        ```python
        import jax, jaxsolve as js
        net = js.linear.DCDMNetwork(2, key=jax.random.key(0), width=8)
        js.save("/tmp/net.jsv", net)          # records net.hyperparameters()
        hp = js.load_header("/tmp/net.jsv")["hyperparameters"]
        net2 = js.load("/tmp/net.jsv", like=js.linear.DCDMNetwork(**hp, key=jax.random.key(1)))
        ```
    """
    from .. import __version__

    path = pathlib.Path(path)
    if hyperparameters is None:
        hp = getattr(obj, "hyperparameters", None)
        hyperparameters = (hp() if callable(hp) else hp) or {}
    hyperparameters = _jsonable(hyperparameters)
    paths, leaves = _flatten(obj)
    for p, leaf in zip(paths, leaves):
        value = leaf._value if _is_enum(leaf) else leaf
        if isinstance(value, jax.core.Tracer):
            raise TypeError(
                f"js.save got a traced value at {p or '(root)'}: it writes a file, so "
                "call it outside `jax.jit`/`jax.vmap`/`jax.grad`, on the concrete "
                "result of the transformed function."
            )
    buf = io.BytesIO()
    described = []
    for p, leaf in zip(paths, leaves):
        desc = _write_leaf(buf, leaf, _describe(leaf))
        described.append({"path": p, **desc})
    payload = buf.getvalue()
    header = {
        "format_version": FORMAT_VERSION,
        "jaxsolve_version": __version__,
        "class": _class_name(obj),
        "hyperparameters": hyperparameters,
        "leaves": described,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    header["header_sha256"] = _header_digest(header)
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


def _header_digest(header: dict[str, Any]) -> str:
    """SHA-256 of the header's canonical JSON without its own digest: a damaged
    header that is still valid JSON (a flipped digit in a shape, a renamed key) is
    caught too."""
    rest = {k: v for k, v in header.items() if k != "header_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------- read --


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
        raise ValueError(
            f"{str(path)!r} is corrupted: its header is not JSON ({e})."
        ) from None
    if not isinstance(header, dict) or "format_version" not in header:
        raise ValueError(f"{str(path)!r} is corrupted: its header has no version.")
    version = header["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(
            f"{str(path)!r} is corrupted: its format version is {version!r} (jaxsolve "
            f"writes positive integers; this jaxsolve reads versions "
            f"{list(_READABLE_VERSIONS)})."
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} uses jaxsolve file format version {version} (written by "
            f"jaxsolve {header.get('jaxsolve_version')}); this jaxsolve reads up to "
            f"version {FORMAT_VERSION}. Upgrade jaxsolve."
        )
    if version >= 2 and header.get("header_sha256") != _header_digest(header):
        raise ValueError(
            f"{str(path)!r} is corrupted: the header's checksum does not match its "
            "contents."
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
    if version >= 2 and not isinstance(header.get("leaves"), list):
        raise ValueError(f"{str(path)!r} is corrupted: its header lists no leaves.")
    return path, header, payload


def load_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a jaxsolve model file (`class`, `hyperparameters`,
    `jaxsolve_version`, `format_version`, `leaves`, ...), after checking the file
    is whole (length and checksum).

    !!! example

        ```python
        hp = js.load_header("model.jsv")["hyperparameters"]
        ```
    """
    return _read(path)[1]


def _mismatch(path: str, what: str, file_desc: Any, like_desc: Any) -> _Unreadable:
    return _Unreadable(
        f"leaf {path or '(root)'} {what}: the file has {file_desc}, `like` has "
        f"{like_desc}"
    )


_ARRAYS = {"array": "array", "numpy": "array"}


def _check_leaf(p: str, stored: dict[str, Any], mine: dict[str, Any]) -> None:
    """Refuse a `like` leaf that the stored leaf cannot fill."""
    kind = stored.get("kind")
    # JAX and NumPy arrays fill each other (the result takes `like`'s type).
    if _ARRAYS.get(kind, kind) != _ARRAYS.get(mine["kind"], mine["kind"]):
        fk = stored.get("type", kind)
        lk = mine.get("type", mine["kind"])
        raise _mismatch(p, "is of another kind", fk, lk)
    if kind in ("array", "numpy", "numpy_scalar"):
        for field in ("shape", "dtype"):
            if stored.get(field) != mine[field]:
                raise _mismatch(
                    p, f"has another {field}", stored.get(field), mine[field]
                )
    elif kind == "key":
        if stored.get("shape") != mine["shape"]:
            raise _mismatch(p, "has another shape", stored.get("shape"), mine["shape"])
        if stored.get("impl") != mine["impl"]:
            raise _mismatch(
                p,
                "is a PRNG key of another implementation",
                stored.get("impl"),
                mine["impl"],
            )
    elif kind == "enum":
        if stored.get("class") != mine["class"]:
            raise _mismatch(
                p, "is another enumeration", stored.get("class"), mine["class"]
            )
        if stored.get("shape") != mine["shape"]:
            raise _mismatch(p, "has another shape", stored.get("shape"), mine["shape"])
    elif kind == "python" and stored.get("type") != mine["type"]:
        raise _mismatch(p, "is another Python type", stored.get("type"), mine["type"])


def _as_weak(x: jax.Array) -> jax.Array:
    # JAX has no public way to make a weakly typed array of a given dtype; the
    # private converter is used when present (weak types change promotion, so a
    # restored state must keep them), else the strong array is returned.
    try:
        from jax._src.lax.lax import _convert_element_type
    except ImportError:  # pragma: no cover
        return x
    return _convert_element_type(x, x.dtype, weak_type=True)


def _read_leaf(f: io.BytesIO, stored: dict[str, Any], like: Any) -> Any:
    kind = stored["kind"]
    if kind == "str":
        return stored["value"]
    if kind == "object":
        return like
    if kind in _ARRAYS:
        # `jnp.load` for JAX arrays handles bfloat16; `np.load` keeps NumPy's own.
        out = jnp.load(f) if kind == "array" else np.load(f, allow_pickle=False)
        if isinstance(like, np.ndarray):
            return np.asarray(out)
        out = jnp.asarray(out)
        return _as_weak(out) if stored.get("weak_type") else out
    arr = np.load(f, allow_pickle=False)
    if kind == "numpy_scalar":
        return arr[()]
    if kind == "python":
        return type(like)(arr.item())
    if kind == "key":
        return jax.random.wrap_key_data(jnp.asarray(arr), impl=stored["impl"])
    if kind == "enum":
        cls = like._enumeration
        members, names = stored.get("members") or [], _enum_names(cls)
        unknown = sorted(set(members) - set(names))
        if unknown:
            raise _Unreadable(
                f"leaf holds members {unknown} that {cls.__qualname__} no longer has"
            )
        remap = np.array([names.index(m) for m in members], np.int32)
        if arr.size and (arr.min() < 0 or arr.max() >= len(remap)):
            raise _Unreadable(f"a {cls.__qualname__} code is out of range")
        codes = np.asarray(remap[arr] if arr.size else arr, np.int32)
        if not isinstance(like._value, np.ndarray):
            codes = jnp.asarray(codes)
        return eqx.tree_at(lambda e: e._value, like, codes)
    raise _Unreadable(f"leaf has an unknown kind {kind!r}")


def _load_v2(header: dict[str, Any], payload: bytes, like: Any) -> Any:
    stored = header["leaves"]
    paths, leaves = _flatten(like)
    file_paths = [s.get("path") if isinstance(s, dict) else None for s in stored]
    if file_paths != paths:
        first = next(
            (i for i, (a, b) in enumerate(zip(file_paths, paths)) if a != b),
            min(len(paths), len(file_paths)),
        )
        at_file = file_paths[first] if first < len(file_paths) else "(nothing)"
        at_like = paths[first] if first < len(paths) else "(nothing)"
        raise _Unreadable(
            f"its tree does not match `like`'s: the file has {len(file_paths)} "
            f"leaves, `like` has {len(paths)}; the first difference is at leaf "
            f"{first}, {at_file} in the file and {at_like} in `like`"
        )
    for p, s, leaf in zip(paths, stored, leaves):
        _check_leaf(p, s, _describe(leaf))
    f = io.BytesIO(payload)
    out = []
    for p, s, leaf in zip(paths, stored, leaves):
        try:
            out.append(_read_leaf(f, s, leaf))
        except _Unreadable as e:
            raise _Unreadable(f"{p}: {e}") from None
        except Exception as e:  # np.load on damaged bytes
            raise _Unreadable(f"leaf {p} cannot be read ({e})") from None
    if f.tell() != len(payload):
        raise _Unreadable(
            f"{len(payload) - f.tell()} bytes of its payload are left over after the "
            "last leaf"
        )
    treedef = jtu.tree_structure(like, is_leaf=_is_enum)
    return jtu.tree_unflatten(treedef, out)


def load(path: str | os.PathLike, like: _T) -> _T:
    """Load an object saved by [`jaxsolve.save`][].

    **Arguments:**

    - `path`: the file.
    - `like`: a skeleton of the same class and structure (its values are ignored;
        `jax.ShapeDtypeStruct` leaves work too, e.g. from `eqx.filter_eval_shape`).
        See the module notes for what to pass for each family, e.g.
        `like=policy.init(jax.random.key(0))` for a bandit policy state.

    **Returns:** an object like `like` with the saved leaves: arrays of the saved
    values, dtypes and weak types, PRNG keys that continue the saved streams,
    result codes, Python scalars and strings.

    Raises `FileNotFoundError` for a missing file, `ValueError` naming the file for a
    file that is not a jaxsolve file, truncated, corrupted, of another class, of
    another format version, or whose tree does not match `like` (another structure,
    kind, shape, dtype, key implementation or enumeration).

    !!! example

        ```python
        import jax, jaxsolve as js, jaxsolve.tuning as jt
        policy = jt.TsallisINF()
        state = policy.init(jax.random.key(3))
        js.save("/tmp/state.jsv", state)
        state = js.load("/tmp/state.jsv", like=policy.init(jax.random.key(0)))
        ```
    """
    path, header, payload = _read(path)
    expected = _class_name(like)
    if header.get("class") != expected:
        raise ValueError(
            f"{str(path)!r} holds a {header.get('class')}, but `like` is a {expected}."
        )
    hp = header.get("hyperparameters")
    if header["format_version"] >= 2:
        try:
            return _load_v2(header, payload, like)
        except _Unreadable as e:
            raise ValueError(
                f"{str(path)!r} does not match `like` (built with other "
                f"hyper-parameters? the file's are {hp}): {e}."
            ) from None
    # Format version 1: equinox's leaf serialisation, no leaf list.
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(payload), like)
    except Exception as e:  # equinox raises RuntimeError/ValueError/struct errors
        raise ValueError(
            f"{str(path)!r} does not match `like` (built with other "
            f"hyper-parameters? the file's are {hp}): {e}"
        ) from e


__all__ = ["FORMAT_VERSION", "load", "load_header", "save"]
