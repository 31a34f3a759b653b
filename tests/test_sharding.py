"""Many independent solves sharded over devices (8 simulated CPU devices, in a
subprocess because the device count is fixed when JAX starts)."""

import subprocess
import sys
import textwrap


SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import jaxsolve as js

    assert len(jax.devices()) == 8
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    op = js.linear.poisson((8, 8))
    bs = jax.random.normal(jax.random.key(0), (16, 8, 8))
    omegas = jnp.linspace(1.1, 1.8, 16)
    bs_s = jax.device_put(bs, NamedSharding(mesh, P("batch")))
    om_s = jax.device_put(omegas, NamedSharding(mesh, P("batch")))

    @jax.jit
    def batched(bs, omegas):
        def one(b, w):
            sol = js.linear.solve(op, b, js.linear.SOR(omega=w, rtol=1e-10), throw=False)
            return sol.value, sol.stats["num_steps"]
        return jax.vmap(one)(bs, omegas)

    xs, steps = batched(bs_s, om_s)
    assert xs.sharding.spec[0] == "batch", xs.sharding
    xs_ref, steps_ref = batched(bs, omegas)
    np.testing.assert_allclose(xs, xs_ref, rtol=1e-12)
    np.testing.assert_array_equal(steps, steps_ref)
    a = op.as_matrix()
    for i in (0, 15):
        np.testing.assert_allclose(xs[i].reshape(-1), jnp.linalg.solve(a, bs[i].reshape(-1)), rtol=1e-7, atol=1e-8)
    print("OK")
    """
)


def test_sharded_batch_of_solves():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout
