r"""A small class-conditional noise-prediction network for the 8x8 handwritten digits
that scikit-learn ships (`sklearn.datasets.load_digits`, 1797 images), its training
loop, and the shipped weights.

Train the shipped weights again (needs scikit-learn; a few minutes on a CPU):

```
python -m jaxsolve.diffusion._digits --out jaxsolve/diffusion/pretrained/digits_denoiser.jsv
```
"""

import argparse
import math
import pathlib
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._core import (
    AbstractProgressMeter,
    load,
    load_header,
    NoProgressMeter,
)
from ._schedule import VPSchedule


PRETRAINED = pathlib.Path(__file__).parent / "pretrained" / "digits_denoiser.jsv"
_TRAIN_SCHEDULE = VPSchedule.linear()
NUM_CLASSES = 10


def load_digits() -> tuple[Float[Array, "1797 64"], Int[Array, " 1797"]]:
    """The scikit-learn digits as `(images, labels)`: images flattened to 64 pixels
    and scaled from 0..16 to [-1, 1]. Needs scikit-learn (bundled data, no
    download)."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as e:
        raise ImportError(
            "The digits data come from scikit-learn: `pip install scikit-learn` "
            "(only needed to train or to compare with the data; the shipped weights "
            "load without it)."
        ) from e
    d = _load()
    x = jnp.asarray(d.data / 8.0 - 1.0, jnp.float32)
    return x, jnp.asarray(d.target, jnp.int32)


class DigitsDenoiser(eqx.Module):
    r"""A class-conditional noise-prediction MLP for 8x8 images, $\hat\varepsilon
    (x_t, t, c)$, with label $c \in \{0..9\}$ or the null label 10 (unconditional,
    trained by label dropout for classifier-free guidance).

    Trained with `VPSchedule.linear()` (the default, which it assumes).
    Input: the 64 pixels, low-frequency sinusoidal features of the noise level
    $\lambda_t/4$, a learned class embedding;
    `depth` residual blocks of width `width`, each re-injecting the time/class
    conditioning. Computes in its parameters' dtype (float32 by default) and returns
    the dtype of `x`.

    !!! example

        ```python
        import jax, jaxsolve as js
        net = js.diffusion.pretrained_digits()
        sched = js.diffusion.VPSchedule.linear()
        labels = jax.numpy.arange(8) % 10
        x_T = jax.random.normal(jax.random.key(0), (8, 64))
        cfg = js.diffusion.Guidance(net.model(), scale=3.0)
        sol = js.diffusion.sample(net.model(labels), x_T, sched, js.diffusion.DPMSolverPP(), 20, guidance=cfg)
        ```
    """

    inp: eqx.nn.Linear
    cond: list
    blocks: list
    out: eqx.nn.Linear
    embed: eqx.nn.Embedding
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    num_frequencies: int = eqx.field(static=True)

    def __init__(
        self,
        *,
        key: PRNGKeyArray,
        width: int = 256,
        depth: int = 3,
        embed_dim: int = 32,
        num_frequencies: int = 6,
        dtype: Any = jnp.float32,
    ):
        keys = jax.random.split(key, 3 + 2 * depth)
        self.width, self.depth, self.num_frequencies = width, depth, num_frequencies
        c_dim = 2 * num_frequencies + embed_dim
        self.embed = eqx.nn.Embedding(
            NUM_CLASSES + 1, embed_dim, key=keys[0], dtype=dtype
        )
        self.inp = eqx.nn.Linear(64 + c_dim, width, key=keys[1], dtype=dtype)
        self.cond = [
            eqx.nn.Linear(c_dim, width, key=keys[3 + 2 * i], dtype=dtype)
            for i in range(depth)
        ]
        self.blocks = [
            eqx.nn.Linear(width, width, key=keys[4 + 2 * i], dtype=dtype)
            for i in range(depth)
        ]
        out = eqx.nn.Linear(width, 64, key=keys[2], dtype=dtype)
        # Start near zero output: the first steps learn the scale.
        self.out = eqx.tree_at(lambda m: m.weight, out, out.weight * 0.1)

    @property
    def hyperparameters(self) -> dict[str, int]:
        return {
            "width": self.width,
            "depth": self.depth,
            "embed_dim": self.embed.weight.shape[1],
            "num_frequencies": self.num_frequencies,
        }

    def __call__(
        self,
        x: Float[Array, " 64"],
        t: Float[ArrayLike, ""],
        label: Int[ArrayLike, ""],
    ) -> Float[Array, " 64"]:
        dtype = self.inp.weight.dtype
        out_dtype = x.dtype
        x = x.astype(dtype)
        t = jnp.asarray(t).astype(dtype)
        # Condition on the noise level c = lambda_t / 4 of the training schedule (the
        # default linear VP), with low frequencies only: the network must be smooth in
        # t, or ODE samplers and adaptive reference solvers see a rough vector field.
        c_noise = _TRAIN_SCHEDULE.lambda_(t) / 4
        freqs = 2.0 ** jnp.arange(self.num_frequencies, dtype=dtype)
        tf = jnp.concatenate([jnp.sin(freqs * c_noise), jnp.cos(freqs * c_noise)])
        c = jnp.concatenate([tf, self.embed(jnp.asarray(label))])
        h = self.inp(jnp.concatenate([x, c]))
        for lin, cond in zip(self.blocks, self.cond):
            h = h + lin(jax.nn.silu(h + cond(c)))
        return self.out(jax.nn.silu(h)).astype(out_dtype)

    def model(self, labels: Int[ArrayLike, "*batch"] | None = None) -> "DigitsModel":
        """The batched model `(x, t) -> eps` for [`jaxsolve.diffusion.sample`][]:
        conditional on `labels` (one per sample, or one for all), unconditional (the
        null label) when `None`."""
        lab = jnp.asarray(NUM_CLASSES if labels is None else labels, jnp.int32)
        return DigitsModel(self, lab)


class DigitsModel(eqx.Module):
    """`DigitsDenoiser.model(labels)`: `(x of shape (batch, 64), t) -> eps`."""

    net: DigitsDenoiser
    labels: Int[Array, "*b"]

    def __call__(self, x: Float[Array, "batch 64"], t: Float[ArrayLike, ""]):
        labels = jnp.broadcast_to(self.labels, x.shape[:1])
        return jax.vmap(self.net, in_axes=(0, None, 0))(x, t, labels)


def train_digits(
    net: DigitsDenoiser,
    images: Float[ArrayLike, "n 64"],
    labels: Int[ArrayLike, " n"],
    key: PRNGKeyArray,
    *,
    steps: int = 10_000,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    p_uncond: float = 0.1,
    ema: float = 0.999,
    progress_meter: AbstractProgressMeter | None = None,
) -> tuple[DigitsDenoiser, Float[Array, " steps"]]:
    r"""Train a [`jaxsolve.diffusion.DigitsDenoiser`][] by denoising score matching,

    $$\min_\theta\; E_{x_0, c, t, \varepsilon}\,\|\hat\varepsilon_\theta(\alpha_t x_0
    + \sigma_t\varepsilon, t, c') - \varepsilon\|^2,$$

    on `VPSchedule.linear()`, $t \sim U[t_\min, 1]$, $c' = c$ or the null label with probability `p_uncond`
    (classifier-free guidance training). Adam with a cosine learning-rate decay,
    one `lax.scan`; returns the exponential moving average (`ema`) of the weights
    and the per-step losses.
    """
    schedule = _TRAIN_SCHEDULE
    images = jnp.asarray(images, net.inp.weight.dtype)
    labels = jnp.asarray(labels, jnp.int32)
    if images.ndim != 2 or images.shape[1] != 64 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"`images` must be (n, 64) with `labels` (n,), got {images.shape} and "
            f"{labels.shape}."
        )
    if steps < 1 or batch_size < 1:
        raise ValueError(
            f"`steps` and `batch_size` must be >= 1, got {steps}, {batch_size}."
        )
    if not 0 <= p_uncond < 1:
        raise ValueError(f"`p_uncond` must lie in [0, 1), got {p_uncond}.")
    lr = optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05)
    opt = optax.adam(lr)
    return _train(
        net,
        images,
        labels,
        key,
        steps,
        batch_size,
        p_uncond,
        ema,
        schedule,
        opt,
        progress_meter,
    )


@eqx.filter_jit
def _train(
    net, images, labels, key, steps, batch_size, p_uncond, ema, schedule, opt, meter
):
    meter = NoProgressMeter() if meter is None else meter
    params, static = eqx.partition(net, eqx.is_inexact_array)
    dtype = images.dtype
    t_min = schedule.t_min.astype(dtype)

    def loss_fn(p, x0, lab, t, noise):
        model = eqx.combine(p, static)
        a, s = schedule.alpha(t), schedule.sigma(t)
        xt = a[:, None] * x0 + s[:, None] * noise
        pred = jax.vmap(model)(xt, t, lab)
        return jnp.mean((pred - noise) ** 2)

    def body(carry, k):
        p, ema_p, opt_state, mstate, i = carry
        k1, k2, k3, k4 = jax.random.split(k, 4)
        idx = jax.random.randint(k1, (batch_size,), 0, images.shape[0])
        x0, lab = images[idx], labels[idx]
        drop = jax.random.bernoulli(k2, p_uncond, (batch_size,))
        lab = jnp.where(drop, NUM_CLASSES, lab)
        t = jax.random.uniform(k3, (batch_size,), dtype, t_min, 1.0)
        noise = jax.random.normal(k4, x0.shape, dtype)
        loss, g = jax.value_and_grad(loss_fn)(p, x0, lab, t, noise)
        # optax mixes Python floats with int32 step counts (bias corrections):
        # allow that under strict dtype promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = opt.update(g, opt_state, p)
        p = optax.apply_updates(p, updates)
        ema_p = jax.tree.map(lambda e, q: ema * e + (1 - ema) * q, ema_p, p)
        frac = (i + 1).astype(jnp.asarray(0.0).dtype) / steps
        mstate = meter.step(mstate, frac)
        return (p, ema_p, opt_state, mstate, i + 1), loss

    with jax.numpy_dtype_promotion("standard"):
        opt_state = opt.init(params)
    init = (params, params, opt_state, meter.init(), jnp.array(0, jnp.int32))
    keys = jax.random.split(key, steps)
    (p, ema_p, _, mstate, _), losses = jax.lax.scan(body, init, keys)
    meter.close(mstate)
    return eqx.combine(ema_p, static), losses


def pretrained_digits(path: str | pathlib.Path | None = None) -> DigitsDenoiser:
    """The shipped [`jaxsolve.diffusion.DigitsDenoiser`][] (or one saved with
    `jaxsolve.save` at `path`), rebuilt from the file's header and loaded with
    `jaxsolve.load` (no scikit-learn needed)."""
    path = PRETRAINED if path is None else pathlib.Path(path)
    hyper = dict(load_header(path)["hyperparameters"])
    hyper.pop("training", None)
    skeleton = eqx.filter_eval_shape(
        lambda: DigitsDenoiser(key=jax.random.key(0), **hyper)
    )
    return load(path, like=skeleton)


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=PRETRAINED)
    parser.add_argument("--steps", type=int, default=12_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Under `python -m` this file runs as `__main__`: use the package's classes so
    # the saved file names `jaxsolve.diffusion._digits.DigitsDenoiser`.
    from jaxsolve._core import save, TextProgressMeter
    from jaxsolve.diffusion._digits import DigitsDenoiser, load_digits, train_digits

    images, labels = load_digits()
    key = jax.random.key(args.seed)
    kinit, ktrain = jax.random.split(key)
    net = DigitsDenoiser(key=kinit)
    t0 = time.perf_counter()
    net, losses = train_digits(
        net,
        images,
        labels,
        ktrain,
        steps=args.steps,
        batch_size=args.batch_size,
        progress_meter=TextProgressMeter(),
    )
    losses.block_until_ready()
    seconds = time.perf_counter() - t0
    tail = float(jnp.mean(losses[-500:]))
    print(
        f"trained {args.steps} steps in {seconds:.1f} s; mean loss (last 500) {tail:.4f}"
    )
    hyper = dict(net.hyperparameters)
    hyper["training"] = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "seconds": round(seconds, 1),
        "final_loss": round(tail, 5),
        "num_parameters": int(
            sum(x.size for x in jax.tree.leaves(eqx.filter(net, eqx.is_array)))
        ),
    }
    save(args.out, net, hyperparameters=hyper)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.2f} MiB)")
    assert math.isfinite(tail)


if __name__ == "__main__":
    _main()
