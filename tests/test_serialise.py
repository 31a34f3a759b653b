"""`js.save` / `js.load`: round trip, and a clear error naming the file for every way a
model file can be wrong."""

import json
import struct

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import jaxsolve as js


def _net(key, width=8):
    return eqx.nn.MLP(2, 1, width, 2, key=key)


def test_round_trip(tmp_path, getkey):
    net = _net(getkey())
    path = js.save(tmp_path / "sub" / "net.jsv", net, hyperparameters={"width": 8})
    header = js.load_header(path)
    assert header["hyperparameters"] == {"width": 8}
    assert header["class"].endswith("MLP") and header["format_version"] == 1
    back = js.load(path, like=_net(getkey()))
    for a, b in zip(jax.tree.leaves(net), jax.tree.leaves(back)):
        if eqx.is_array(a):
            assert a.dtype == b.dtype and jnp.array_equal(a, b)


def test_round_trip_of_arrays_in_a_namedtuple_like_state(tmp_path):
    state = {"a": jnp.arange(3.0), "b": jnp.array(2, jnp.int32)}
    js.save(tmp_path / "s.jsv", state)
    back = js.load(
        tmp_path / "s.jsv", like={"a": jnp.zeros(3), "b": jnp.array(0, jnp.int32)}
    )
    assert jnp.array_equal(back["a"], state["a"]) and int(back["b"]) == 2


@pytest.fixture
def saved(tmp_path):
    path = js.save(tmp_path / "net.jsv", _net(jax.random.key(0)))
    return path


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.jsv"):
        js.load(tmp_path / "nothere.jsv", like=_net(jax.random.key(0)))


def test_not_a_jaxsolve_file(tmp_path):
    path = tmp_path / "other.bin"
    path.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="other.bin.*not a jaxsolve model file"):
        js.load(path, like=_net(jax.random.key(0)))


@pytest.mark.parametrize("cut", [5, 12, 40, -3])
def test_truncated(saved, cut):
    data = saved.read_bytes()
    saved.write_bytes(data[:cut])
    with pytest.raises(ValueError, match="net.jsv.*(truncated|not a jaxsolve)"):
        js.load(saved, like=_net(jax.random.key(0)))


def test_corrupted_payload(saved):
    data = bytearray(saved.read_bytes())
    data[-10] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="net.jsv.*corrupted.*checksum"):
        js.load(saved, like=_net(jax.random.key(0)))


def _rewrite_header(path, **changes):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[9:17])
    header = json.loads(data[17 : 17 + n])
    header.update(changes)
    head = json.dumps(header).encode()
    path.write_bytes(data[:9] + struct.pack("<Q", len(head)) + head + data[17 + n :])


def test_wrong_class(saved):
    with pytest.raises(ValueError, match="net.jsv.*MLP.*Linear"):
        js.load(saved, like=eqx.nn.Linear(2, 2, key=jax.random.key(0)))


def test_newer_format_version(saved):
    _rewrite_header(saved, format_version=99)
    with pytest.raises(ValueError, match="net.jsv.*version 99.*Upgrade"):
        js.load(saved, like=_net(jax.random.key(0)))


def test_other_hyperparameters(saved):
    with pytest.raises(ValueError, match="net.jsv.*does not match"):
        js.load(saved, like=_net(jax.random.key(0), width=16))


def test_unserialisable_hyperparameters(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        js.save(
            tmp_path / "x.jsv", _net(jax.random.key(0)), hyperparameters={"f": print}
        )
