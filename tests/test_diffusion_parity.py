"""Parity of the base samplers with diffusers' schedulers (torch CPU, float64): same
analytic model, same timesteps, same x_T. Skipped when diffusers is not installed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve.diffusion as jd


@pytest.mark.slow
# diffusers (0.42) passes torch tensors to np.interp: a NumPy 2 DeprecationWarning.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_parity_with_diffusers():
    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    gm = jd.GaussianMixture.example(dim=2)
    ddim = diffusers.DDIMScheduler(
        beta_schedule="linear", clip_sample=False, set_alpha_to_one=False
    )
    abar = ddim.alphas_cumprod.double().numpy()
    sched = jd.VPSchedule.discrete(1 - abar / np.r_[1.0, abar[:-1]])
    x_T = jax.random.normal(jax.random.key(0), (6, 2))
    labels = jnp.arange(6) % 2
    cond, uncond = gm.model(sched, labels), gm.model(sched)
    w = 7.5
    guided = jax.jit(lambda x, t: uncond(x, t) + w * (cond(x, t) - uncond(x, t)))
    pndm = diffusers.PNDMScheduler(
        beta_schedule="linear", skip_prk_steps=True, set_alpha_to_one=False
    )
    dpm = diffusers.DPMSolverMultistepScheduler(
        beta_schedule="linear",
        algorithm_type="dpmsolver++",
        solver_order=2,
        final_sigmas_type="sigma_min",
        timestep_spacing="trailing",
    )
    n = 10
    cases = [
        (ddim, jd.DDIM(), "leading", 1e-12),
        (pndm, jd.PLMS(4, start="pndm"), "leading", 1e-11),
        # diffusers' DPM-Solver computes its update in float32
        (dpm, jd.DPMSolverPP(2), "trailing", 1e-5),
    ]
    for sch, ours, spacing, tol in cases:
        sch.register_to_config(
            timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0
        )
        if hasattr(sch, "final_alpha_cumprod"):
            sch.alphas_cumprod = sch.alphas_cumprod.double()
            sch.final_alpha_cumprod = sch.final_alpha_cumprod.double()
        sch.set_timesteps(n)
        x = torch.from_numpy(np.array(x_T))
        for k in sch.timesteps:
            eps = np.array(guided(jnp.asarray(x.numpy()), (int(k) + 1) / 1000))
            x = sch.step(torch.from_numpy(eps), k, x).prev_sample
        theirs = x.double().numpy()
        mine = jd.sample(
            cond,
            x_T,
            sched,
            ours,
            n,
            time_grid=spacing,
            guidance=jd.Guidance(uncond, w),
        ).value
        rel = np.linalg.norm(np.asarray(mine) - theirs) / np.linalg.norm(theirs)
        assert rel < tol, (type(sch).__name__, rel)
