r"""Training of the DCDM network: Lanczos/Ritz training data and the scale-free loss."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .._core import AbstractProgressMeter, NoProgressMeter
from ._operators import as_operator


def lanczos_ritz(
    operator: lx.AbstractLinearOperator,
    key: PRNGKeyArray,
    num_steps: int,
) -> tuple[Float[Array, " m"], Float[Array, "m ..."]]:
    r"""Ritz pairs of a symmetric operator from `num_steps` Lanczos steps with full
    re-orthogonalisation, started from $A g$ with $g$ Gaussian (as in Kaneda et al.).

    **Returns:** `(values, vectors)`, Ritz values in ascending order and the matching
    unit Ritz vectors, shaped `(num_steps, *grid)`. In exact arithmetic the extreme
    Ritz pairs converge first; the low end of the spectrum is what the DCDM network is
    trained on.
    """
    operator = as_operator(operator)
    struct = operator.in_structure()
    shape, dtype = struct.shape, struct.dtype
    n = 1
    for s in shape:
        n *= s
    m = int(num_steps)
    if not 1 <= m <= n:
        raise ValueError(
            f"lanczos_ritz(num_steps=...) must lie in [1, {n}] (the number of "
            f"unknowns), got {num_steps!r}."
        )

    def mv(v):
        return operator.mv(v.reshape(shape)).reshape(-1)

    v0 = mv(jax.random.normal(key, (n,), dtype))
    v0 = v0 / jnp.linalg.norm(v0)
    basis = jnp.zeros((m, n), dtype).at[0].set(v0)

    def body(j, carry):
        basis, alpha, beta = carry
        v = basis[j]
        w = mv(v)
        a = jnp.vdot(v, w)
        # Full re-orthogonalisation (twice is enough, Kahan/Parlett): the rows not yet
        # filled are zero and contribute nothing.
        w = w - basis.T @ (basis @ w)
        w = w - basis.T @ (basis @ w)
        b = jnp.linalg.norm(w)
        # An invariant subspace (b ~ 0) ends the useful part; continue with a random
        # direction orthogonal to the basis so later rows stay orthonormal.
        fresh = jax.random.normal(jax.random.fold_in(key, j), (n,), dtype)
        fresh = fresh - basis.T @ (basis @ fresh)
        small = b <= 1e3 * jnp.finfo(dtype).eps * jnp.abs(a)
        nxt = jnp.where(
            small, fresh / jnp.linalg.norm(fresh), w / jnp.where(small, 1, b)
        )
        basis = jnp.where(
            j + 1 < m, basis.at[jnp.minimum(j + 1, m - 1)].set(nxt), basis
        )
        return basis, alpha.at[j].set(a), beta.at[j].set(jnp.where(small, 0, b))

    basis, alpha, beta = jax.lax.fori_loop(
        0, m, body, (basis, jnp.zeros(m, dtype), jnp.zeros(m, dtype))
    )
    tri = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    values, vectors = jnp.linalg.eigh(tri)
    ritz = (vectors.T @ basis).reshape((m, *shape))
    return values, ritz


def dcdm_loss(
    network: Callable[[Array], Array],
    operator: lx.AbstractLinearOperator,
    b: Float[Array, "batch ..."],
) -> Float[Array, ""]:
    r"""The scale-free DCDM loss, averaged over a batch of right-hand sides:

    $$\ell(\theta) = \frac{1}{B}\sum_i \Bigl\| b_i - \frac{q_i^\top b_i}{q_i^\top A
    q_i}\,A q_i \Bigr\|_2^2, \qquad q_i = f_\theta(b_i),$$

    the residual left by an exact line search along the network's direction (so only
    the direction of $f_\theta(b)$ matters). Use unit-norm $b_i$.
    """

    def one(bi):
        q = network(bi)
        aq = operator.mv(q)
        qaq = jnp.vdot(q, aq)
        alpha = jnp.vdot(q, bi) / jnp.where(qaq > 0, qaq, 1)
        return jnp.sum((bi - alpha * aq) ** 2)

    return jnp.mean(jax.vmap(one)(b))


def train_dcdm(
    network: eqx.Module,
    operator: lx.AbstractLinearOperator,
    key: PRNGKeyArray,
    *,
    steps: int,
    batch_size: int,
    optimizer: optax.GradientTransformation | None = None,
    progress_meter: AbstractProgressMeter | None = None,
    lanczos_steps: int | None = None,
    low_fraction: float = 0.55,
    low_weight: float = 9.0,
    random_fraction: float = 0.25,
) -> tuple[eqx.Module, Float[Array, " steps"]]:
    r"""Train a DCDM network on one operator, as Kaneda et al. do, in one compiled loop.

    **Data.** `lanczos_steps` Lanczos steps (full re-orthogonalisation, started from
    $A g$) give Ritz pairs $(\lambda_j, v_j)$ in ascending order; each training
    right-hand side is $b = \sum_j c_j v_j / \|\cdot\|$ with $c_j \sim
    \mathcal N(0, w_j^2)$, $w_j = $ `low_weight` for the lowest `low_fraction` of the
    Ritz vectors and 1 for the rest (the paper: 9, $m/2 + 500$ of $m = 10^4$), so the
    data concentrate on the smooth, low-eigenvalue modes that CG resolves slowest. A
    fraction `random_fraction` of each batch is plain Gaussian noise instead (fresh
    each step), so high frequencies are not forgotten. Ritz values below $10^{-8}$
    (zero rows of masked cells) are left out.

    **Loss.** [`dcdm_loss`][jaxsolve.linear.dcdm_loss], scale-free in the output.

    **Optimiser.** `optimizer` (an `optax.GradientTransformation`), default Adam with a
    cosine-decayed learning rate from $10^{-3}$ to $10^{-4}$ (the paper uses Adam at
    $10^{-4}$; the larger start trains a small net in minutes on a CPU).

    **Arguments:**

    - `network`: a [`jaxsolve.linear.DCDMNetwork`][] (or any `eqx.Module` mapping a
        grid to a grid).
    - `operator`: the symmetric positive definite grid operator to train on, e.g.
        `js.linear.poisson((64, 64), dtype=jnp.float32)`; its dtype is the training
        dtype.
    - `key`: a `jax.random.key`; same key, same network.
    - `steps`, `batch_size`: optimisation steps and right-hand sides per step.
    - `optimizer`, `progress_meter`: see above; the meter (e.g.
        `js.TextProgressMeter()`) shows the fraction of steps done.
    - `lanczos_steps`: number of Ritz vectors (default `min(n, 400)`).
    - `low_fraction`, `low_weight`, `random_fraction`: the data mix (above).

    **Returns:** `(network, losses)`: the trained network and the loss of every step.

    ??? cite "References"

        Kaneda, Akar, Chen, Trevino Kala, Hyde, Teran, "A Deep Conjugate Direction
        Method for Iteratively Solving Linear Systems", ICML 2023.

    !!! example

        ```python
        import jax, jax.numpy as jnp, jaxsolve as js
        A = js.linear.poisson((16, 16), dtype=jnp.float32)
        net = js.linear.DCDMNetwork(2, key=jax.random.key(0), width=8)
        net, losses = js.linear.train_dcdm(net, A, jax.random.key(1), steps=50, batch_size=8)
        ```
    """
    operator = as_operator(operator)
    struct = operator.in_structure()
    shape = struct.shape
    if len(shape) not in (2, 3):
        raise ValueError(
            "train_dcdm needs an operator on a 2-D or 3-D grid (e.g. "
            f"js.linear.poisson((n, n))), got one acting on shape {shape}."
        )
    net_ndim = getattr(network, "ndim", len(shape))
    if net_ndim != len(shape):
        raise ValueError(
            f"train_dcdm: the network is {net_ndim}-D but the operator acts on a "
            f"{len(shape)}-D grid {shape}."
        )
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"train_dcdm({name}=...) must be an integer >= 1, got {value!r}."
            )
    for name, value in (
        ("low_fraction", low_fraction),
        ("random_fraction", random_fraction),
    ):
        if not 0 <= value <= 1:
            raise ValueError(
                f"train_dcdm({name}=...) must lie in [0, 1], got {value!r}."
            )
    if not low_weight > 0:
        raise ValueError(
            f"train_dcdm(low_weight=...) must be positive, got {low_weight!r}."
        )
    n = 1
    for s in shape:
        n *= s
    m = min(n, 400) if lanczos_steps is None else lanczos_steps
    if optimizer is None:
        optimizer = optax.adam(_cosine_schedule(1e-3, 1e-4, steps))
    meter = NoProgressMeter() if progress_meter is None else progress_meter
    return _train(
        network, operator, key, steps, batch_size, optimizer, meter, m,
        float(low_fraction), float(low_weight), float(random_fraction),
    )  # fmt: skip


def _cosine_schedule(start: float, end: float, steps: int) -> Callable:
    """Cosine decay from `start` to `end` over `steps` (explicit casts: optax's own
    schedules mix int32 and float under strict dtype promotion)."""

    def schedule(count):
        dtype = jnp.zeros(()).dtype
        frac = jnp.minimum(count.astype(dtype) / steps, 1.0)
        return end + (start - end) * 0.5 * (1 + jnp.cos(jnp.pi * frac))

    return schedule


@eqx.filter_jit
def _train(
    network,
    operator,
    key,
    steps,
    batch_size,
    optimizer,
    meter,
    m,
    low_fraction,
    low_weight,
    random_fraction,
):
    struct = operator.in_structure()
    shape, dtype = struct.shape, struct.dtype
    k_lanczos, k_loop = jax.random.split(key)
    values, ritz = lanczos_ritz(operator, k_lanczos, m)
    ritz = jax.lax.stop_gradient(ritz).reshape(m, -1)
    n_low = int(round(low_fraction * m))
    weights = jnp.where(jnp.arange(m) < n_low, low_weight, 1.0).astype(dtype)
    weights = jnp.where(values > 1e-8, weights, 0.0)
    n_random = int(round(random_fraction * batch_size))

    def batch(k):
        k1, k2 = jax.random.split(k)
        c = jax.random.normal(k1, (batch_size, m), dtype) * weights[None, :]
        b = c @ ritz
        noise = jax.random.normal(k2, (batch_size, b.shape[1]), dtype)
        b = jnp.where(jnp.arange(batch_size)[:, None] < n_random, noise, b)
        b = b / jnp.linalg.norm(b, axis=1, keepdims=True)
        return b.reshape((batch_size, *shape))

    params, static = eqx.partition(network, eqx.is_inexact_array)
    # optax mixes Python floats with int32 step counts (Adam's bias correction),
    # which strict dtype promotion rejects; the optimiser runs under standard rules.
    with jax.numpy_dtype_promotion("standard"):
        opt_state = optimizer.init(params)

    def loss_fn(p, b):
        return dcdm_loss(eqx.combine(p, static), operator, b)

    def body(carry, k):
        params, opt_state, mstate, step = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, batch(k))
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
        params = eqx.apply_updates(params, updates)
        step = step + 1
        if not isinstance(meter, NoProgressMeter):
            frac = step.astype(jnp.zeros(()).dtype) / steps
            mstate = meter.step(mstate, frac)
        return (params, opt_state, mstate, step), loss

    init = (params, opt_state, meter.init(), jnp.array(0, jnp.int32))
    (params, _, mstate, _), losses = jax.lax.scan(
        body, init, jax.random.split(k_loop, steps)
    )
    meter.close(mstate)
    return eqx.combine(params, static), losses
