"""`js.sweep`: padding, trimming, errors, caching and composition on the default CPU
device (in process); sharded = unsharded for every family on 8 simulated devices (one
subprocess, since the device count is fixed when JAX starts); and a two-process
`jax.distributed` run on CPU (gloo collectives)."""

import os
import socket
import subprocess
import sys
import textwrap
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxsolve as js
from jaxsolve._core._sweep import _global_from_host, _pad_rows


A = js.linear.poisson((6, 6))
B = jax.random.normal(jax.random.key(0), (6, 6))


def _sor(omega):
    sol = js.linear.solve(A, B, js.linear.SOR(omega, rtol=1e-10))
    return sol.value, sol.stats["num_steps"]


def _assert_tree_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ------------------------------------------------------------- in process (1 dev) --


def test_matches_vmap_with_pytrees_static_leaves_numpy_and_keys():
    def fn(args, scale, mode):
        w, (b, key) = args["w"], args["rest"]
        noise = jax.random.normal(key, (3,))
        out = w * b + scale * noise
        return {"out": out if mode == "plain" else -out, "norm": jnp.sum(out**2)}

    n = 5
    args = {
        "w": np.linspace(0.5, 1.5, n),  # NumPy leaf: batched like a jax.Array
        "rest": (jnp.ones((n, 3)), jax.random.split(jax.random.key(1), n)),
    }
    scales = jnp.arange(n, dtype=jnp.float64)
    got = js.sweep(fn, args, scales, "minus")  # "minus": a static leaf
    want = jax.jit(jax.vmap(lambda a, s: fn(a, s, "minus")))(
        jax.tree.map(jnp.asarray, args), scales
    )
    _assert_tree_equal(got, want)
    plain = js.sweep(fn, args, scales, "plain")  # another static leaf, another program
    np.testing.assert_array_equal(plain["out"], -got["out"])


def test_solver_sweep_and_batch_of_one():
    omegas = jnp.linspace(1.0, 1.9, 4)
    many = js.sweep(_sor, omegas)
    _assert_tree_equal(many, jax.jit(jax.vmap(_sor))(omegas))
    one = js.sweep(_sor, omegas[:1])
    assert one[0].shape == (1, 6, 6) and one[1].shape == (1,)
    assert int(one[1][0]) == int(many[1][0])
    x = np.linalg.solve(np.asarray(A.as_matrix()), np.asarray(B).reshape(-1))
    np.testing.assert_allclose(one[0][0].reshape(-1), x, rtol=1e-7, atol=1e-9)


def test_chunked_sweep_matches_vmap():
    omegas = jnp.linspace(1.0, 1.9, 5)
    chunked = js.sweep(_sor, omegas, chunk_size=2)  # chunks 2, 2, 2 (last one padded)
    ref = jax.jit(jax.vmap(_sor))(omegas)
    np.testing.assert_array_equal(chunked[1], ref[1])
    np.testing.assert_allclose(chunked[0], ref[0], rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="chunk_size"):
        js.sweep(_sor, omegas, chunk_size=0)


def test_independent_devices_match_default():
    omegas = jnp.linspace(1.0, 1.9, 5)
    ref = js.sweep(_sor, omegas)
    _assert_tree_equal(js.sweep(_sor, omegas, independent=True), ref)
    _assert_tree_equal(js.sweep(_sor, omegas, independent=True, chunk_size=2), ref)


def test_differentiating_inside_fn():
    # A hypergradient per instance: implicit differentiation of the solve inside fn.
    def fn(s):
        def loss(s):
            sol = js.linear.solve(A, s * B, js.linear.SOR(1.5, rtol=1e-12))
            return jnp.sum(sol.value**2)

        return jax.grad(loss)(s)

    s = jnp.linspace(0.5, 2.0, 3)
    got = js.sweep(fn, s)
    np.testing.assert_array_equal(got, jax.jit(jax.vmap(fn))(s))
    xb = np.linalg.solve(np.asarray(A.as_matrix()), np.asarray(B).reshape(-1))
    np.testing.assert_allclose(got, 2 * np.asarray(s) * np.sum(xb**2), rtol=1e-8)


