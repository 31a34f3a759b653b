"""Heavy-ball diffusion samplers (Wizadwongsa et al., ICLR 2024): divergence artifacts
of high-order multistep samplers under strong classifier-free guidance at low NFE,
and what momentum does about them, side by side with the figures of our replay of the
setup (shared/notes/generative.md, section 4.3), plus parity with diffusers.

1. Exact test bed: Gaussian mixtures in D = 2 and 64 (2 classes x 3 components, means
   U[-0.8, 0.8]^D, std 0.05), VP linear schedule, guidance w in {1, 7.5, 15} with the
   exact conditional/unconditional noise predictions; reference = the probability-flow
   ODE solved by diffrax (Dopri8, rtol = atol = 1e-10, float64) from the same x_T.
2. A learned model: the shipped class-conditional digits denoiser (8x8 scikit-learn
   digits); reference = the same ODE with the network, diffrax rtol = atol = 1e-7.
3. Parity: diffusers' DDIMScheduler, PNDMScheduler (PLMS) and
   DPMSolverMultistepScheduler driven on CPU torch with the same analytic model,
   timesteps and x_T (float64), against ours.

Metrics per configuration (samplers in float64): endpoint RMSE = sqrt(mean_i
||x_i - ref_i||^2) over samples; diverged = fraction of samples that are non-finite or
have max|x_i| > 2 max|ref_i| (the note's criterion); `drv` = the driver's own per-sample
flag (stats["diverged"], no reference needed); artifact score = mean of z 1[z > 3] with
z = |x - mean(ref)| / std(ref) per coordinate; order = log2(e_25 / e_50).

Usage: `python bench/diffusion_momentum.py [--quick] [--out PATH] [--samples N]
[--skip-parity] [--png PATH]`.
Prints tables and writes bench/results/diffusion_momentum.json (with --quick a
temporary file unless --out is given).
"""

import argparse
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


jax.config.update("jax_enable_x64", True)

from _common import (  # noqa: E402
    command_line,
    format_table,
    machine_info,
    versions,
    write_json,
)

import jaxsolve.diffusion as jd  # noqa: E402


RESULTS_PATH = Path(__file__).parent / "results" / "diffusion_momentum.json"
NFES = (6, 8, 10, 15, 20, 25, 50)
SCALES = (1.0, 7.5, 15.0)
DIGIT_SCALES = (1.0, 3.0, 7.5)
GRIDS = ("uniform", "logsnr")

# Figures of our replay (research note 4.3): D = 64, uniform-t grid, w = 15,
# "RMSE / diverged fraction" (per-sample L2 error, RMS over samples).
EXPECTED = {
    8: {
        "DDIM": (0.50, 0),
        "DPM++2M": (0.34, 0),
        "DPM++2M+HB0.8": (0.43, 0),
        "PLMS4": (25, 0.067),
        "PLMS4+HB0.8": (7.0, 0.008),
        "PLMS4+HB0.5": (0.64, 0),
        "GHVB3.8": (21, 0.048),
        "GHVB2.5": (0.44, 0),
        "GHVB1.5": (0.43, 0),
    },
    10: {
        "DDIM": (0.46, 0),
        "DPM++2M": (0.32, 0),
        "DPM++2M+HB0.8": (0.41, 0),
        "PLMS4": (6.7, 0.012),
        "PLMS4+HB0.8": (0.48, 0),
        "PLMS4+HB0.5": (0.54, 0),
        "GHVB3.8": (1.1, 0.002),
        "GHVB2.5": (0.32, 0),
        "GHVB1.5": (0.40, 0),
    },
    15: {
        "DDIM": (0.42, 0),
        "DPM++2M": (0.26, 0),
        "DPM++2M+HB0.8": (0.37, 0),
        "PLMS4": (0.35, 0),
        "PLMS4+HB0.8": (0.32, 0),
        "PLMS4+HB0.5": (0.46, 0),
        "GHVB3.8": (0.29, 0),
        "GHVB2.5": (0.26, 0),
        "GHVB1.5": (0.32, 0),
    },
    50: {
        "DDIM": (0.27, 0),
        "DPM++2M": (0.011, 0),
        "DPM++2M+HB0.8": (0.12, 0),
        "PLMS4": (0.076, 0),
        "PLMS4+HB0.8": (0.15, 0),
        "PLMS4+HB0.5": (0.31, 0),
        "GHVB3.8": (0.078, 0),
        "GHVB2.5": (0.097, 0),
        "GHVB1.5": (0.12, 0),
    },
}
# D = 64, logSNR grid, w = 15: diverged fractions at 8 / 10 NFE.
EXPECTED_LOGSNR = {
    "PLMS4": (1.0, 0.50),
    "GHVB3.8": (1.0, 0.45),
    "GHVB2.5": (0.56, 0.08),
    "PLMS4+HB0.8": (0.89, 0.18),
    "PLMS4+HB0.5": (0.0, 0.0),
    "GHVB1.5": (0.0, 0.0),
}


