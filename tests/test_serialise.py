"""`js.save` / `js.load`: a round trip for everything trained or fitted in every family,
and a clear error naming the file for every way a model file can be wrong."""

import functools
import hashlib
import io
import json
import struct

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import jaxsolve as js
import jaxsolve.bilevel as bl
import jaxsolve.tuning as jt

from .helpers import coupled_bilevel_toy


# ------------------------------------------------------------------ helpers --


def _leaves_equal(a, b):
    """Same structure; array leaves of the same type, dtype, weak type and bits; PRNG
    keys of the same implementation and data; other leaves equal."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert type(x) is type(y), (type(x), type(y))
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(
            x.dtype, jax.dtypes.prng_key
        ):
            assert x.dtype == y.dtype
            assert np.array_equal(jax.random.key_data(x), jax.random.key_data(y))
        elif isinstance(x, (jax.Array, np.ndarray, np.generic)):
            assert x.dtype == y.dtype and np.shape(x) == np.shape(y)
            assert getattr(x, "weak_type", None) == getattr(y, "weak_type", None)
            # Bitwise, NaN included.
            assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
        else:
            assert x == y


def _skeleton(fn):
    """A `like` without running anything: the shapes of `fn()`'s output."""
    return eqx.filter_eval_shape(fn)


# The objects each family saves, tiny; `like(obj, header)` builds the skeleton the
# way docs/serialisation.md tells users to.


# Networks are built under one `jit` (eager construction runs many small ops), and
# their skeletons by `eqx.filter_eval_shape` (no computation at all).


def _dcdm():
    net = eqx.filter_jit(lambda k: js.linear.DCDMNetwork(2, key=k, width=4))(
        jax.random.key(1)
    )
    like = lambda hp: _skeleton(
        lambda: js.linear.DCDMNetwork(**hp, key=jax.random.key(0))
    )
    return net, like


def _lightsb(covariance):
    model = js.bridge.LightSB(3, 4, 0.1, key=jax.random.key(2), covariance=covariance)
    # Non-default values everywhere (a fitted model's parameters are arbitrary).
    model = jax.tree.map(
        lambda a: a + 0.25 if eqx.is_inexact_array(a) else a,
        model,
    )
    return model, js.bridge.LightSB.from_hyperparameters


def _digits():
    net = eqx.filter_jit(
        lambda k: js.diffusion.DigitsDenoiser(key=k, width=8, depth=1)
    )(jax.random.key(3))
    like = lambda hp: _skeleton(
        lambda: js.diffusion.DigitsDenoiser(**hp, key=jax.random.key(0))
    )
    return net, like


_POLICIES = {
    "tsallis": lambda: jt.TsallisINF(jnp.linspace(1.0, 1.9, 5)),
    "tsallis_cb": lambda: jt.TsallisINFCB(
        jnp.linspace(1.0, 1.9, 5), bins=3, context_range=(0.0, 1.0)
    ),
    "chebcb": lambda: jt.ChebCB(
        jnp.linspace(1.0, 1.9, 5), degree=2, context_range=(0.0, 1.0)
    ),
}


@eqx.filter_jit
def _play(policy, state, contexts, rounds):
    """`rounds` select/update pairs on made-up costs; returns choices and state."""

    def step(state, c):
        arm, omega, state = policy.select(state, c)
        cost = 10 + 3 * arm + jnp.floor(7 * c).astype(arm.dtype)
        state = policy.update(state, arm, cost, c)
        return state, (arm, omega)

    return jax.lax.scan(step, state, contexts[:rounds])


_CONTEXTS = jnp.linspace(0.05, 0.95, 8)


def _policy_state(name, rounds):
    policy = _POLICIES[name]()
    state = policy.init(jax.random.key(7))
    if rounds:
        state, _ = _play(policy, state, _CONTEXTS, rounds)
    return state, lambda hp: policy.init(jax.random.key(0))


def _sequence_call():
    cs = jnp.linspace(0.0, 0.5, 4)
    ops = jax.vmap(lambda c: js.linear.poisson((4, 4), shift=c))(cs)
    bs = jnp.ones((4, 4, 4))
    solver = js.linear.SOR(1.0, rtol=1e-6, ordering="natural")
    return lambda: jt.solve_sequence(
        solver, (ops, bs), _POLICIES["tsallis"](), jax.random.key(0)
    )


def _sequence():
    call = _sequence_call()
    return call(), lambda hp: _skeleton(call)


def _bilevel_call():
    problem = coupled_bilevel_toy()
    x0, y0 = -2 * jnp.ones(3), (jnp.ones(3), jnp.ones(3))
    return lambda: bl.solve(problem, bl.LVHBA(), x0, y0, max_steps=20)


def _bilevel():
    call = _bilevel_call()
    return call(), lambda hp: _skeleton(call)


