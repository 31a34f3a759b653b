"""Progress meters: every entry point that takes `progress_meter=` shows progress under
`jax.jit` and under `jax.vmap` (the meter advances through intermediate values and is
closed at 100%), is silent by default, and the meter never changes the answer (bit for
bit)."""

import functools
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js
import jaxsolve.bilevel as bl
import jaxsolve.tuning as jt

from .helpers import coupled_bilevel_toy


def _percentages(out: str) -> list[float]:
    return [float(m) for m in re.findall(r"^(\d+\.\d\d)%$", out, flags=re.M)]


def _check_meter(out: str) -> None:
    """One meter's output: 0% first, at least one value strictly between (it really
    advanced inside the loop), monotone, 100% last (it was closed)."""
    values = _percentages(out)
    assert values, f"no progress printed: {out!r}"
    assert values[0] == 0.0 and values[-1] == 100.0, values
    assert any(0.0 < v < 100.0 for v in values), values
    assert all(a <= b for a, b in zip(values, values[1:])), values


def _same(a, b) -> None:
    """Bit-for-bit equal pytrees (keys by their data)."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


# Each case: `run(meter, *args) -> answer` (arrays only) and the arguments of one
# instance and of a batch of three for vmap (None: vmap does not apply).


def _linear_case():
    op = js.linear.poisson((8, 8))
    solver = js.linear.SOR(1.5, rtol=1e-8)

    def run(meter, b):
        sol = js.linear.solve(op, b, solver, progress_meter=meter)
        return sol.value, sol.stats["num_steps"]

    bs = jnp.stack(
        [jnp.ones((8, 8)), jnp.linspace(0, 1, 64).reshape(8, 8), -jnp.ones((8, 8))]
    )
    return run, (bs[0],), (bs,)


class _Stencil(eqx.Module):
    """A three-weight stand-in for a DCDM network (any `r -> q` module works): the
    trainer's loop is what is tested here, and this compiles fast."""

    w: jax.Array

    def __call__(self, r):
        near = sum(jnp.roll(r, s, a) for s in (-1, 1) for a in (0, 1))
        return self.w[0] * r + self.w[1] * near + self.w[2] * r**2


def _bilevel_case():
    problem = coupled_bilevel_toy()

    def run(meter, x0):
        y0 = (jnp.ones(3), jnp.ones(3))
        sol = bl.solve(problem, bl.LVHBA(), x0, y0, max_steps=30, progress_meter=meter)
        return sol.value, sol.stats["num_steps"]

    return run, (-2 * jnp.ones(3),), (jnp.stack([-2 * jnp.ones(3), jnp.zeros(3)]),)


def _sample_case():
    gm = js.diffusion.GaussianMixture(jnp.array([[1.0, 0.0], [-1.0, 0.5]]), 0.3)
    schedule = js.diffusion.VPSchedule.linear()
    sampler = js.diffusion.HeavyBall(js.diffusion.DDIM(), 0.8)

    def run(meter, x_T):
        sol = js.diffusion.sample(
            gm.model(schedule), x_T, schedule, sampler, 10, progress_meter=meter
        )
        return sol.value

    x_T = jax.random.normal(jax.random.key(1), (3, 4, 2))
    return run, (x_T[0],), (x_T,)


def _train_dcdm_case():
    op = js.linear.poisson((8, 8))
    net = _Stencil(jnp.array([1.0, 0.2, 0.1]))

    def run(meter, key):
        trained, losses = js.linear.train_dcdm(
            net, op, key, steps=6, batch_size=2, lanczos_steps=8, progress_meter=meter
        )
        return eqx.filter(trained, eqx.is_array), losses

    # No vmap: one network is trained per operator (and vmapping a training run
    # costs a compile of its own); its meter rides the scan carry as in bridge.fit.
    return run, (jax.random.key(2),), None


def _fit_case():
    x = jax.random.normal(jax.random.key(3), (64, 2))
    y = 1.0 + 0.5 * jax.random.normal(jax.random.key(4), (64, 2))
    model = js.bridge.LightSB(2, 3, 0.1, key=jax.random.key(5))

    def run(meter, key):
        fitted, losses = js.bridge.fit(
            model, x, y, key, steps=8, batch_size=16, progress_meter=meter
        )
        return eqx.filter(fitted, eqx.is_array), losses

    keys = jax.random.split(jax.random.key(6), 3)
    return run, (keys[0],), (keys,)


