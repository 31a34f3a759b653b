"""A small Light Schrödinger Bridge run for `python -m jaxsolve demo`."""

import time

import jax
import jax.numpy as jnp

from .._core import TextProgressMeter
from ._benchmark import cbw2_uvp, eot_benchmark, gaussian_eot
from ._fit import fit
from ._lightsb import LightSB


def demo_rows(quick: bool = True) -> list[dict[str, object]]:
    """LightSB (K = 50, diagonal) fitted on a 2-D entropic-OT benchmark pair with
    known plan (eps = 0.1), against the Gaussian closed-form plan: cBW2-UVP in % of
    the target variance (lower is better). About 10 s on a 2-core CPU with
    `quick=True` (3000 steps; 10 000 otherwise)."""
    steps = 3000 if quick else 10_000
    eps = 0.1
    dtype = jnp.float32
    bench = eot_benchmark(jax.random.key(0), 2, eps, dtype=dtype)
    x, y = bench.sample_plan(jax.random.key(1), 20_000)
    y = jax.random.permutation(jax.random.key(2), y)  # unpaired
    model = LightSB(2, 50, eps, key=jax.random.key(3), dtype=dtype)
    # The one long call: show its progress (a few lines, before the table).
    print(f"bridge: fitting LightSB, {steps} Adam steps", flush=True)
    meter = TextProgressMeter(minimum_increase=0.25)
    t0 = time.perf_counter()
    fitted, losses = fit(
        model, x, y, jax.random.key(4), steps=steps, progress_meter=meter
    )
    jax.block_until_ready(losses)
    seconds = time.perf_counter() - t0
    jax.effects_barrier()  # the meter's last line before anything else is printed
    key = jax.random.key(5)
    uvp = float(cbw2_uvp(fitted, bench, key))
    gauss = float(cbw2_uvp(gaussian_eot(x, y, eps), bench, key))
    problem = f"EOT benchmark D=2, eps={eps} (known plan)"
    ok = bool(jnp.isfinite(losses).all()) and uvp < 2.0
    return [
        {
            "family": "bridge",
            "problem": problem,
            "method": f"LightSB K=50, {steps} Adam steps",
            "cBW2-UVP %": round(uvp, 3),
            "seconds": round(seconds, 2),
            "result": "ok" if ok else "FAILED",
        },
        {
            "family": "bridge",
            "problem": problem,
            "method": "Gaussian closed-form EOT (baseline)",
            "cBW2-UVP %": round(gauss, 3),
            "seconds": None,
            "result": "ok" if gauss == gauss else "FAILED",
        },
    ]
