"""Progress meters work inside jit and are silent by default."""

import jax
import jax.numpy as jnp

import jaxsolve as js


def test_text_progress_meter_under_jit(capfd):
    op = js.linear.poisson((8, 8))
    b = jnp.ones((8, 8))
    solver = js.linear.SOR(omega=1.5, rtol=1e-8)

    @jax.jit
    def run(b):
        return js.linear.solve(
            op, b, solver, progress_meter=js.TextProgressMeter()
        ).value

    x = run(b)
    jax.effects_barrier()
    out = capfd.readouterr().out
    assert "100.00%" in out
    # Silent by default, and the meter does not change the answer.
    y = js.linear.solve(op, b, solver).value
    jax.effects_barrier()
    assert capfd.readouterr().out == ""
    assert jnp.allclose(x, y, rtol=0, atol=0)