def _linear_call(batched):
    op = js.linear.poisson((5, 5))
    solver = js.linear.SOR(jnp.array(1.5), rtol=1e-6, max_steps=15)
    if not batched:
        return lambda: js.linear.solve(op, jnp.ones((5, 5)), solver, throw=False)
    bs = jnp.stack([jnp.ones((5, 5)), jnp.zeros((5, 5)), jnp.full((5, 5), jnp.nan)])
    # A batch with three different result codes (max_steps, success, NaN input).
    return lambda: jax.vmap(lambda b: js.linear.solve(op, b, solver, throw=False))(bs)


def _linear(batched):
    call = _linear_call(batched)
    return call(), lambda hp: _skeleton(call)


KINDS = {
    "dcdm": _dcdm,
    "lightsb_diagonal": lambda: _lightsb("diagonal"),
    "lightsb_full": lambda: _lightsb("full"),
    "digits": _digits,
    "tsallis_init": lambda: _policy_state("tsallis", 0),
    "tsallis_updated": lambda: _policy_state("tsallis", 3),
    "tsallis_cb_updated": lambda: _policy_state("tsallis_cb", 3),
    "chebcb_init": lambda: _policy_state("chebcb", 0),
    "chebcb_updated": lambda: _policy_state("chebcb", 3),
    "sequence": _sequence,
    "bilevel": _bilevel,
    "linear": lambda: _linear(False),
    "linear_batched": lambda: _linear(True),
}


@functools.cache
def _object(kind):
    return KINDS[kind]()


@pytest.fixture(params=sorted(KINDS))
def kind(request):
    return request.param


@pytest.fixture
def saved(tmp_path, kind):
    obj, _ = _object(kind)
    path = js.save(tmp_path / f"{kind}.jsv", obj)
    return path


def _like(kind, path):
    _, like = _object(kind)
    return like(js.load_header(path)["hyperparameters"])


# ---------------------------------------------------------------- round trip --


def test_round_trip(kind, saved):
    obj, _ = _object(kind)
    back = js.load(saved, like=_like(kind, saved))
    assert type(back) is type(obj)
    _leaves_equal(obj, back)


def test_round_trip_records_hyperparameters(tmp_path):
    net, _ = _object("dcdm")
    path = js.save(tmp_path / "sub" / "net.jsv", net)
    header = js.load_header(path)
    assert header["hyperparameters"] == net.hyperparameters()
    assert header["class"] == "jaxsolve.linear._dcdm_network.DCDMNetwork"
    assert header["format_version"] == 2
    # Explicit hyper-parameters win.
    js.save(path, net, hyperparameters={"width": 4})
    assert js.load_header(path)["hyperparameters"] == {"width": 4}


def test_results_are_restored_as_members(tmp_path):
    sol, like = _linear(True)
    path = js.save(tmp_path / "s.jsv", sol)
    back = js.load(path, like=like(None))
    codes = [
        js.RESULTS.max_steps_reached,
        js.RESULTS.successful,
        js.RESULTS.nonfinite_input,
    ]
    # Lane i holds codes[i], before and after the round trip.
    for result in (sol.result, back.result):
        got = jnp.stack([result == c for c in codes])
        assert jnp.array_equal(got, jnp.eye(3, dtype=bool))
    assert js.RESULTS[back.result] == js.RESULTS[sol.result]


@pytest.mark.parametrize("name", sorted(_POLICIES))
def test_restored_policy_state_continues_identically(tmp_path, name):
    policy = _POLICIES[name]()
    state, _ = _play(policy, policy.init(jax.random.key(11)), _CONTEXTS, 3)
    path = js.save(tmp_path / "state.jsv", state)
    restored = js.load(path, like=policy.init(jax.random.key(0)))
    contexts = _CONTEXTS[::-1]
    a = _play(policy, state, contexts, 5)
    b = _play(policy, restored, contexts, 5)
    _leaves_equal(a, b)
    # The key stream really continues (a fresh state would choose otherwise).
    assert not np.array_equal(
        jax.random.key_data(restored.key), jax.random.key_data(jax.random.key(0))
    )


def test_results_are_stored_by_name(tmp_path):
    """A file stays readable when an enumeration's members are reordered."""
    sol, like = _linear(True)
    path = js.save(tmp_path / "s.jsv", sol)
    header = _header(path)
    (leaf,) = [s for s in header["leaves"] if s["kind"] == "enum"]
    # Pretend the file was written by a version with the members in another order:
    # swap the codes in the payload and the names in the header.
    members = leaf["members"]
    i, j = members.index("successful"), members.index("nonfinite_input")
    members[i], members[j] = members[j], members[i]
    _rewrite(path, header, swap_codes=(i, j))
    back = js.load(path, like=like(None))
    got = jnp.stack(
        [
            back.result == js.RESULTS.successful,
            back.result == js.RESULTS.nonfinite_input,
        ]
    )
    assert jnp.array_equal(got, jnp.array([[False, True, False], [False, False, True]]))


