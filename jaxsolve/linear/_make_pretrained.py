"""Regenerate the DCDM networks shipped in `jaxsolve/linear/pretrained/`.

    python -m jaxsolve.linear._make_pretrained              # every model
    python -m jaxsolve.linear._make_pretrained poisson2d    # one model
    python -m jaxsolve.linear._make_pretrained --out /tmp/models --steps 100

Every model is trained by [`jaxsolve.linear.train_dcdm`][] from a fixed key, in
float32, on the CPU; the recipe, the wall-clock and CPU training time and the final
loss are stored in the file's header (`jaxsolve.load_header`).
"""

import argparse
import os
import pathlib
import platform
import sys
import time


# Each recipe: the network's constructor arguments and the training settings.
RECIPES: dict[str, dict] = {
    "poisson2d": {
        "network": {"ndim": 2, "width": 16, "depth": 1},
        "grid": (32, 32),
        "steps": 1000,
        "batch_size": 16,
        "seed": 0,
    },
    "poisson3d": {
        "network": {"ndim": 3, "width": 8, "depth": 1},
        "grid": (16, 16, 16),
        "steps": 250,
        "batch_size": 8,
        "seed": 1,
    },
}


def make(name: str, out: pathlib.Path, steps: int | None = None) -> pathlib.Path:
    import jax
    import jax.numpy as jnp

    import jaxsolve as js

    recipe = dict(RECIPES[name])
    if steps is not None:
        recipe["steps"] = steps
    key_net, key_train = jax.random.split(jax.random.key(recipe["seed"]))
    net = js.linear.DCDMNetwork(key=key_net, **recipe["network"])
    op = js.linear.poisson(recipe["grid"], dtype=jnp.float32)
    c0, t0 = time.process_time(), time.perf_counter()
    net, losses = js.linear.train_dcdm(
        net,
        op,
        key_train,
        steps=recipe["steps"],
        batch_size=recipe["batch_size"],
        progress_meter=js.TextProgressMeter(),
    )
    losses = jax.block_until_ready(losses)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    tail = max(1, recipe["steps"] // 20)
    training = {
        "operator": f"js.linear.poisson({tuple(recipe['grid'])}, dtype=float32)",
        "grid": list(recipe["grid"]),
        "steps": recipe["steps"],
        "batch_size": recipe["batch_size"],
        "seed": recipe["seed"],
        "optimizer": "adam, cosine decay 1e-3 -> 1e-4 (train_dcdm default)",
        "data": "train_dcdm defaults: 400 Lanczos Ritz vectors, low 55% x9, 25% noise",
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "loss_first": float(losses[0]),
        "loss_last_mean": float(jnp.mean(losses[-tail:])),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "jax": jax.__version__,
    }
    path = out / f"{name}.jsv"
    js.save(
        path,
        net,
        hyperparameters={"network": net.hyperparameters(), "training": training},
    )
    print(f"{name}: {wall:.0f} s wall, {cpu:.0f} s CPU, loss {training['loss_first']:.3g}"
          f" -> {training['loss_last_mean']:.3g}; wrote {path}")  # fmt: skip
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help=f"models (default: all of {list(RECIPES)})"
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).resolve().parent / "pretrained",
    )
    parser.add_argument("--steps", type=int, default=None, help="override the recipe")
    args = parser.parse_args(argv)
    for name in args.names or list(RECIPES):
        if name not in RECIPES:
            print(
                f"unknown model {name!r}; choose from {list(RECIPES)}", file=sys.stderr
            )
            return 2
        make(name, args.out, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