def test_padding_repeats_the_last_real_instance():
    np.testing.assert_array_equal(
        _pad_rows(np.arange(5), 5, 8), [0, 1, 2, 3, 4, 4, 4, 4]
    )
    assert _pad_rows(jnp.arange(4), 4, 4).shape == (4,)
    keys = jax.random.split(jax.random.key(0), 3)
    padded = _pad_rows(keys, 3, 4)
    assert jnp.all(jax.random.key_data(padded[3]) == jax.random.key_data(keys[2]))
    # The multi-process path builds global arrays shard by shard from host copies.
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    x = np.arange(10.0).reshape(5, 2)
    g = _global_from_host(x, 5, 8, NamedSharding(mesh, P("batch")))
    np.testing.assert_array_equal(np.asarray(g), x[[0, 1, 2, 3, 4, 4, 4, 4]])


def test_no_retrace_for_new_values_of_the_same_shapes():
    traces = []

    def fn(w, b):
        traces.append(1)
        return jnp.sin(w) * b

    first = js.sweep(fn, jnp.linspace(1.0, 1.5, 3), jnp.ones((3, 2)))
    second = js.sweep(fn, np.linspace(1.2, 1.8, 3), 2 * np.ones((3, 2)))
    assert len(traces) == 1
    np.testing.assert_allclose(
        second, 2 * np.sin(np.linspace(1.2, 1.8, 3))[:, None] * np.ones(2), rtol=1e-15
    )
    assert not np.array_equal(first, second)
    js.sweep(fn, jnp.linspace(1.2, 1.8, 4), jnp.ones((4, 2)))  # a new batch size
    assert len(traces) == 2


_SCALED_TRACES = []


class _Scaled(eqx.Module):
    scale: jax.Array
    power: int = eqx.field(static=True)

    def __call__(self, x):
        _SCALED_TRACES.append(1)
        return self.scale * x**self.power


def test_module_fn_arrays_are_traced_not_baked_in():
    x = jnp.arange(4.0)
    a = js.sweep(_Scaled(jnp.asarray(2.0), 1), x)
    b = js.sweep(_Scaled(jnp.asarray(3.0), 1), x)  # an equal static part: no retrace
    np.testing.assert_array_equal(a, 2.0 * x)
    np.testing.assert_array_equal(b, 3.0 * x)
    assert len(_SCALED_TRACES) == 1
    np.testing.assert_array_equal(js.sweep(_Scaled(jnp.asarray(3.0), 2), x), 3.0 * x**2)
    assert len(_SCALED_TRACES) == 2


def test_empty_batch_returns_empty_result():
    out = js.sweep(_sor, jnp.zeros((0,)))
    want = jax.eval_shape(jax.vmap(_sor), jax.ShapeDtypeStruct((0,), jnp.float64))
    for o, w in zip(jax.tree.leaves(out), jax.tree.leaves(want)):
        assert o.shape == w.shape and o.dtype == w.dtype


def test_composes_with_jit_and_grad():
    def fn(s):
        x = jnp.linalg.solve(A.as_matrix(), s * B.reshape(-1))
        return jnp.sum(x**2)

    s = jnp.linspace(0.5, 2.0, 3)
    np.testing.assert_array_equal(
        jax.jit(lambda v: js.sweep(fn, v))(s), jax.jit(jax.vmap(fn))(s)
    )
    g = jax.grad(lambda v: jnp.sum(js.sweep(fn, v)))(s)
    g_ref = jax.grad(lambda v: jnp.sum(jax.vmap(fn)(v)))(s)
    np.testing.assert_allclose(g, g_ref, rtol=1e-12)
    # d/ds ||A^{-1} s b||^2 = 2 s ||A^{-1} b||^2
    xb = np.linalg.solve(np.asarray(A.as_matrix()), np.asarray(B).reshape(-1))
    np.testing.assert_allclose(g, 2 * np.asarray(s) * np.sum(xb**2), rtol=1e-8)


def test_named_mesh_axis():
    mesh = Mesh(np.array(jax.devices()), ("data",))
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(
        js.sweep(jnp.sin, x, mesh=mesh, axis_name="data"), jnp.sin(x)
    )
    with pytest.raises(ValueError, match="no axis 'batch'"):
        js.sweep(jnp.sin, x, mesh=mesh)