def _train_digits_case():
    net = eqx.filter_jit(
        lambda k: js.diffusion.DigitsDenoiser(key=k, width=8, depth=1)
    )(jax.random.key(0))
    images = jax.random.uniform(jax.random.key(7), (20, 64), jnp.float32, -1, 1)
    labels = jnp.arange(20, dtype=jnp.int32) % 10

    def run(meter, key):
        # Under the suite's strict dtype promotion (train_digits guards optax).
        trained, losses = js.diffusion.train_digits(
            net, images, labels, key, steps=6, batch_size=4, progress_meter=meter
        )
        return eqx.filter(trained, eqx.is_array), losses

    # No vmap, as for train_dcdm: one network per data set.
    return run, (jax.random.key(8),), None


def _sequence_case():
    cs = jnp.linspace(0.0, 0.5, 6)
    ops = jax.vmap(lambda c: js.linear.poisson((5, 5), shift=c))(cs)
    bs = jnp.ones((6, 5, 5))
    solver = js.linear.SOR(1.0, rtol=1e-6, ordering="natural")
    policy = jt.TsallisINF(jnp.linspace(1.0, 1.9, 4))

    def run(meter, key):
        out = jt.solve_sequence(solver, (ops, bs), policy, key, progress_meter=meter)
        return eqx.filter(out, eqx.is_array)

    keys = jax.random.split(jax.random.key(9), 3)
    return run, (keys[0],), (keys,)


CASES = {
    "linear.solve": _linear_case,
    "bilevel.solve": _bilevel_case,
    "diffusion.sample": _sample_case,
    "linear.train_dcdm": _train_dcdm_case,
    "bridge.fit": _fit_case,
    "diffusion.train_digits": _train_digits_case,
    "tuning.solve_sequence": _sequence_case,
}


@functools.cache
def _case(name):
    return CASES[name]()


# vmap where it is how the entry point is used: batches of right-hand sides, start
# points, seeds (sampling, fits over seeds or eps, sequences over seeds).
_NO_VMAP = {"linear.train_dcdm", "diffusion.train_digits"}
_PARAMS = [(n, "jit") for n in sorted(CASES)]
_PARAMS += [(n, "vmap") for n in sorted(CASES) if n not in _NO_VMAP]


@pytest.mark.parametrize("name, transform", _PARAMS)
def test_progress(capfd, name, transform):
    run, single, batched = _case(name)
    args = single if transform == "jit" else batched
    if transform == "jit":
        with_meter = jax.jit(lambda *a: run(js.TextProgressMeter(), *a))
        without = jax.jit(lambda *a: run(None, *a))
    else:
        with_meter = jax.jit(jax.vmap(lambda *a: run(js.TextProgressMeter(), *a)))
        without = jax.jit(jax.vmap(lambda *a: run(None, *a)))
    capfd.readouterr()
    a = with_meter(*args)
    jax.block_until_ready(a)
    jax.effects_barrier()
    out = capfd.readouterr().out
    _check_meter(out)
    b = without(*args)
    jax.block_until_ready(b)
    jax.effects_barrier()
    assert capfd.readouterr().out == "", "silent without a meter"
    _same(a, b)


def test_vmap_prints_one_meter(capfd):
    """Under `vmap` one meter tracks the whole batch (not one per lane)."""
    run, _, (bs,) = _case("linear.solve")
    jax.block_until_ready(jax.vmap(lambda b: run(js.TextProgressMeter(), b))(bs))
    jax.effects_barrier()
    out = capfd.readouterr().out
    _check_meter(out)
    assert out.count("0.00%\n") - out.count("100.00%\n") == 1


def test_default_is_silent_eagerly(capfd):
    run, (b,), _ = _case("linear.solve")
    jax.block_until_ready(run(None, b))
    jax.effects_barrier()
    assert capfd.readouterr().out == ""


@pytest.mark.parametrize("batch_size", [None, 3])
def test_cost_table_progress(capfd, batch_size):
    cs = jnp.linspace(0.0, 0.5, 5)
    ops = jax.vmap(lambda c: js.linear.poisson((5, 5), shift=c))(cs)
    bs = jnp.ones((5, 5, 5))
    omegas = jnp.linspace(1.0, 1.9, 4)
    solver = js.linear.SOR(1.0, rtol=1e-8, ordering="natural")

    @functools.partial(jax.jit, static_argnums=0)
    def table(meter):
        out = jt.cost_table(
            solver, (ops, bs), omegas, batch_size=batch_size, progress_meter=meter
        )
        return out.costs

    quiet = table(None)
    jax.effects_barrier()
    assert capfd.readouterr().out == ""
    loud = table(js.TextProgressMeter())
    jax.effects_barrier()
    assert "100.00%" in capfd.readouterr().out
    np.testing.assert_array_equal(quiet, loud)
