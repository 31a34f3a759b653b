r"""The convolutional network of the deep conjugate direction method (DCDM).

A fully convolutional multilevel network on 2-D or 3-D grids: one set of weights runs on
any grid size, and its coarse levels share their weights, so the number of levels (and
with it the receptive field) grows with the grid, as a multigrid V-cycle's does.
"""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float, PRNGKeyArray


def _conv(
    ndim: int, cin: int, cout: int, kernel: int, key: PRNGKeyArray
) -> eqx.nn.Conv:
    # No biases: the network is then positively homogeneous, f(c r) = c f(r) for
    # c > 0, so neither the input's scale nor the depth of the recursion (the grid
    # size) shifts its operating point; this is what lets one set of weights
    # transfer across grid sizes.
    return eqx.nn.Conv(
        ndim,
        cin,
        cout,
        kernel,
        padding=kernel // 2,
        use_bias=False,
        key=key,
        dtype=jnp.float32,
    )


def _apply(conv: eqx.nn.Conv, h: Array) -> Array:
    """Apply a bias-free, stride-1, "same"-padded convolution to a (C, *grid) array.

    Written as shifted slices contracted with `einsum` rather than
    `lax.conv_general_dilated`: XLA's CPU backend runs the latter about 10x slower
    inside a while loop (the solver's loop) than outside it (measured: 19 ms against
    1.5 ms for one 16-channel 3x3 convolution on 64^2), whereas dot products keep
    their speed. The weights keep equinox's layout (out, in, *kernel).
    """
    w = conv.weight
    k = w.shape[2]
    grid = h.shape[1:]
    if k == 1:
        return jnp.einsum("oc,c...->o...", w.reshape(w.shape[:2]), h)
    pad = k // 2
    hp = jnp.pad(h, [(0, 0)] + [(pad, pad)] * len(grid))
    offsets = list(itertools.product(range(k), repeat=len(grid)))

    def window(off):
        return hp[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(off, grid))]

    if len(grid) == 2:
        # im2col: one contraction over (in channel, offset).
        patches = jnp.stack([window(off) for off in offsets], axis=1)
        return jnp.einsum("ock,ck...->o...", w.reshape(*w.shape[:2], -1), patches)
    # 3-D: accumulate per offset (im2col would hold 27 copies of the features).
    out = jnp.zeros((w.shape[0], *grid), h.dtype)
    for off in offsets:
        out = out + jnp.einsum("oc,c...->o...", w[(Ellipsis, *off)], window(off))
    return out