def test_python_scalars_strings_none_numpy_and_weak_types(tmp_path):
    obj = {
        "f": 0.1,
        "i": 2**40,
        "b": True,
        "c": 1 + 2j,
        "s": "diagonal",
        "none": None,
        "np": np.arange(3, dtype=np.int16),
        "np_scalar": np.float32(1.5),
        "weak": jnp.asarray(2.5),
        "strong": jnp.asarray(2.5, jnp.float32),
        "bf16": jnp.arange(3, dtype=jnp.bfloat16),
        "rbg": jax.random.key(5, impl="rbg"),
        "keys": jax.random.split(jax.random.key(6), 3),
        "raw_key": jax.random.PRNGKey(8),
        "fn": print,
    }
    like = {
        "f": 0.0,
        "i": 0,
        "b": False,
        "c": 0j,
        "s": "",
        "none": None,
        "np": np.zeros(3, np.int16),
        "np_scalar": np.float32(0),
        "weak": jnp.asarray(0.0),
        "strong": jnp.zeros((), jnp.float32),
        "bf16": jnp.zeros(3, jnp.bfloat16),
        "rbg": jax.random.key(0, impl="rbg"),
        "keys": jax.random.split(jax.random.key(0), 3),
        "raw_key": jax.random.PRNGKey(0),
        "fn": print,
    }
    assert obj["weak"].weak_type
    path = js.save(tmp_path / "misc.jsv", obj)
    back = js.load(path, like=like)
    _leaves_equal(obj, back)
    assert back["f"] == 0.1 and back["i"] == 2**40 and back["s"] == "diagonal"
    # ShapeDtypeStruct skeletons work too, keys included.
    shapes = jax.tree.map(
        lambda x: (
            jax.ShapeDtypeStruct(
                x.shape, x.dtype, weak_type=getattr(x, "weak_type", False)
            )
            if isinstance(x, jax.Array)
            else x
        ),
        like,
    )
    _leaves_equal(obj, js.load(path, like=shapes))


def test_shipped_version_1_files_still_load(tmp_path):
    path = js.linear._pretrained.pretrained_path("poisson2d")
    header = js.load_header(path)
    assert header["format_version"] == 1
    hp = header["hyperparameters"]["network"]
    net = js.load(
        path,
        like=_skeleton(lambda: js.linear.DCDMNetwork(**hp, key=jax.random.key(0))),
    )
    # Re-saved in today's format, it loads back bit for bit.
    new = js.save(tmp_path / "p.jsv", net)
    like = _skeleton(
        lambda: js.linear.DCDMNetwork(**net.hyperparameters(), key=jax.random.key(0))
    )
    _leaves_equal(net, js.load(new, like=like))


# ------------------------------------------------------------------- errors --


def _header(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[9:17])
    return json.loads(data[17 : 17 + n])


