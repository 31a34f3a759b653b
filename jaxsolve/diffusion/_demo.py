"""Divergence under strong guidance at 8 NFE on the exact Gaussian-mixture test bed, and
what momentum does about it, for `python -m jaxsolve demo`."""

import jax
import jax.numpy as jnp

from .._core import RESULTS
from ._mixture import GaussianMixture
from ._sample import Guidance, sample
from ._samplers import DPMSolverPP, GHVB, HeavyBall, PLMS
from ._schedule import VPSchedule


def demo_rows(quick: bool = True) -> list[dict[str, object]]:
    r"""D = 64 two-class Gaussian mixture, VP linear schedule, classifier-free guidance
    $w = 15$, 8 steps on the uniform-in-$t$ grid: endpoint RMSE against the float64
    diffrax reference and the fraction of samples the driver flags as diverged. A row
    is "ok" when the sampler returned `RESULTS.successful` and, for the momentum
    methods, no sample diverged (the issue's goal). About 10 s with `quick`."""
    n = 64 if quick else 512
    dtype = jnp.asarray(0.0).dtype
    gm = GaussianMixture.example(dim=64)
    sched = VPSchedule.linear()
    x_T = jax.random.normal(jax.random.key(64), (n, 64), dtype)
    labels = jnp.arange(n) % 2
    cond, uncond = gm.model(sched, labels), gm.model(sched)
    w = 15.0
    ref = None
    if dtype == jnp.float64:
        ref = gm.reference(x_T, sched, label=labels, guidance_scale=w)
    methods = {
        "PLMS4": (PLMS(4), False),
        "PLMS4 + heavy ball 0.5": (HeavyBall(PLMS(4), 0.5), True),
        "GHVB 1.5": (GHVB.from_order_number(1.5), True),
        "DPM-Solver++(2M)": (DPMSolverPP(), False),
    }
    rows: list[dict[str, object]] = []
    for name, (sampler, momentum) in methods.items():
        sol = sample(
            cond, x_T, sched, sampler, 8, guidance=Guidance(uncond, w), throw=False
        )
        frac = float(jnp.mean(sol.stats["diverged"]))
        rmse = (
            None
            if ref is None
            else float(jnp.sqrt(jnp.mean(jnp.sum((sol.value - ref) ** 2, axis=1))))
        )
        ok = bool(sol.result == RESULTS.successful) and (not momentum or frac == 0)
        rows.append(
            {
                "family": "diffusion",
                "problem": f"2-class GMM D=64, w={w:g}, 8 NFE, {n} samples",
                "method": name,
                "RMSE": None if rmse is None else round(rmse, 3),
                "diverged %": round(100 * frac, 1),
                "result": "ok" if ok else "FAILED",
            }
        )
    return rows