def samplers(lower_order_final=True):
    dpm = jd.DPMSolverPP(2, lower_order_final=lower_order_final)
    return {
        "DDIM": jd.DDIM(),
        "DPM++2M": dpm,
        "DPM++2M+HB0.8": jd.HeavyBall(dpm, 0.8),
        "DPM++2M+HB0.5": jd.HeavyBall(dpm, 0.5),
        "PLMS4": jd.PLMS(4),
        "PLMS4+HB0.8": jd.HeavyBall(jd.PLMS(4), 0.8),
        "PLMS4+HB0.5": jd.HeavyBall(jd.PLMS(4), 0.5),
        "GHVB3.8": jd.GHVB.from_order_number(3.8),
        "GHVB2.5": jd.GHVB.from_order_number(2.5),
        "GHVB1.5": jd.GHVB.from_order_number(1.5),
    }


# One compiled sampler per (sampler structure, NFE, shapes): the grid and the
# guidance scale are arrays, the momentum beta an array field.
@eqx.filter_jit
def _run(cond, uncond, x_T, schedule, sampler, n, grid, w):
    sol = jd.sample(
        cond,
        x_T,
        schedule,
        sampler,
        n,
        time_grid=grid,
        guidance=jd.Guidance(uncond, w),
        throw=False,
    )
    return sol.value, sol.stats["diverged"]


def metrics(x, diverged, ref):
    x, ref = np.asarray(x), np.asarray(ref)
    finite = np.all(np.isfinite(x), axis=1)
    rmse = float(np.sqrt(np.mean(np.sum((x - ref) ** 2, axis=1))))
    big = ~(np.max(np.abs(x), axis=1) <= 2 * np.max(np.abs(ref), axis=1))
    mean, std = ref.mean(0), ref.std(0) + 1e-12
    z = np.abs(np.where(np.isfinite(x), x, 1e6) - mean) / std
    return {
        "rmse": rmse if np.all(finite) else float("inf"),
        "diverged": float(np.mean(big | ~finite)),
        "driver_diverged": float(np.mean(np.asarray(diverged))),
        "artifact": float(np.mean(z * (z > 3))),
    }


def sweep(cond, uncond, x_T, schedule, refs, nfes, scales, grids, names):
    """refs[(w, grid)] -> reference endpoints (grids here all start at t = 1)."""
    rows = []
    table = samplers()
    for name in names:
        sampler = table[name]
        for n in nfes:
            for grid in grids:
                g = jd.timesteps(schedule, n, grid)
                for w in scales:
                    x, div = _run(cond, uncond, x_T, schedule, sampler, n, g, w)
                    m = metrics(x, div, refs[(w, grid)])
                    rows.append({"sampler": name, "nfe": n, "grid": grid, "w": w, **m})
    # measured order between 25 and 50 NFE
    by = {(r["sampler"], r["nfe"], r["grid"], r["w"]): r for r in rows}
    for r in rows:
        a = by.get((r["sampler"], 25, r["grid"], r["w"]))
        b = by.get((r["sampler"], 50, r["grid"], r["w"]))
        if a and b and np.isfinite(a["rmse"]) and b["rmse"] > 0:
            r["order_25_50"] = float(np.log2(a["rmse"] / b["rmse"]))
    return rows


def mixture_bench(dim, n_samples, nfes, scales, grids, names):
    gm = jd.GaussianMixture.example(dim=dim)
    sched = jd.VPSchedule.linear()
    x_T = jax.random.normal(jax.random.key(dim), (n_samples, dim))
    labels = jnp.arange(n_samples) % 2
    cond, uncond = gm.model(sched, labels), gm.model(sched)
    t0 = time.perf_counter()
    refs = {}
    for w in scales:
        ref = gm.reference(x_T, sched, label=labels, guidance_scale=w)
        for grid in grids:
            refs[(w, grid)] = ref
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = sweep(cond, uncond, x_T, sched, refs, nfes, scales, grids, names)
    return rows, {"reference_s": t_ref, "sweep_s": time.perf_counter() - t0}


def digits_bench(n_samples, nfes, scales, grids, names, tol=1e-7):
    net = jd.pretrained_digits()
    sched = jd.VPSchedule.linear()
    labels = jnp.arange(n_samples) % 10
    x_T = jax.random.normal(jax.random.key(1), (n_samples, 64))
    cond, uncond = net.model(labels), net.model()
    t0 = time.perf_counter()
    refs = {}
    for w in scales:
        ref = jd.ode_reference(
            cond, x_T, sched, guidance=jd.Guidance(uncond, w), rtol=tol, atol=tol
        )
        for grid in grids:
            refs[(w, grid)] = ref
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = sweep(cond, uncond, x_T, sched, refs, nfes, scales, grids, names)
    return rows, {"reference_s": t_ref, "sweep_s": time.perf_counter() - t0}


