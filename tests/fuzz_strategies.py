"""Strategies and oracles for `tests/test_fuzz.py`.

The oracle of every fuzz test: a call either raises a *documented* error, or returns
a result whose code is a `RESULTS` member and that never reports success with a
non-finite value. A documented error is

- a `ValueError`/`TypeError` raised by a `raise` statement in jaxsolve itself (the
  innermost frame of the traceback lies in the `jaxsolve` package: an error from deep
  inside JAX, XLA or lineax is a crash, not a message to the user), or the test-time
  jaxtyping check of the arguments of the public function that was called;
- at run time (`throw=True`), an error whose text carries one of our `RESULTS`
  messages (or another message of ours, passed as `runtime_messages`).
"""

import math
import os
import re
import traceback

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import jaxtyping
import numpy as np
from hypothesis import event, HealthCheck, settings, strategies as st
from hypothesis.control import currently_in_test_context

import jaxsolve as js


_PACKAGE = os.path.dirname(js.__file__)
RESULT_NAMES = (
    "successful",
    "max_steps_reached",
    "nonfinite_input",
    "nonfinite",
    "breakdown",
    "stagnation",
    "singular",
    "invalid_parameter",
)
RESULT_CODES = {int(getattr(js.RESULTS, n)._value): n for n in RESULT_NAMES}
RESULT_MESSAGES = tuple(
    js.RESULTS[getattr(js.RESULTS, n)] for n in RESULT_NAMES if n != "successful"
)


def fuzz_settings(max_examples: int) -> settings:
    """Deterministic settings: the same examples on every run (CI), no database,
    no deadline (the first example of a test compiles)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
    )


# -- values --------------------------------------------------------------------------

NAN, INF = math.nan, math.inf
# Values that break naive code: non-finite, signed zero, the ends of the float64
# range (overflow on squaring, subnormals), and ones that overflow in float32.
SPECIAL64 = (NAN, INF, -INF, 0.0, -0.0, 1e300, -1e300, 1e-300, 5e-324, 1e30, -1e30)
SPECIAL32 = (NAN, INF, -INF, 0.0, -0.0, 3e38, -3e38, 1e-38, 1e-45, 1e20, -1e20)


def scalars(dtype=np.float64, *, lo=-1e3, hi=1e3, special=True):
    """A float in [lo, hi], or (often) one of the special values above."""
    plain = st.floats(lo, hi, width=32 if dtype == np.float32 else 64)
    if not special:
        return plain
    sp = SPECIAL32 if dtype == np.float32 else SPECIAL64
    return st.one_of(st.sampled_from(sp), plain)


def to_float32(v: float) -> np.ndarray:
    """`v` as float32 without NumPy's overflow warning (out of range -> +-inf)."""
    if math.isfinite(v) and abs(v) > 3.4e38:
        v = math.copysign(math.inf, v)
    return np.asarray(v, np.float32)


def finite_scalars(dtype=np.float64, lo=-1e3, hi=1e3):
    return st.floats(lo, hi, width=32 if dtype == np.float32 else 64)


@st.composite
def arrays(draw, shape, dtype=np.float64, *, lo=-10.0, hi=10.0, special=True):
    """A `shape` array of mostly moderate values with (when `special`) a few special
    ones at drawn positions: most examples stay finite, so the solvers' normal paths
    are fuzzed too."""
    n = int(np.prod(shape, dtype=np.int64))
    vals = draw(st.lists(finite_scalars(dtype, lo, hi), min_size=n, max_size=n))
    out = np.asarray(vals, dtype=dtype)
    if special and n and draw(st.booleans()):
        sp = SPECIAL32 if dtype == np.float32 else SPECIAL64
        k = draw(st.integers(1, min(n, 3)))
        for _ in range(k):
            out[draw(st.integers(0, n - 1))] = draw(st.sampled_from(sp))
    return out.reshape(shape)


# -- oracles -------------------------------------------------------------------------