def test_errors():
    x = jnp.arange(3.0)
    with pytest.raises(TypeError, match="no batched arguments"):
        js.sweep(jnp.sin)
    with pytest.raises(ValueError, match="no array leaf"):
        js.sweep(jnp.sin, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"batched_args\[1\] is a scalar"):
        js.sweep(lambda a, b: a * b, x, jnp.asarray(2.0))
    with pytest.raises(ValueError, match=r"one leading \(batch\) size.*: 3.*: 4"):
        js.sweep(lambda a, b: a + b[0], x, jnp.ones((4, 2)))
    with pytest.raises(TypeError):
        js.sweep(jnp.sin, x, mesh="cpu")


# -------------------------------------------------- 8 simulated devices, all families --

FAMILIES = textwrap.dedent(
    """
    import os, time
    T0 = time.perf_counter()
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_numpy_rank_promotion", "raise")
    import jaxsolve as js, jaxsolve.bilevel as bl, jaxsolve.tuning as jt
    from jax.sharding import PartitionSpec as P
    assert jax.device_count() == 8

    def check(name, fn, *args, exact=True, ref=None, **kwargs):
        out = js.sweep(fn, *args, **kwargs)
        if ref is None:
            ref = jax.jit(jax.vmap(fn))(*args)  # unsharded, on device 0
        lo, lr = jax.tree.leaves(out), jax.tree.leaves(ref)
        assert len(lo) == len(lr), name
        bitwise = True
        for a, r in zip(lo, lr):
            a, r = np.asarray(a), np.asarray(r)
            assert a.shape == r.shape and a.dtype == r.dtype, (name, a.shape, r.shape)
            bitwise &= np.array_equal(a, r)
            if exact or not np.issubdtype(a.dtype, np.floating):
                np.testing.assert_array_equal(a, r, err_msg=name)
            else:
                np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-12, err_msg=name)
        n = jax.tree.leaves(args)[0].shape[0]
        print(f"{name} N={n} {kwargs}: bitwise={bitwise} ({time.perf_counter() - T0:.0f} s)", flush=True)
        return out, ref

    # SOR / SSOR-PCG omega sweeps; throw=True (default): a padded lane with omega=0
    # would fail, so this also checks that padding repeats a real instance.
    A = js.linear.poisson((8, 8))
    b = jax.random.normal(jax.random.key(0), (8, 8))
    traces = []
    def sor(omega):
        traces.append(1)
        sol = js.linear.solve(A, b, js.linear.SOR(omega, rtol=1e-8))
        return sol.value, sol.stats["num_steps"], sol.result
    def ssor(omega):
        sol = js.linear.solve(A, b, js.linear.SSORPCG(omega, rtol=1e-8))
        return sol.value, sol.stats["num_steps"]
    (x13, steps13, _), ref13 = check("SOR omega", sor, jnp.linspace(1.0, 1.9, 13))
    x = np.linalg.solve(np.asarray(A.as_matrix()), np.asarray(b).reshape(-1))
    np.testing.assert_allclose(np.asarray(x13).reshape(13, -1), np.tile(x, (13, 1)), atol=1e-6)
    assert len(set(np.asarray(steps13).tolist())) > 5
    # The padding is cut off; the trimmed result is replicated on the mesh.
    assert x13.sharding.is_fully_replicated and len(x13.sharding.device_set) == 8
    n_traces = len(traces)
    x10, steps10, _ = js.sweep(sor, jnp.linspace(1.0, 1.9, 13)[:10])  # pads to 16 again
    assert len(traces) == n_traces  # no retrace
    np.testing.assert_array_equal(steps10, steps13[:10])
    # shard_map (no collectives), chunked, against the same reference
    check("SOR omega", sor, jnp.linspace(1.0, 1.9, 13), ref=ref13, independent=True, chunk_size=1)
    check("SOR omega", sor, jnp.asarray([1.5]))
    check("SSOR-PCG omega", ssor, jnp.linspace(1.0, 1.9, 13))

    # Bandit seeds (replay against a cost table); N=16 stays sharded.
    costs = jax.random.randint(jax.random.key(1), (40, 5), 10, 100)
    policy = jt.TsallisINF(jnp.linspace(1.0, 1.8, 5))
    def bandit(key):
        r = jt.replay(policy, costs, key)
        return r.arms, r.costs
    (arms, _), _ = check("bandit seeds", bandit, jax.random.split(jax.random.key(2), 16))
    assert arms.sharding.spec == P("batch"), arms.sharding
    assert len(arms.sharding.device_set) == 8

    # DCDM right-hand sides (the shipped network).
    A8 = js.linear.poisson((8, 8))
    dcdm_solver = js.linear.DeepConjugateDirection(js.linear.pretrained("poisson2d"), rtol=1e-6)
    def dcdm(rhs):
        sol = js.linear.solve(A8, rhs, dcdm_solver)
        return sol.value, sol.stats["num_steps"]
    check("DCDM rhs", dcdm, jax.random.normal(jax.random.key(3), (10, 8, 8)), exact=False)

    # LightSB fits over epsilon.
    kx, ky = jax.random.split(jax.random.key(4))
    xd = jax.random.normal(kx, (64, 2))
    yd = 1.0 + 0.5 * jax.random.normal(ky, (64, 2))
    def lightsb(eps):
        model = js.bridge.LightSB(2, 2, eps, key=jax.random.key(5))
        model, losses = js.bridge.fit(model, xd, yd, jax.random.key(6), steps=3, batch_size=16)
        return model.means, model.log_s, losses
    check("LightSB eps", lightsb, jnp.linspace(0.1, 1.0, 10), exact=False)

    # Diffusion sampler seeds (exact Gaussian-mixture model).
    gm = js.diffusion.GaussianMixture.example(dim=2)
    sched = js.diffusion.VPSchedule.linear()
    model = gm.model(sched)
    def diffusion(key):
        x_T = jax.random.normal(key, (4, 2))
        return js.diffusion.sample(model, x_T, sched, js.diffusion.GHVB(2, 0.5), 8).value
    check("diffusion seeds", diffusion, jax.random.split(jax.random.key(7), 10), exact=False)

    # Bilevel step sizes (LV-HBA on a box-constrained toy).
    box = bl.BilevelProblem(
        lambda x, y: 0.5 * jnp.sum((y - 2) ** 2) + 0.5 * jnp.sum((x - 3) ** 2),
        lambda x, y: 0.5 * jnp.sum((y - x) ** 2),
        inequality=lambda x, y: y - 1.0,
    )
    def bilevel(alpha):
        sol = bl.solve(box, bl.LVHBA(alpha=alpha, c=0.25), jnp.zeros(3), jnp.zeros(3), max_steps=30)
        return sol.value, sol.stats["stationarity"]
    check("bilevel alpha", bilevel, jnp.linspace(0.02, 0.1, 10))
    print("ALL OK")
    """
)


