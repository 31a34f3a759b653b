r"""`jaxsolve.sweep`: many independent instances of one computation, `jax.vmap`ped over
a leading batch axis and sharded over the devices of a mesh (and over hosts after
`jax.distributed.initialize`), on JAX's own runtime.

How it works: the batched array leaves are padded to a multiple of the number of
devices along the mesh axis (by repeating the *last real instance*, so padded lanes
compute something valid), placed with `NamedSharding(mesh, P(axis_name))`, and one
`jax.jit(jax.vmap(fn), in_shardings=..., out_shardings=...)` runs every device's share
of the batch; the padded lanes are then cut off. The compiled function is cached on
`(fn, tree structure, static leaves, mesh, axis_name)`; jit's own cache handles new
shapes, so a repeated call with new values of the same shapes never retraces.
"""

import collections
import functools
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree


_CACHE_SIZE = 128
_cache: collections.OrderedDict = collections.OrderedDict()
_cache_lock = threading.Lock()


class _ById:
    """Hashes an unhashable object (a closure over a list, a Module with a NumPy
    static field) by identity, so it can still key the compile cache; holding it keeps
    the id from being reused while the entry lives."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ById) and other.obj is self.obj


def _hashable(x: Any) -> Any:
    try:
        hash(x)
    except TypeError:
        return _ById(x)
    return x


@functools.cache
def _default_mesh(axis_name: str, devices: tuple) -> Mesh:
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _batched_jit(
    fn_static: Any,
    arg_treedef: Any,
    static_leaves: tuple,
    is_batched: tuple[bool, ...],
    mesh: Mesh,
    axis_name: str,
    gather: bool,
    chunk_size: int | None,
    independent: bool,
) -> Callable:
    """The cached `jax.jit(jax.vmap(fn))` with batch-sharded inputs and outputs
    (replicated outputs when `gather`: multi-process meshes)."""
    key = (
        _hashable(fn_static),
        arg_treedef,
        tuple(_hashable(s) for s in static_leaves),
        is_batched,
        mesh,
        axis_name,
        gather,
        chunk_size,
        independent,
    )
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    n_dev = mesh.shape[axis_name]
    batch_sharding = NamedSharding(mesh, PartitionSpec(axis_name))
    replicated = NamedSharding(mesh, PartitionSpec())

    def run(fn_dynamic, batched):
        f = eqx.combine(fn_dynamic, fn_static)

        def one(*lane):
            lane_iter, static_iter = iter(lane), iter(static_leaves)
            leaves = [next(lane_iter if b else static_iter) for b in is_batched]
            return f(*jax.tree_util.tree_unflatten(arg_treedef, leaves))

        def device_lanes(*xs):
            lanes = xs[0].shape[0]
            if chunk_size is None or chunk_size >= lanes:
                return jax.vmap(one)(*xs)
            # `chunk_size` lanes at a time: a scan over vmapped chunks.
            return jax.lax.map(lambda lane: one(*lane), xs, batch_size=chunk_size)

        if independent:  # inside shard_map: `batched` holds this device's lanes
            return device_lanes(*batched)
        if chunk_size is None or chunk_size >= batched[0].shape[0] // n_dev:
            return jax.vmap(one)(*batched)
        # Chunks must not straddle devices: view the batch as (devices, lanes).
        split = [
            jax.lax.with_sharding_constraint(
                x.reshape((n_dev, x.shape[0] // n_dev) + x.shape[1:]), batch_sharding
            )
            for x in batched
        ]
        out = jax.vmap(device_lanes)(*split)
        return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), out)

    if independent:
        # Each device runs its own lanes as its own program: no collectives, and a
        # device's batched solver loops stop at its own slowest lane. (Under GSPMD,
        # the default, a batched while loop all-reduces its "any lane still running"
        # predicate across devices at every step.)
        run = jax.shard_map(
            run,
            mesh=mesh,
            in_specs=(PartitionSpec(), PartitionSpec(axis_name)),
            out_specs=PartitionSpec(axis_name),
            check_vma=False,
        )
    jitted = jax.jit(
        run,
        in_shardings=(replicated, batch_sharding),
        out_shardings=replicated if gather else batch_sharding,
    )
    with _cache_lock:
        _cache[key] = jitted
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return jitted


@functools.partial(jax.jit, static_argnums=(1, 2))
def _trim(tree: Any, n: int, sharding: NamedSharding) -> Any:
    return jax.tree_util.tree_map(
        lambda a: jax.lax.with_sharding_constraint(a[:n], sharding), tree
    )


def _pad_rows(x: Any, n: int, n_pad: int) -> Any:
    """`x` with its last row repeated up to `n_pad` rows (NumPy stays NumPy)."""
    if n_pad == n:
        return x
    rows = np.minimum(np.arange(n_pad), n - 1)
    return x[rows]


def _canonical_host(x: Any) -> Any:
    if isinstance(x, np.ndarray | np.generic):
        return np.asarray(x, dtype=jax.dtypes.canonicalize_dtype(x.dtype))
    return x


def _global_from_host(x: Any, n: int, n_pad: int, sharding: NamedSharding) -> Any:
    """A global array built from a full copy `x` held by every process: each process
    materialises only the shards its devices own (rows past `n` repeat row `n - 1`)."""
    x = _canonical_host(x)
    shape = (n_pad, *x.shape[1:]) if n is not None else x.shape

    def callback(index: tuple) -> Any:
        if n is None or not index:
            return x[index]
        start, stop, _ = index[0].indices(n_pad)
        rows = np.minimum(np.arange(start, stop), n - 1)
        block = x[start:stop] if stop <= n else x[rows]
        return block[(slice(None), *index[1:])]

    return jax.make_array_from_callback(shape, sharding, callback)


def _as_array(x: Any) -> Any:
    return x if isinstance(x, jax.Array) else jnp.asarray(x)


def _leaf_names(paths: Sequence[Any]) -> list[str]:
    return [
        "batched_args" + jax.tree_util.keystr(p) if p else "batched_args" for p in paths
    ]


def _empty_result(run_shapes: Any) -> Any:
    def empty(s):
        if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key):
            data = jax.eval_shape(jax.random.key_data, s)
            return jax.random.wrap_key_data(
                jnp.zeros(data.shape, data.dtype), impl=jax.random.key_impl(s)
            )
        return jnp.zeros(s.shape, s.dtype)

    return jax.tree_util.tree_map(empty, run_shapes)


def sweep(
    fn: Callable[..., PyTree],
    *batched_args: PyTree,
    mesh: Mesh | None = None,
    axis_name: str = "batch",
    chunk_size: int | None = None,
    independent: bool = False,
) -> PyTree:
    r"""Run `fn` on $N$ independent instances, `jax.vmap`ped over the leading axis of
    every array leaf of `batched_args` and sharded over the devices of `mesh`:

    $$\texttt{sweep}(f, a, b)[i] = f(a[i], b[i]), \qquad i = 0, \dots, N - 1,$$

    the same result as `jax.vmap(fn)(*batched_args)` (bit for bit where XLA's code for
    a device's share of the batch computes each lane as the full batch does: see
    `docs/sweep.md`), with each device running $\lceil N / D\rceil$ lanes.

    - **Batched and static leaves.** Array leaves (`jax.Array`, NumPy arrays, PRNG
        key arrays) of `batched_args` are batched along axis 0 and must all have the
        same length $N$; other leaves (Python numbers, strings, `None`) are passed
        unchanged to every instance and are part of the compile-cache key. Values
        shared by all instances (an operator, a model, a data set) are best closed
        over in `fn` or held as array fields of an `eqx.Module` `fn` (those are traced
        and replicated on every device, not baked into the program).
    - **Padding.** When $D$ (the size of `mesh`'s axis `axis_name`) does not divide
        $N$, the batch is padded to $D\lceil N/D\rceil$ by repeating the *last real
        instance* (never zeros: a padded lane can neither fail a `throw=True` check
        nor produce NaN that a real one would not), and the result is trimmed back
        to $N$. $N = 10$ and $N = 13$ on 8 devices share one compiled program.
    - **Where the result lives.** One process: when $D$ divides $N$ the result stays
        sharded along the batch axis (`NamedSharding(mesh, P(axis_name))`, no
        copy); otherwise (padding was cut off: an uneven batch cannot be sharded
        evenly) the result is replicated on the mesh's devices
        (`NamedSharding(mesh, P())`, what slicing the sharded result gives in JAX),
        so results of padded and unpadded sweeps on one mesh combine freely.
    - **Several processes** (a mesh that spans hosts after
        `jax.distributed.initialize`): every process must call `sweep` with the
        *same full batch* (host or local arrays; not checked); each process only
        materialises the shards its own devices hold
        (`jax.make_array_from_callback`), and every process gets the *whole* result
        back as ordinary arrays on its first local device (gathered by XLA's
        collectives inside the same program), so that any process can save or
        print it. A global array already sharded as
        `NamedSharding(mesh, P(axis_name))` with $D \mid N$ is used as it is.
    - **Caching.** The compiled program is cached on `(fn, the tree structure and
        static leaves of batched_args, mesh, axis_name, chunk_size, independent)`
        (128 entries, least recently used dropped); new values of the same
        shapes and dtypes reuse it (no retrace). Pass the same `fn` object each time
        (a new `lambda` per call compiles again).
    - **Composition.** `sweep` inside `jax.jit`, `jax.grad` or another trace acts
        as a sharding annotation (the batch is padded and trimmed in the traced
        program) and is differentiable; padded lanes get zero cotangent. Multi-process
        sweeps must be called at top level.
    - **Empty batch.** $N = 0$ returns the empty result `jax.vmap(fn)` would (leading
        axis 0, the right shapes and dtypes) without running `fn`.

    **Arguments:**

    - `fn`: a function of one instance, `fn(*args) -> pytree of arrays`.
    - `batched_args`: one or more pytrees whose array leaves have a leading batch
        axis of one common length $N$.
    - `mesh`: a `jax.sharding.Mesh` with an axis `axis_name` (other axes, if any,
        replicate the work). Default: a 1-D mesh over all of `jax.devices()` (every
        device of every process).
    - `axis_name`: the mesh axis the batch is sharded over.
    - `chunk_size`: if given, each device runs its share of the batch at most
        `chunk_size` lanes at a time (`jax.lax.map(..., batch_size=...)`: a loop
        over vmapped chunks of balanced size, the share padded to a multiple of it).
        This bounds memory, keeps a chunk's arrays in cache on CPU, and lets a
        chunk's batched solver loop stop at its own slowest lane. Default: the
        whole share in one `vmap`.
    - `independent`: run each device's share as its own program
        (`jax.shard_map`) instead of one GSPMD-partitioned program. Then the
        program has no collectives at all: each device's batched solver loops stop
        at its own slowest lane, where under GSPMD (the default) a batched
        `while_loop` all-reduces its "any lane still running" flag across devices
        at every step and all devices iterate until the globally slowest lane.
        Worth it on a pod for sweeps of iterative solves. Limitation (jax 0.10,
        lineax 0.1): inside `shard_map`, lineax rejects its own vectors, so `fn`
        must not *differentiate through* a `js.linear.solve` or another
        implicit-adjoint solve (forward solves are fine); inside a trace (`jit`,
        `grad`) `sweep` ignores `independent`.

    **Returns:** `jax.vmap(fn)(*batched_args)`: the pytree `fn` returns, each leaf
    with a leading axis of length $N$.

    **Raises:** `TypeError` when `fn` is not callable, no batched argument is given,
    `mesh` is not a `Mesh` or `axis_name` not a str; `ValueError` when no leaf is an
    array, a leaf is a scalar (no batch axis), the leading sizes differ, the mesh
    lacks `axis_name`, or a non-addressable global array is not sharded as required.

    !!! example

        ```python
        import jax.numpy as jnp, jaxsolve as js
        A, b = js.linear.poisson((16, 16)), jnp.ones((16, 16))

        def iterations(omega):
            solver = js.linear.SOR(omega, rtol=1e-4)
            return js.linear.solve(A, b, solver).stats["num_steps"]

        print(js.sweep(iterations, jnp.linspace(1.0, 1.9, 10)))
        ```
    """
    if not callable(fn):
        raise TypeError(
            f"js.sweep: `fn` must be callable (a function of one instance), got "
            f"{type(fn).__name__}. Call it as js.sweep(fn, batched_arg, ...)."
        )
    if not batched_args:
        raise TypeError(
            "js.sweep: no batched arguments; pass at least one pytree of arrays with "
            "a leading batch axis, e.g. js.sweep(fn, jnp.linspace(1.0, 1.9, 8))."
        )
    if chunk_size is not None and (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int | np.integer)
        or chunk_size < 1
    ):
        raise ValueError(
            f"js.sweep: `chunk_size` must be a positive int or None, got {chunk_size!r}."
        )
    if not isinstance(axis_name, str):
        raise TypeError(f"js.sweep: `axis_name` must be a str, got {axis_name!r}.")
    if mesh is None:
        mesh = _default_mesh(axis_name, tuple(jax.devices()))
    elif not isinstance(mesh, Mesh):
        raise TypeError(
            f"js.sweep: `mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}; "
            "e.g. jax.sharding.Mesh(np.array(jax.devices()), ('batch',))."
        )
    if axis_name not in mesh.axis_names:
        raise ValueError(
            f"js.sweep: the mesh has no axis {axis_name!r} (its axes are "
            f"{mesh.axis_names}); pass axis_name= one of them, or build the mesh "
            f"with an axis named {axis_name!r}."
        )

    path_leaves, arg_treedef = jax.tree_util.tree_flatten_with_path(batched_args)
    paths = [p for p, _ in path_leaves]
    leaves = [x for _, x in path_leaves]
    is_batched = tuple(eqx.is_array(x) for x in leaves)
    names = _leaf_names(paths)
    batched = [x for x, b in zip(leaves, is_batched) if b]
    static_leaves = tuple(x for x, b in zip(leaves, is_batched) if not b)
    if not batched:
        raise ValueError(
            "js.sweep: `batched_args` has no array leaf to batch over (got leaves of "
            f"types {sorted({type(x).__name__ for x in leaves})}); pass arrays with a "
            "leading batch axis, e.g. jnp.asarray([1.1, 1.5]) rather than a list."
        )
    sizes = {}
    for name, x, b in zip(names, leaves, is_batched):
        if not b:
            continue
        if jnp.ndim(x) == 0:
            raise ValueError(
                f"js.sweep: {name} is a scalar (shape ()), so it has no batch axis. "
                "Give every batched array a leading axis of length N, or close over "
                "a value shared by all instances in `fn`."
            )
        sizes[name] = jnp.shape(x)[0]
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise ValueError(
            "js.sweep: the batched leaves must share one leading (batch) size; got "
            f"{listing}."
        )
    n = next(iter(sizes.values()))
    n_dev = mesh.shape[axis_name]
    lanes = math.ceil(n / n_dev)
    if chunk_size is not None:
        chunk_size = int(chunk_size)
        if chunk_size < lanes:
            # As few chunks as `chunk_size` allows, of balanced size: 1250 lanes
            # with chunk_size=500 run as 3 chunks of 417 (1 padded lane), not 3 of
            # 500 (250 padded lanes).
            num_chunks = math.ceil(lanes / chunk_size)
            chunk_size = math.ceil(lanes / num_chunks)
            lanes = chunk_size * num_chunks
    n_pad = n_dev * lanes

    fn_dynamic, fn_static = eqx.partition(fn, eqx.is_array)
    traced = any(
        _is_tracer(x) for x in jax.tree_util.tree_leaves((fn_dynamic, batched))
    )
    gather = bool(mesh.is_multi_process) and not traced
    jitted = _batched_jit(
        fn_static,
        arg_treedef,
        static_leaves,
        is_batched,
        mesh,
        axis_name,
        gather,
        chunk_size,
        bool(independent) and not traced,
    )

    if n == 0:
        shapes = jax.eval_shape(jitted, fn_dynamic, batched)
        return _empty_result(shapes)

    if traced:
        # Inside jit/grad: pad and trim in the traced program; the inner jit's
        # in/out shardings become sharding constraints.
        padded = [_pad_rows(_as_array(x), n, n_pad) for x in batched]
        out = jitted(fn_dynamic, padded)
        return jax.tree_util.tree_map(lambda a: a[:n], out)

    batch_sharding = NamedSharding(mesh, PartitionSpec(axis_name))
    replicated = NamedSharding(mesh, PartitionSpec())
    if mesh.is_multi_process:
        placed = []
        for name, x in zip([m for m, b in zip(names, is_batched) if b], batched):
            if isinstance(x, jax.Array) and not x.is_fully_addressable:
                if n_pad != n or not x.sharding.is_equivalent_to(
                    batch_sharding, x.ndim
                ):
                    raise ValueError(
                        f"js.sweep: {name} is a global array that is not sharded as "
                        f"NamedSharding(mesh, P({axis_name!r})) over a batch divisible "
                        f"by {n_dev}; pass the full batch as host (NumPy) or local "
                        "arrays on every process instead."
                    )
                placed.append(x)
            else:
                placed.append(_global_from_host(x, n, n_pad, batch_sharding))
        fn_placed = jax.tree_util.tree_map(
            lambda a: (
                a
                if not a.is_fully_addressable
                else _global_from_host(a, None, None, replicated)
            ),
            fn_dynamic,
        )
        out = jitted(fn_placed, placed)
        # Replicated: every device holds the whole (padded) result.
        return jax.tree_util.tree_map(lambda a: a.addressable_data(0)[:n], out)

    placed = [
        jax.device_put(_canonical_host(_pad_rows(x, n, n_pad)), batch_sharding)
        for x in batched
    ]
    out = jitted(jax.device_put(fn_dynamic, replicated), placed)
    if n_pad == n:
        return out
    # An uneven batch cannot stay sharded evenly along the mesh axis: cut off the
    # padding and replicate the result on the mesh (still the mesh's devices, so it
    # combines with sharded results; on one device it is just that device).
    return _trim(out, n, replicated)