def _innermost_file(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return os.path.abspath(frames[-1].filename) if frames else ""


_CHECKED = re.compile(r"checking the parameters of ([\w.<>]+)")


def assert_documented(exc: BaseException, public: tuple[str, ...] = ()) -> None:
    """`exc` is a documented static-input error: a ValueError/TypeError raised by
    jaxsolve's own code, or the test-time jaxtyping check of the *arguments* of one
    of the `public` callables (names like `"solve"` or `"LightSB.__init__"`).
    Anything else (an IndexError, a shape error from inside JAX, a jaxtyping error on
    a return value or an internal function) fails the test, with the error chained."""
    if isinstance(exc, jaxtyping.TypeCheckError):
        m = _CHECKED.search(str(exc))
        if m and any(m.group(1).rstrip(".").endswith("." + p) for p in public):
            return
        raise AssertionError(
            f"undocumented type-check error (not at a public boundary {public}): "
            f"{str(exc)[:600]}"
        ) from exc
    if isinstance(exc, (ValueError, TypeError)) and _innermost_file(exc).startswith(
        _PACKAGE
    ):
        assert str(exc).strip(), "an error without a message"
        return
    raise AssertionError(
        f"undocumented {type(exc).__name__} raised from {_innermost_file(exc)}: "
        f"{str(exc)[:600]}"
    ) from exc


def assert_runtime_error(exc: BaseException, extra: tuple[str, ...] = ()) -> None:
    """`exc` is a `throw=True` run-time failure carrying one of our messages."""
    text = str(exc)
    if any(m in text for m in RESULT_MESSAGES + extra):
        return
    raise AssertionError(
        f"run-time error without a jaxsolve message: {type(exc).__name__}: {text[:600]}"
    ) from exc


def note(outcome: str) -> None:
    """Count an outcome in hypothesis' statistics (`--hypothesis-show-statistics`)."""
    if currently_in_test_context():
        event(outcome)


def run(
    fn,
    *args,
    public: tuple[str, ...] = (),
    runtime: tuple[str, ...] | None = None,
    **kwargs,
):
    """Call `fn`; return its (blocked-on) output, or `None` if it raised a documented
    error. `runtime`: the extra messages a `throw=True` run-time error may carry (None:
    run-time errors are not expected at all)."""
    try:
        out = fn(*args, **kwargs)
        return jax.block_until_ready(out)
    except Exception as exc:  # noqa: BLE001 - classified below
        if runtime is not None and _is_runtime(exc):
            assert_runtime_error(exc, runtime)
            note("run-time error with our message")
            return None
        if isinstance(exc, (ValueError, TypeError)):
            assert_documented(exc, public)
            note("documented ValueError/TypeError")
            return None
        raise AssertionError(f"crash: {type(exc).__name__}: {str(exc)[:800]}") from exc


def _is_runtime(exc: BaseException) -> bool:
    # EquinoxRuntimeError (eager, eqx.filter_jit), JaxRuntimeError (plain jax.jit),
    # or a RuntimeError raised by a driver after a concrete failure (bridge.fit).
    return isinstance(exc, (RuntimeError, jax.errors.JaxRuntimeError))


def check_solution(sol, lanes: int | None = None) -> np.ndarray:
    """`sol.result` holds RESULTS codes and no successful (lane of a) solution has a
    non-finite value. Returns the codes (one per lane)."""
    assert isinstance(sol, js.Solution), type(sol)
    codes = np.asarray(sol.result._value)
    assert codes.dtype.kind == "i"
    if lanes is not None:
        assert codes.shape == (lanes,), codes.shape
    for c in np.unique(codes):
        assert int(c) in RESULT_CODES, f"unknown result code {c}"
    ok = np.reshape(codes == 0, (-1,))
    for leaf in jtu.tree_leaves(eqx.filter(sol.value, eqx.is_inexact_array)):
        a = np.asarray(leaf)
        a = a.reshape(ok.shape[0], int(np.prod(a.shape[codes.ndim :])))
        finite = np.all(np.isfinite(a), axis=1)
        bad = ok & ~finite
        assert not bad.any(), (
            f"success reported with a non-finite value (lanes {np.flatnonzero(bad)})"
        )
    for name in ("num_steps", "max_steps"):
        assert name in sol.stats, f"stats lacks {name}"
    for c in np.unique(codes):
        note(f"result: {RESULT_CODES[int(c)]}")
    return codes


def all_finite(tree) -> bool:
    leaves = jtu.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))
    return all(bool(jnp.all(jnp.isfinite(a))) for a in leaves)
