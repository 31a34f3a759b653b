"""DCDM: the deep conjugate direction solver, its network, training, model files and
the shipped weights, against independent references (NumPy CG, dense solves, dense
eigenvalues, central finite differences)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import jaxsolve as js

from .helpers import finite_difference_jvp, variable_coefficient


L = js.linear
DCDM = L.DeepConjugateDirection


def identity(r):
    return r


def numpy_cg(a, b, rtol, max_steps):
    """Textbook CG (Hestenes-Stiefel) from x0 = 0, stopping on the true residual;
    returns the list of iterates."""
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    xs = [x.copy()]
    for _ in range(max_steps):
        if np.linalg.norm(b - a @ x) <= rtol * np.linalg.norm(b):
            break
        ap = a @ p
        alpha = (r @ r) / (p @ ap)
        x = x + alpha * p
        r_new = r - alpha * ap
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
        xs.append(x.copy())
    return xs


@pytest.fixture(scope="module")
def net2d():
    return L.pretrained("poisson2d")


@pytest.fixture(scope="module")
def problem():
    shape = (8, 8)
    op = L.poisson(shape, coefficient=variable_coefficient(shape))
    b = jax.random.normal(jax.random.key(3), shape)
    return op, b


# Networks are applied compiled (eager dispatch of their many small ops is slow).
apply = eqx.filter_jit(lambda net, r: net(r))


# One compiled solve shared by the contract tests (operator values and b vary).
@eqx.filter_jit
def solve_pretrained(op, b, net, rtol=1e-10):
    return L.solve(op, b, DCDM(net, rtol=rtol), throw=False)


# -- the outer iteration ------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2])
def test_identity_network_is_cg(problem, k):
    op, b = problem
    a, bf = np.asarray(op.as_matrix()), np.asarray(b).reshape(-1)
    ref = numpy_cg(a, bf, 1e-10, 500)
    sol = L.solve(op, b, DCDM(identity, rtol=1e-10, n_orthogonal=k))
    assert sol.result == js.RESULTS.successful
    # Same number of iterations as CG with the same stopping rule ...
    assert int(sol.stats["num_steps"]) == len(ref) - 1
    # ... and the same iterates (here: after 5 steps).
    five = L.solve(op, b, DCDM(identity, rtol=1e-10, max_steps=5, n_orthogonal=k),
                   throw=False)  # fmt: skip
    assert five.result == js.RESULTS.max_steps_reached
    np.testing.assert_allclose(np.asarray(five.value).reshape(-1), ref[5], rtol=1e-9,
                               atol=1e-12)  # fmt: skip


def test_identity_without_orthogonalisation_is_steepest_descent(problem):
    op, b = problem
    a, bf = np.asarray(op.as_matrix()), np.asarray(b).reshape(-1)
    x = np.zeros_like(bf)
    for _ in range(4):  # exact line search along the residual
        r = bf - a @ x
        x = x + (r @ r) / (r @ a @ r) * r
    sol = L.solve(op, b, DCDM(identity, max_steps=4, n_orthogonal=0), throw=False)
    np.testing.assert_allclose(np.asarray(sol.value).reshape(-1), x, rtol=1e-10)


def test_exact_inverse_converges_in_one_step(problem):
    op, b = problem
    inv = jnp.linalg.inv(op.as_matrix())
    net = lambda r: (inv @ r.reshape(-1)).reshape(r.shape)
    sol = L.solve(op, b, DCDM(net, rtol=1e-10))
    assert int(sol.stats["num_steps"]) == 1
    ref = jnp.linalg.solve(op.as_matrix(), b.reshape(-1)).reshape(b.shape)
    np.testing.assert_allclose(sol.value, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "net,shift",
    [
        (lambda r: jnp.zeros_like(r), 0.0),  # p = 0: p^T A p = 0
        (lambda r: r * jnp.nan, 0.0),  # non-finite direction
        (identity, -5.0),  # indefinite operator: r^T A r < 0 eventually
    ],
    ids=["zero-direction", "nan-direction", "indefinite"],
)
def test_breakdown_never_nan(net, shift):
    op = L.poisson((6, 6), shift=shift)
    b = jnp.ones((6, 6))
    sol = L.solve(op, b, DCDM(net), throw=False)
    assert sol.result == js.RESULTS.breakdown
    assert bool(jnp.all(jnp.isfinite(sol.value)))
    with pytest.raises(Exception, match="breakdown"):
        L.solve(op, b, DCDM(net))


def test_zero_rhs_and_max_steps(problem, net2d):
    op, b = problem
    sol = L.solve(op, jnp.zeros_like(b), DCDM(net2d))
    assert int(sol.stats["num_steps"]) == 0 and bool(jnp.all(sol.value == 0))
    sol = L.solve(op, b, DCDM(identity, max_steps=2), throw=False)
    assert sol.result == js.RESULTS.max_steps_reached
    assert int(sol.stats["num_steps"]) == 2 == int(sol.stats["max_steps"])


def test_nonfinite_input(problem, net2d):
    op, b = problem
    sol = solve_pretrained(op, b.at[0, 0].set(jnp.nan), net2d)
    assert sol.result == js.RESULTS.nonfinite_input


# -- the shipped networks -----------------------------------------------------------


def test_pretrained_names_and_loading(net2d):
    names = L.pretrained()
    assert isinstance(names, tuple) and {"poisson2d", "poisson3d"} <= set(names)
    assert isinstance(net2d, L.DCDMNetwork) and net2d.ndim == 2
    net3 = L.pretrained("poisson3d")
    assert net3.ndim == 3
    with pytest.raises(ValueError, match="poisson2d"):
        L.pretrained("no-such-model")


def test_pretrained_2d_beats_cg_fivefold(net2d):
    """The shipped 2-D net on 32^2 Poisson (random b, 1e-6): at most 0.2x the
    iterations of CG (NumPy reference, same stopping rule)."""
    n = 32
    op = L.poisson((n, n))
    b = jax.random.normal(jax.random.key(0), (n, n))
    cg_steps = len(numpy_cg(np.asarray(op.as_matrix()), np.asarray(b).reshape(-1),
                            1e-6, 2000)) - 1  # fmt: skip
    sol = L.solve(op, b, DCDM(net2d, rtol=1e-6))
    assert sol.result == js.RESULTS.successful
    assert int(sol.stats["num_steps"]) <= 0.2 * cg_steps
    true_r = jnp.linalg.norm(b - op.mv(sol.value)) / jnp.linalg.norm(b)
    assert true_r <= 1e-6


def test_pretrained_3d_beats_cg():
    net = L.pretrained("poisson3d")
    op = L.poisson((8, 8, 8))
    b = jax.random.normal(jax.random.key(0), (8, 8, 8))
    cg_steps = len(numpy_cg(np.asarray(op.as_matrix()), np.asarray(b).reshape(-1),
                            1e-6, 2000)) - 1  # fmt: skip
    sol = L.solve(op, b, DCDM(net, rtol=1e-6))
    assert sol.result == js.RESULTS.successful
    assert int(sol.stats["num_steps"]) <= 0.5 * cg_steps
    ref = jnp.linalg.solve(op.as_matrix(), b.reshape(-1)).reshape(b.shape)
    np.testing.assert_allclose(sol.value, ref, rtol=1e-4, atol=1e-5)


# -- the solver contract ------------------------------------------------------------


def test_matches_dense_solve_and_float32(problem, net2d):
    op, b = problem
    sol = solve_pretrained(op, b, net2d)
    ref = jnp.linalg.solve(op.as_matrix(), b.reshape(-1)).reshape(b.shape)
    assert sol.result == js.RESULTS.successful
    np.testing.assert_allclose(sol.value, ref, rtol=1e-6, atol=1e-7)
    true_r = jnp.linalg.norm(b - op.mv(sol.value))
    np.testing.assert_allclose(sol.stats["residual_norm"], true_r, rtol=1e-6)
    # float32 in, float32 out.
    op32 = L.poisson((8, 8), coefficient=variable_coefficient((8, 8), jnp.float32))
    sol32 = L.solve(op32, b.astype(jnp.float32), DCDM(net2d, rtol=1e-4))
    assert sol32.value.dtype == jnp.float32
    np.testing.assert_allclose(sol32.value, ref, rtol=1e-3, atol=1e-3)


def test_jit_no_retrace(problem, net2d):
    op, b = problem
    traces = 0

    @jax.jit
    def run(op, b):
        nonlocal traces
        traces += 1
        sol = L.solve(op, b, DCDM(net2d, rtol=1e-10), throw=False)
        return sol.value, sol.stats["num_steps"]

    eager = solve_pretrained(op, b, net2d)
    x, steps = run(op, b)
    assert int(steps) == int(eager.stats["num_steps"])
    np.testing.assert_allclose(x, eager.value, rtol=1e-10, atol=1e-12)
    op2 = jax.tree_util.tree_map(lambda a: 1.3 * a, op)
    run(op2, 2.0 * b)
    run(op, b + 1.0)
    assert traces == 1


def test_vmap_over_rhs_and_operators_equals_loop(problem, net2d):
    op, b = problem
    bs = jnp.stack([b, 2.0 * b + 1.0, jnp.zeros_like(b)])
    shifts = jnp.array([0.0, 0.5, 2.0])
    ops = jax.vmap(lambda s: L.poisson((8, 8), coefficient=op.coefficient, shift=s))(
        shifts
    )
    batched = eqx.filter_vmap(solve_pretrained, in_axes=(eqx.if_array(0), 0, None))(
        ops, bs, net2d
    )
    for i in range(3):
        single = solve_pretrained(jax.tree_util.tree_map(lambda a: a[i], ops), bs[i],
                                  net2d)  # fmt: skip
        np.testing.assert_allclose(batched.value[i], single.value, rtol=1e-12,
                                   atol=1e-14)  # fmt: skip
        assert int(batched.stats["num_steps"][i]) == int(single.stats["num_steps"])
        assert int(batched.result._value[i]) == int(single.result._value)


def test_grad_wrt_b_and_coefficient_field(problem, net2d):
    op, b = problem
    k = op.coefficient
    w = jax.random.normal(jax.random.key(7), b.shape)

    def f(b, k):
        A = L.poisson((8, 8), coefficient=k)
        return jnp.vdot(w, solve_pretrained(A, b, net2d).value)

    def f_ref(b, k):
        A = L.poisson((8, 8), coefficient=k).as_matrix()
        return jnp.vdot(w.reshape(-1), jnp.linalg.solve(A, b.reshape(-1)))

    gb, gk = jax.grad(f, argnums=(0, 1))(b, k)
    tb = jax.random.normal(jax.random.key(8), b.shape)
    tk = jax.random.normal(jax.random.key(9), k.shape)
    fd = finite_difference_jvp(f_ref, (b, k), (tb, tk))
    np.testing.assert_allclose(jnp.vdot(gb, tb) + jnp.vdot(gk, tk), fd, rtol=1e-6)
    # The weights are constants of the solve: no gradient reaches them.
    gnet = eqx.filter_grad(lambda n: jnp.vdot(w, solve_pretrained(op, b, n).value))(
        net2d
    )
    leaves = jax.tree_util.tree_leaves(gnet)
    assert leaves and all(float(jnp.max(jnp.abs(g))) == 0 for g in leaves)


def test_lineax_protocol(problem):
    op, b = problem
    sol = lx.linear_solve(op, b, DCDM(identity, rtol=1e-10))
    ref = jnp.linalg.solve(op.as_matrix(), b.reshape(-1)).reshape(b.shape)
    np.testing.assert_allclose(sol.value, ref, rtol=1e-8, atol=1e-10)


def test_obstacle_mask(net2d):
    """An obstacle domain: cells outside the mask are removed (identity rows), the
    directions are masked; the answer matches the dense solve on the fluid cells."""
    n = 12
    mask = jnp.ones((n, n)).at[4:8, 3:6].set(0.0)
    base = L.poisson((n, n))

    def mv(u):
        return mask * base.mv(mask * u) + (1 - mask) * u

    op = lx.FunctionLinearOperator(mv, jax.ShapeDtypeStruct((n, n), jnp.float64),
                                   lx.symmetric_tag)  # fmt: skip
    b = mask * jax.random.normal(jax.random.key(1), (n, n))
    sol = L.solve(op, b, DCDM(net2d, rtol=1e-8, mask=mask))
    ref = jnp.linalg.solve(op.as_matrix(), b.reshape(-1)).reshape(n, n)
    assert sol.result == js.RESULTS.successful
    np.testing.assert_allclose(sol.value, ref, rtol=1e-6, atol=1e-8)
    assert bool(jnp.all(sol.value[4:8, 3:6] == 0))


# -- bad input ----------------------------------------------------------------------


def test_bad_static_input(net2d):
    with pytest.raises(ValueError, match="n_orthogonal"):
        DCDM(net2d, n_orthogonal=-1)
    with pytest.raises(ValueError, match="rtol"):
        DCDM(net2d, rtol=-1.0)
    with pytest.raises(ValueError, match="max_steps"):
        DCDM(net2d, max_steps=0)
    with pytest.raises(ValueError, match="callable"):
        DCDM(3.0)
    with pytest.raises(ValueError, match="network_dtype"):
        DCDM(net2d, network_dtype="float16")
    b = jnp.ones((4, 4, 4))
    # A 2-D network on a 3-D operator: both are named.
    with pytest.raises(ValueError, match=r"ndim=2.*PoissonOperator.*\(4, 4, 4\)"):
        L.solve(L.poisson((4, 4, 4)), b, DCDM(net2d))
    # Not a grid stencil: a dense matrix acting on vectors.
    with pytest.raises(ValueError, match=r"MatrixLinearOperator.*\(16,\)"):
        L.solve(jnp.eye(16), jnp.ones(16), DCDM(net2d))
    with pytest.raises(ValueError, match="mask"):
        L.solve(L.poisson((4, 4)), jnp.ones((4, 4)), DCDM(net2d, mask=jnp.ones((5, 5))))
    with pytest.raises(ValueError, match="ndim"):
        L.DCDMNetwork(4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="width"):
        L.DCDMNetwork(2, key=jax.random.key(0), width=0)


# -- the network --------------------------------------------------------------------


def test_network_shapes_dtypes_and_levels():
    net = L.DCDMNetwork(2, key=jax.random.key(0), width=4)
    for shape in [(8, 8), (13, 7)]:
        r = jax.random.normal(jax.random.key(1), shape)
        q64 = apply(net, r)
        q32 = apply(net, r.astype(jnp.float32))
        assert q64.shape == shape and q64.dtype == jnp.float64
        assert q32.dtype == jnp.float32
        # Weights are stored in float32 and cast on use: same function.
        np.testing.assert_allclose(q32, q64, rtol=1e-4, atol=1e-5)
        # Scale-invariant input normalisation.
        np.testing.assert_allclose(apply(net, 7.0 * r), q64, rtol=1e-10, atol=1e-12)
    assert net.num_levels((32, 32)) == 3 and net.num_levels((256, 256)) == 6
    assert (
        L.DCDMNetwork(2, key=jax.random.key(0), max_levels=1).num_levels((64, 64)) == 1
    )
    net3 = L.DCDMNetwork(3, key=jax.random.key(0), width=4, mask_channel=True)
    mask = jnp.ones((6, 5, 4)).at[2:4, 1:3, :].set(0.0)
    q = net3(jnp.ones((6, 5, 4)), mask)
    assert q.shape == (6, 5, 4) and bool(jnp.all(q[2:4, 1:3, :] == 0))
    with pytest.raises(ValueError, match="mask"):
        net3(jnp.ones((6, 5, 4)))
    with pytest.raises(ValueError, match="3-D"):
        net3(jnp.ones((6, 5)))


# -- training -----------------------------------------------------------------------


def test_lanczos_ritz_values_match_dense_eigenvalues():
    op = L.poisson((5, 6), coefficient=variable_coefficient((5, 6)))
    values, vectors = L.lanczos_ritz(op, jax.random.key(0), 30)
    eig = np.linalg.eigvalsh(np.asarray(op.as_matrix()))
    np.testing.assert_allclose(values, eig, rtol=1e-9, atol=1e-10)
    v = np.asarray(vectors).reshape(30, -1)
    np.testing.assert_allclose(v @ v.T, np.eye(30), atol=1e-9)
    av = jax.vmap(op.mv)(vectors).reshape(30, -1)
    np.testing.assert_allclose(av, values[:, None] * v, atol=1e-8)


def test_loss_is_zero_for_exact_inverse_and_scale_free():
    op = L.poisson((5, 5))
    inv = jnp.linalg.inv(op.as_matrix())
    exact = lambda r: (inv @ r.reshape(-1)).reshape(r.shape)
    b = jax.random.normal(jax.random.key(0), (4, 5, 5))
    assert float(L.dcdm_loss(exact, op, b)) < 1e-20
    scaled = lambda r: -3.0 * exact(r) + 0.1 * r
    loss = L.dcdm_loss(scaled, op, b)
    np.testing.assert_allclose(L.dcdm_loss(lambda r: 5.0 * scaled(r), op, b), loss,
                               rtol=1e-12)  # fmt: skip
    # Identity network: the residual of one steepest-descent step, by hand.
    a = np.asarray(op.as_matrix())
    bf = np.asarray(b).reshape(4, -1)
    ref = np.mean([np.sum((x - (x @ x) / (x @ a @ x) * (a @ x)) ** 2) for x in bf])
    np.testing.assert_allclose(L.dcdm_loss(identity, op, b), ref, rtol=1e-12)


def test_training_reduces_loss_and_is_reproducible():
    op = L.poisson((8, 8), dtype=jnp.float32)
    net = L.DCDMNetwork(2, key=jax.random.key(0), width=4)
    train = lambda: L.train_dcdm(net, op, jax.random.key(1), steps=40, batch_size=4,
                                 lanczos_steps=20)  # fmt: skip
    trained, losses = train()
    assert losses.shape == (40,) and losses.dtype == jnp.float32
    assert float(jnp.mean(losses[-10:])) < 0.7 * float(jnp.mean(losses[:5]))
    trained2, losses2 = train()
    np.testing.assert_array_equal(losses, losses2)
    with pytest.raises(ValueError, match="3-D"):
        L.train_dcdm(
            net, L.poisson((4, 4, 4)), jax.random.key(0), steps=1, batch_size=1
        )
    with pytest.raises(ValueError, match="steps"):
        L.train_dcdm(net, op, jax.random.key(0), steps=0, batch_size=1)


# -- model files --------------------------------------------------------------------


def test_save_load_round_trip_and_bad_files(tmp_path, net2d):
    path = js.save(tmp_path / "net.jsv", net2d,
                   hyperparameters={"network": net2d.hyperparameters()})  # fmt: skip
    hyper = js.load_header(path)["hyperparameters"]["network"]
    skeleton = L.DCDMNetwork(key=jax.random.key(5), **hyper)
    loaded = js.load(path, like=skeleton)
    r = jax.random.normal(jax.random.key(0), (16, 16))
    np.testing.assert_array_equal(apply(loaded, r), apply(net2d, r))
    # Truncated.
    data = path.read_bytes()
    (tmp_path / "cut.jsv").write_bytes(data[: len(data) - 10])
    with pytest.raises(ValueError, match="cut.jsv.*truncated"):
        js.load(tmp_path / "cut.jsv", like=skeleton)
    # Corrupted payload.
    bad = bytearray(data)
    bad[-5] ^= 0xFF
    (tmp_path / "bad.jsv").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="bad.jsv.*corrupted"):
        js.load(tmp_path / "bad.jsv", like=skeleton)
    # Another class, other hyper-parameters, missing file.
    with pytest.raises(ValueError, match="net.jsv.*MLP"):
        js.load(path, like=eqx.nn.MLP(2, 1, 4, 1, key=jax.random.key(0)))
    wider = L.DCDMNetwork(2, key=jax.random.key(0), width=hyper["width"] + 1)
    with pytest.raises(ValueError, match="net.jsv"):
        js.load(path, like=wider)
    with pytest.raises(FileNotFoundError, match="missing.jsv"):
        js.load(tmp_path / "missing.jsv", like=skeleton)