# --- parity with diffusers -------------------------------------------------------------


def parity(nfes, n_samples=64, dim=2, w=7.5):
    try:
        import diffusers
        import torch
    except ImportError as e:
        print(f"\n[parity] skipped: torch/diffusers not importable ({e}).")
        return None
    torch.set_num_threads(1)
    gm = jd.GaussianMixture.example(dim=dim)
    base = diffusers.DDIMScheduler(beta_schedule="linear", set_alpha_to_one=False)
    # Our discrete schedule from diffusers' own (float32) alphas_cumprod, in float64.
    abar = base.alphas_cumprod.double().numpy()
    betas = 1 - abar / np.r_[1.0, abar[:-1]]
    sched = jd.VPSchedule.discrete(betas)
    x_T = jax.random.normal(jax.random.key(11), (n_samples, dim))
    labels = jnp.arange(n_samples) % 2
    cond, uncond = gm.model(sched, labels), gm.model(sched)
    guided = jax.jit(lambda x, t: uncond(x, t) + w * (cond(x, t) - uncond(x, t)))

    def eps_torch(x, k):
        t = (int(k) + 1) / 1000
        return torch.from_numpy(np.array(guided(jnp.asarray(x.numpy()), t)))

    def run_diffusers(sch, n):
        sch.set_timesteps(n)
        x = torch.from_numpy(np.array(x_T)).double()
        for k in sch.timesteps:
            x = sch.step(eps_torch(x, k), k, x).prev_sample
        return x.double().numpy(), sch.timesteps.numpy()

    def to64(sch):
        # float64 throughout (diffusers keeps alphas_cumprod in float32)
        sch.alphas_cumprod = sch.alphas_cumprod.double()
        if hasattr(sch, "final_alpha_cumprod"):
            sch.final_alpha_cumprod = sch.final_alpha_cumprod.double()
        return sch

    rows = []
    for n in nfes:
        cases = []
        for spacing in ("leading", "trailing"):
            off = 1 if spacing == "leading" else 0
            cases.append(
                (
                    f"DDIM {spacing}",
                    to64(
                        diffusers.DDIMScheduler(
                            beta_schedule="linear",
                            clip_sample=False,
                            set_alpha_to_one=False,
                            timestep_spacing=spacing,
                            steps_offset=off,
                        )
                    ),
                    jd.DDIM(),
                    spacing,
                )
            )
            cases.append(
                (
                    f"PNDM/PLMS {spacing}",
                    to64(
                        diffusers.PNDMScheduler(
                            beta_schedule="linear",
                            skip_prk_steps=True,
                            set_alpha_to_one=False,
                            timestep_spacing=spacing,
                            steps_offset=off,
                        )
                    ),
                    jd.PLMS(4, start="pndm"),
                    spacing,
                )
            )
        cases.append(
            (
                "DPMSolver++2M trailing",
                diffusers.DPMSolverMultistepScheduler(
                    beta_schedule="linear",
                    algorithm_type="dpmsolver++",
                    solver_order=2,
                    solver_type="midpoint",
                    lower_order_final=True,
                    final_sigmas_type="sigma_min",
                    timestep_spacing="trailing",
                ),
                jd.DPMSolverPP(2, lower_order_final=n < 15),
                "trailing",
            )
        )
        for name, sch, ours, spacing in cases:
            theirs, ks = run_diffusers(sch, n)
            grid = jd.timesteps(sched, n, spacing)
            mine = jd.sample(
                cond,
                x_T,
                sched,
                ours,
                n,
                time_grid=grid,
                guidance=jd.Guidance(uncond, w),
            ).value
            rel = float(
                np.linalg.norm(np.asarray(mine) - theirs) / np.linalg.norm(theirs)
            )
            rows.append({"scheduler": name, "nfe": n, "rel_diff": rel})
    return {"rows": rows, "dim": dim, "w": w, "samples": n_samples}