def test_sharded_equals_unsharded_for_every_family():
    out = subprocess.run(
        [sys.executable, "-c", FAMILIES], capture_output=True, text=True, timeout=400
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "ALL OK" in out.stdout
    print(out.stdout)


# ------------------------------------------------------ two processes, jax.distributed --

MULTIHOST = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    pid, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid
    )
    import jaxsolve as js
    assert jax.process_count() == 2 and jax.device_count() == 4
    assert jax.local_device_count() == 2
    A = js.linear.poisson((8, 8))
    b = np.random.default_rng(0).standard_normal((8, 8))
    def sor(omega):
        sol = js.linear.solve(A, b, js.linear.SOR(omega, rtol=1e-8))
        return sol.value, sol.stats["num_steps"]
    for n in (7, 8):  # 7: padded to 8 over the 4 global devices
        omegas = np.linspace(1.0, 1.9, n)  # the same full batch on every process
        out = js.sweep(sor, omegas)
        ref = jax.jit(jax.vmap(sor))(jnp.asarray(omegas))  # this process alone
        for a, r in zip(out, ref):
            assert a.is_fully_addressable and a.shape == r.shape, (a.shape, r.shape)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(r))
        print(f"process {pid} N={n} steps {np.asarray(out[1]).tolist()}", flush=True)
    print(f"process {pid} OK", flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_jax_distributed():
    port = str(_free_port())
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MULTIHOST, str(i), port],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outputs = []
    deadline = time.monotonic() + 150  # CI must never hang on a stuck peer
    try:
        for p in procs:
            outputs.append(
                p.communicate(timeout=max(deadline - time.monotonic(), 1))[0]
            )
    finally:
        for p in procs:  # never leave a process waiting on its peer
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i, (p, text) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, text[-4000:]
        assert f"process {i} OK" in text
    steps = [
        line.split("steps")[1] for line in outputs[0].splitlines() if "steps" in line
    ]
    assert steps == [
        line.split("steps")[1] for line in outputs[1].splitlines() if "steps" in line
    ]