def _rewrite(path, header, swap_codes=None):
    """Write `header` into the file (keeping the payload and both checksums
    valid: what a buggy writer, not a damaged disk, would produce)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[9:17])
    payload = data[17 + n :]
    if swap_codes is not None:
        # The one enum leaf of a batched linear Solution: rewrite its codes.
        paths = [s["path"] for s in header["leaves"]]
        f = io.BytesIO(payload)
        arrays = [np.load(f) for _ in paths]
        k = [s["kind"] for s in header["leaves"]].index("enum")
        i, j = swap_codes
        codes = arrays[k].copy()
        arrays[k] = np.where(codes == i, j, np.where(codes == j, i, codes))
        out = io.BytesIO()
        for a in arrays:
            np.save(out, a)
        payload = out.getvalue()
        header["payload_bytes"] = len(payload)
        header["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    header.pop("header_sha256", None)
    digest = json.dumps(header, sort_keys=True).encode()
    header["header_sha256"] = hashlib.sha256(digest).hexdigest()
    head = json.dumps(header).encode()
    path.write_bytes(data[:9] + struct.pack("<Q", len(head)) + head + payload)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.jsv"):
        js.load(tmp_path / "nothere.jsv", like=_object("dcdm")[0])


def test_not_a_jaxsolve_file(tmp_path):
    path = tmp_path / "other.bin"
    path.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="other.bin.*not a jaxsolve model file"):
        js.load(path, like=_object("dcdm")[0])


@pytest.mark.parametrize("cut", [5, 12, 40, "payload", -3])
def test_truncated(kind, saved, cut):
    data = saved.read_bytes()
    if cut == "payload":
        cut = len(data) - _header(saved)["payload_bytes"] // 2 - 1
    saved.write_bytes(data[:cut])
    with pytest.raises(ValueError, match=f"{kind}.jsv.*(truncated|not a jaxsolve)"):
        js.load(saved, like=_like_or_none(kind))


def _like_or_none(kind):
    # Errors about the file come before `like` is looked at.
    return _object(kind)[0]


def test_corrupted_payload(kind, saved):
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{kind}.jsv.*corrupted.*checksum"):
        js.load(saved, like=_like_or_none(kind))


@pytest.mark.parametrize("where", ["syntax", "content"])
def test_corrupted_header(kind, saved, where):
    data = bytearray(saved.read_bytes())
    if where == "syntax":
        data[17] = ord("[")  # the header's opening brace
        match = "not JSON"
    else:
        # Still valid JSON: a digit of the payload length changed.
        i = data.index(b'"payload_bytes": ') + len(b'"payload_bytes": ')
        data[i] = ord("1") if data[i] != ord("1") else ord("2")
        match = "header's checksum"
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{kind}.jsv.*corrupted.*{match}"):
        js.load(saved, like=_like_or_none(kind))


def test_corrupted_leaf_list(kind, saved):
    header = _header(saved)
    del header["leaves"]
    _rewrite(saved, header)  # with a valid header checksum
    with pytest.raises(ValueError, match=f"{kind}.jsv.*corrupted.*no leaves"):
        js.load(saved, like=_like_or_none(kind))


_OTHER = dict(zip(sorted(KINDS), sorted(KINDS)[1:] + sorted(KINDS)[:1]))


def test_wrong_class(kind, saved):
    other = _OTHER[kind]
    like, _ = _object(other)
    if type(like) is type(_object(kind)[0]):  # two kinds of the same class
        other = _OTHER[other]
        like, _ = _object(other)
    with pytest.raises(ValueError, match=f"{kind}.jsv.* holds a .*but `like` is a"):
        js.load(saved, like=like)


@pytest.mark.parametrize("version", [99, 0, "2", None])
def test_wrong_version(kind, saved, version):
    header = _header(saved)
    header["format_version"] = version
    _rewrite(saved, header)
    match = "version 99.*Upgrade" if version == 99 else "corrupted.*version"
    with pytest.raises(ValueError, match=f"{kind}.jsv.*{match}"):
        js.load(saved, like=_like_or_none(kind))


# `like`s of the right class but another structure, shape, dtype or key.
_MISMATCH = {
    "dcdm": lambda: _skeleton(
        lambda: js.linear.DCDMNetwork(2, key=jax.random.key(0), width=5)
    ),
    "lightsb_diagonal": lambda: _object("lightsb_full")[0],
    "lightsb_full": lambda: _object("lightsb_diagonal")[0],
    "digits": lambda: _skeleton(
        lambda: js.diffusion.DigitsDenoiser(key=jax.random.key(0), width=8)
    ),
    "tsallis_init": lambda: jt.TsallisINF(jnp.linspace(1.0, 1.9, 4)).init(
        jax.random.key(0)
    ),
    "tsallis_updated": lambda: _POLICIES["tsallis"]().init(
        jax.random.key(0, impl="rbg")
    ),
    "tsallis_cb_updated": lambda: (
        _POLICIES["tsallis_cb"]()
        .init(jax.random.key(0))
        ._replace(num_invalid=jnp.array(0.0))
    ),
    "chebcb_init": lambda: jt.ChebCB(
        jnp.linspace(1.0, 1.9, 5), degree=3, context_range=(0.0, 1.0)
    ).init(jax.random.key(0)),
    "chebcb_updated": lambda: _POLICIES["chebcb"]().init(jax.random.key(0)),
    "sequence": lambda: eqx.tree_at(
        lambda s: s.result,
        _object("sequence")[0],
        lx.RESULTS.where(True, lx.RESULTS.successful, lx.RESULTS.successful),
    ),
    "bilevel": lambda: _object("linear")[0],
    "linear": lambda: _object("linear_batched")[0],
    "linear_batched": lambda: _object("linear")[0],
}


def test_like_that_does_not_match(kind, saved):
    like = _MISMATCH[kind]()
    if kind == "chebcb_updated":
        # Same structure and shapes: this `like` does match (any state of the same
        # policy does); the mismatch is a float32 skeleton.
        like = jax.tree.map(
            lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, like
        )
    with pytest.raises(ValueError, match=f"{kind}.jsv.*does not match `like`"):
        js.load(saved, like=like)


def test_unserialisable_hyperparameters(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        js.save(tmp_path / "x.jsv", _object("dcdm")[0], hyperparameters={"f": print})


def test_save_inside_jit_is_a_clear_error(tmp_path):
    @jax.jit
    def f(x):
        js.save(tmp_path / "x.jsv", {"x": x})
        return x

    with pytest.raises(TypeError, match=r"traced value at \['x'\].*outside `jax.jit`"):
        f(jnp.ones(2))
    assert not (tmp_path / "x.jsv").exists()