def digits_grid_png(path, n_per_class=2, nfe=8, w=3.0, grid="uniform"):
    """The divergence artifacts on the digits model, as an image grid."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    net = jd.pretrained_digits()
    sched = jd.VPSchedule.linear()
    labels = jnp.tile(jnp.arange(10), n_per_class)
    x_T = jax.random.normal(jax.random.key(5), (labels.size, 64))
    cond, uncond = net.model(labels), net.model()
    names = ["DDIM", "DPM++2M", "PLMS4", "PLMS4+HB0.5", "GHVB3.8", "GHVB1.5"]
    table = samplers()
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 1.4 * len(names)))
    for ax, name in zip(axes, names):
        g = jd.timesteps(sched, nfe, grid)
        x, _ = _run(cond, uncond, x_T, sched, table[name], nfe, g, w)
        img = np.clip(np.asarray(x), -1, 1).reshape(n_per_class, 10, 8, 8)
        img = img.transpose(0, 2, 1, 3).reshape(8 * n_per_class, 80)
        ax.imshow(-img, cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"{name}, {nfe} NFE, w = {w}, {grid} grid", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short run (CI)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument(
        "--png", type=Path, default=None, help="also save a grid of digit samples"
    )
    args = parser.parse_args()
    quick = args.quick
    out = args.out or (
        Path(tempfile.gettempdir()) / "diffusion_momentum_quick.json"
        if quick
        else RESULTS_PATH
    )
    n = args.samples or (128 if quick else 512)
    t_start = time.perf_counter()
    names = list(samplers())
    if quick:
        mix_cfg = [(64, (8,), (15.0,), GRIDS)]
        dig_cfg = (32, (8,), (3.0,), ("uniform",), ["PLMS4", "PLMS4+HB0.5"], 1e-5)
        par_nfes = (10,)
    else:
        mix_cfg = [(2, NFES, SCALES, GRIDS), (64, NFES, SCALES, GRIDS)]
        # On the learned model w = 15 drives even the exact ODE far outside the data
        # range; w = 3 is where the base methods' instability shows.
        dig_cfg = (256, NFES, DIGIT_SCALES, GRIDS, names, 1e-7)
        par_nfes = (10, 25)
    results = {
        "command": command_line(),
        "quick": quick,
        "samples": n,
        "machine": machine_info(),
        "versions": versions(["jax", "equinox", "diffrax", "torch", "diffusers"]),
        "expected_uniform_w15_d64": {str(k): v for k, v in EXPECTED.items()},
        "expected_logsnr_w15_d64": EXPECTED_LOGSNR,
        "mixture": {},
    }
    cols = [
        ("sampler", "sampler", "s"),
        ("NFE", "nfe", "d"),
        ("grid", "grid", "s"),
        ("w", "w", ".1f"),
        ("RMSE", "rmse", ".3g"),
        ("diverged", "diverged", ".3f"),
        ("drv", "driver_diverged", ".3f"),
        ("artifact", "artifact", ".3g"),
        ("order", "order_25_50", ".2f"),
        ("note RMSE", "exp_rmse", ".3g"),
        ("note div", "exp_div", ".3f"),
    ]
    for dim, nfes, scales, grids in mix_cfg:
        rows, timing = mixture_bench(dim, n, nfes, scales, grids, names)
        for r in rows:
            if dim == 64 and r["w"] == 15.0:
                if r["grid"] == "uniform" and r["nfe"] in EXPECTED:
                    exp = EXPECTED[r["nfe"]].get(r["sampler"])
                    if exp:
                        r["exp_rmse"], r["exp_div"] = exp
                if r["grid"] == "logsnr" and r["nfe"] in (8, 10):
                    exp = EXPECTED_LOGSNR.get(r["sampler"])
                    if exp:
                        r["exp_div"] = exp[0 if r["nfe"] == 8 else 1]
        results["mixture"][f"D={dim}"] = {"rows": rows, "timing": timing}
        print(f"\n== Gaussian mixture D = {dim}, {n} samples ({timing})")
        show = [r for r in rows if r["w"] == max(scales) or quick]
        print(format_table(show, cols))
        write_json(str(out), results)
    ns, nfes, scales, grids, dnames, tol = dig_cfg
    rows, timing = digits_bench(ns, nfes, scales, grids, dnames, tol)
    results["digits"] = {"rows": rows, "timing": timing, "samples": ns}
    print(f"\n== Digits denoiser (learned), {ns} samples ({timing})")
    print(format_table([r for r in rows if r["w"] == 3.0], cols[:9]))
    if args.png:
        results["digits"]["image"] = digits_grid_png(args.png)
    write_json(str(out), results)
    if not args.skip_parity:
        par = parity(par_nfes)
        if par is not None:
            results["parity"] = par
            print("\n== Parity with diffusers (same model, timesteps, x_T; float64)")
            print(
                format_table(
                    par["rows"],
                    [
                        ("scheduler", "scheduler", "s"),
                        ("NFE", "nfe", "d"),
                        ("rel. diff", "rel_diff", ".2e"),
                    ],
                )
            )
            print("goal: <= 1e-5")
    results["wall_s"] = time.perf_counter() - t_start
    write_json(str(out), results)
    print(f"\nwrote {out} in {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