class _ResidualBlock(eqx.Module):
    """Pre-activation residual block, $h + C_2(\\mathrm{relu}(C_1(\\mathrm{relu}(h))))$."""

    conv1: eqx.nn.Conv
    conv2: eqx.nn.Conv

    def __init__(self, ndim: int, width: int, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.conv1 = _conv(ndim, width, width, 3, k1)
        conv2 = _conv(ndim, width, width, 3, k2)
        # Start near the identity map: a small second convolution keeps the deep
        # (recursive) network well conditioned at initialisation.
        self.conv2 = eqx.tree_at(lambda c: c.weight, conv2, conv2.weight * 0.1)

    def __call__(self, h: Array) -> Array:
        return h + _apply(self.conv2, jax.nn.relu(_apply(self.conv1, jax.nn.relu(h))))


def _pool(h: Array) -> Array:
    """2x average pooling over the spatial axes of a (C, *grid) array; odd sizes are
    padded with one zero cell (a Dirichlet neighbour) first."""
    pad = [(0, 0)] + [(0, n % 2) for n in h.shape[1:]]
    h = jnp.pad(h, pad)
    shape = [h.shape[0]]
    for n in h.shape[1:]:
        shape += [n // 2, 2]
    h = h.reshape(shape)
    return h.mean(axis=tuple(range(2, 2 + 2 * (h.ndim // 2), 2)))


def _upsample(h: Array, grid: tuple[int, ...]) -> Array:
    """Nearest-neighbour 2x upsampling, cropped to `grid`."""
    for axis, n in enumerate(grid, start=1):
        h = jnp.repeat(h, 2, axis=axis)
        h = jax.lax.slice_in_dim(h, 0, n, axis=axis)
    return h


class DCDMNetwork(eqx.Module):
    r"""A fully convolutional network $f_\theta$ that approximates $A^{-1}$ (up to
    scale) on a 2-D or 3-D grid, for [`jaxsolve.linear.DeepConjugateDirection`][].

    **Architecture** (one set of weights for every grid size):

    $$f(r) = H\bigl(V_0(S(r / \mathrm{rms}(r)))\bigr), \qquad
    V_\ell(h) = \mathrm{Post}_\ell\Bigl(g + P\,\mathrm{up}\bigl(V_{\ell+1}
    (\mathrm{pool}(g))\bigr)\Bigr),\quad g = \mathrm{Pre}_\ell(h),$$

    where $S$ is a $3^d$ convolution (the stem, 1 input channel, or 2 with a mask),
    $\mathrm{Pre}_\ell$/$\mathrm{Post}_\ell$ are `depth` pre-activation residual blocks
    ($h + C_2\,\mathrm{relu}(C_1\,\mathrm{relu}(h))$, $3^d$ convolutions with zero
    "same" padding, i.e. Dirichlet), $\mathrm{pool}$ is $2\times$ average pooling,
    $\mathrm{up}$ nearest-neighbour upsampling (the skip connection adds it to the
    pre-pooling features), $P$ and the head $H$ are $1^d$ (linear) convolutions. Level
    0 has its own blocks; all coarser levels **share** theirs, and the recursion
    continues while the grid's smallest side exceeds `coarsest` (or for `max_levels`
    levels): like a multigrid V-cycle, the receptive field covers the whole grid at
    every size, for about $4/3$ (2-D) or $8/7$ (3-D) of the cost of the finest level.

    The input is rescaled to unit root-mean-square, so the network's behaviour does not
    depend on the grid size through the magnitude of a unit-norm residual (the solver
    only needs the direction of the output). Weights are stored in float32 and cast to
    the input's dtype on use (float32 and float64 both work).

    This is the 2-D/3-D network of Kaneda et al. (16 channels, $3^d$ convolutions, ReLU
    residual blocks, average pooling, upsampling skip, linear head) with one change:
    their fixed number of levels becomes a weight-shared recursion, so one model
    transfers across grid sizes.

    **Arguments:**

    - `ndim`: 2 or 3, the grid dimension.
    - `key`: a `jax.random.key` for the initial weights.
    - `width`: channels per convolution (default 16).
    - `depth`: residual blocks per stage (default 1).
    - `mask_channel`: if `True`, the network takes a second input channel, a 0/1 mask
        of the fluid (unknown) cells; call it as `network(r, mask)`.
    - `coarsest`: stop coarsening when the smallest grid side is at most this.
    - `max_levels`: at most this many coarse levels (`None`: until `coarsest`).

    ??? cite "References"

        Kaneda, Akar, Chen, Trevino Kala, Hyde, Teran, "A Deep Conjugate Direction
        Method for Iteratively Solving Linear Systems", ICML 2023.

    !!! example

        ```python
        import jax, jax.numpy as jnp, jaxsolve as js
        net = js.linear.DCDMNetwork(2, key=jax.random.key(0))
        q = net(jnp.ones((32, 32)))      # any grid size: (48, 40) works too
        ```
    """

    stem: eqx.nn.Conv
    fine_pre: tuple[_ResidualBlock, ...]
    fine_post: tuple[_ResidualBlock, ...]
    coarse_pre: tuple[_ResidualBlock, ...]
    coarse_post: tuple[_ResidualBlock, ...]
    prolong: eqx.nn.Conv
    head: eqx.nn.Conv
    ndim: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    mask_channel: bool = eqx.field(static=True)
    coarsest: int = eqx.field(static=True)
    max_levels: int | None = eqx.field(static=True)

    def __init__(
        self,
        ndim: int,
        *,
        key: PRNGKeyArray,
        width: int = 16,
        depth: int = 1,
        mask_channel: bool = False,
        coarsest: int = 4,
        max_levels: int | None = None,
    ):
        if ndim not in (2, 3) or isinstance(ndim, bool):
            raise ValueError(f"DCDMNetwork(ndim=...) must be 2 or 3, got {ndim!r}.")
        for name, value, low in (
            ("width", width, 1),
            ("depth", depth, 1),
            ("coarsest", coarsest, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(
                    f"DCDMNetwork({name}=...) must be an integer >= {low}, got {value!r}."
                )
        if max_levels is not None and (
            not isinstance(max_levels, int)
            or isinstance(max_levels, bool)
            or max_levels < 0
        ):
            raise ValueError(
                "DCDMNetwork(max_levels=...) must be None or an integer >= 0, got "
                f"{max_levels!r}."
            )
        keys = iter(jax.random.split(key, 3 + 4 * depth))

        def blocks():
            return tuple(_ResidualBlock(ndim, width, next(keys)) for _ in range(depth))

        self.stem = _conv(ndim, 2 if mask_channel else 1, width, 3, next(keys))
        self.fine_pre, self.fine_post = blocks(), blocks()
        self.coarse_pre, self.coarse_post = blocks(), blocks()
        self.prolong = _conv(ndim, width, width, 1, next(keys))
        self.head = _conv(ndim, width, 1, 1, next(keys))
        self.ndim = ndim
        self.width = width
        self.depth = depth
        self.mask_channel = bool(mask_channel)
        self.coarsest = coarsest
        self.max_levels = max_levels

    def hyperparameters(self) -> dict[str, object]:
        """The constructor arguments (besides `key`) that rebuild a skeleton of this
        network, e.g. for [`jaxsolve.save`][]."""
        return {
            "ndim": self.ndim,
            "width": self.width,
            "depth": self.depth,
            "mask_channel": self.mask_channel,
            "coarsest": self.coarsest,
            "max_levels": self.max_levels,
        }

    def num_levels(self, grid: tuple[int, ...]) -> int:
        """The number of coarse levels used on a grid of shape `grid`."""
        levels, shape = 0, tuple(grid)
        while min(shape) > self.coarsest and (
            self.max_levels is None or levels < self.max_levels
        ):
            shape = tuple(math.ceil(n / 2) for n in shape)
            levels += 1
        return levels

    def _vcycle(self, h: Array, level: int, levels: int) -> Array:
        pre = self.fine_pre if level == 0 else self.coarse_pre
        post = self.fine_post if level == 0 else self.coarse_post
        for block in pre:
            h = block(h)
        if level < levels:
            coarse = self._vcycle(_pool(h), level + 1, levels)
            h = h + _apply(self.prolong, _upsample(coarse, h.shape[1:]))
        for block in post:
            h = block(h)
        return h

    def __call__(
        self, r: Float[Array, "*grid"], mask: Float[Array, "*grid"] | None = None
    ) -> Float[Array, "*grid"]:
        """Apply the network to a grid-shaped residual `r` (and the 0/1 `mask` of
        unknown cells when the network has a mask channel; the output is zero
        outside the mask). Runs in `r`'s dtype."""
        if r.ndim != self.ndim:
            raise ValueError(
                f"DCDMNetwork(ndim={self.ndim}) got an input of shape {r.shape}; it "
                f"needs a {self.ndim}-D grid."
            )
        if self.mask_channel and mask is None:
            raise ValueError(
                "This DCDMNetwork has a mask channel (mask_channel=True): call it as "
                "`network(r, mask)` with a 0/1 mask of the grid shape."
            )
        if mask is not None and mask.shape != r.shape:
            raise ValueError(
                f"DCDMNetwork: the mask has shape {mask.shape}, the input {r.shape}."
            )
        dtype = r.dtype
        net = jtu.tree_map(
            lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, self
        )
        rms = jnp.sqrt(jnp.mean(r * r))
        x = r / jnp.maximum(rms, jnp.finfo(dtype).tiny)
        channels = (
            [x] if mask is None or not self.mask_channel else [x, mask.astype(dtype)]
        )
        h = _apply(net.stem, jnp.stack(channels))
        h = net._vcycle(h, 0, self.num_levels(r.shape))
        q = _apply(net.head, h)[0]
        if mask is not None:
            q = q * mask.astype(dtype)
        return q
