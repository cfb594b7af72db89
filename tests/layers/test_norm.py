import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FD_RTOL
from hypothesis import given
from hypothesis import strategies as st
from strategies import float_dtypes, seeds, tol

from fnn.gradcheck import check_layer
from fnn.layers.norm import BatchNorm


def random_params_state(key, c, dtype=jnp.float32):
    """Non-trivial scale, bias and running statistics, so that every term of the backward matters."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = {"scale": jax.random.normal(k1, (c,), dtype) + 1, "bias": jax.random.normal(k2, (c,), dtype)}
    state = {"mean": jax.random.normal(k3, (c,), jnp.float32),
             "var": jnp.exp(jax.random.normal(k4, (c,), jnp.float32))}
    return params, state


@st.composite
def bn_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    axis = draw(st.sampled_from([-1, 1] + ([2, -2] if len(shape) >= 2 else [])))
    return shape, axis


@given(case=bn_cases(), n=st.integers(3, 5), train=st.booleans(), seed=seeds, dtype=float_dtypes)
def test_backward_matches_vjp(case, n, train, seed, dtype):
    """n >= 3: with two values per channel x̂ = ±1 whatever x; dx is then cancellation (noise in float32)."""
    shape, axis = case
    c = shape[axis if axis < 0 else axis - 1]
    params, state = random_params_state(jax.random.key(seed), c)
    x = np.random.default_rng(seed).standard_normal((n, *shape)).astype(dtype)  # host RNG: nothing to compile
    check_layer(BatchNorm(axis=axis), shape, key=jax.random.key(seed), x=x, dtype=dtype, train=train,
                params=params, state=state, rtol=tol(dtype), fd=False)


@pytest.mark.parametrize("axis, shape, train", [(1, (3, 2, 2), True)])
def test_backward_matches_finite_differences(axis, shape, train, key):
    c = shape[axis if axis < 0 else axis - 1]
    params, state = random_params_state(key, c)
    report = check_layer(BatchNorm(axis=axis), shape, key=key, batch_size=3, train=train, params=params,
                         state=state, fd=True, fd_rtol=FD_RTOL, fd_directions=1)
    assert report.fd_rel_err <= FD_RTOL


def numpy_batchnorm(x, scale, bias, mean, var, eps, axis):
    reduce = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    bshape = [1] * x.ndim
    bshape[axis] = -1
    xhat = (x - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + eps)
    return scale.reshape(bshape) * xhat + bias.reshape(bshape), reduce


@pytest.mark.parametrize("running_var", ["unbiased", "biased"])
def test_train_and_eval_against_numpy(running_var, key):
    x = np.asarray(jax.random.normal(key, (4, 3, 5), jnp.float64)) * 2 + 1
    layer = BatchNorm(momentum=0.8, eps=1e-3, axis=1, running_var=running_var)
    _, p0, s0 = layer.init(key, (3, 5))
    params = jax.tree.map(lambda a: a + 0.5, p0)
    y, state = layer.apply(params, s0, jnp.asarray(x), train=True)
    reduce = (0, 2)
    mean, var = x.mean(reduce), x.var(reduce)
    ref, _ = numpy_batchnorm(x, np.full(3, 1.5), np.full(3, 0.5), mean, var, 1e-3, 1)
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    n = 4 * 5
    var_in = var * n / (n - 1) if running_var == "unbiased" else var
    np.testing.assert_allclose(state["mean"], 0.8 * 0 + 0.2 * mean, rtol=1e-6)
    np.testing.assert_allclose(state["var"], 0.8 * 1 + 0.2 * var_in, rtol=1e-6)
    assert state["mean"].dtype == state["var"].dtype == jnp.float32
    y_eval, state_eval = layer.apply(params, state, jnp.asarray(x), train=False)
    ref_eval, _ = numpy_batchnorm(x, np.full(3, 1.5), np.full(3, 0.5), np.asarray(state["mean"], np.float64),
                                  np.asarray(state["var"], np.float64), 1e-3, 1)
    np.testing.assert_allclose(y_eval, ref_eval, rtol=1e-12)
    assert state_eval is state


def test_train_output_is_normalized_per_channel(key):
    x = jax.random.normal(key, (8, 4, 4, 3), jnp.float64) * 3 + 2
    y, _ = BatchNorm().apply(*BatchNorm().init(key, (4, 4, 3))[1:], x, train=True)
    np.testing.assert_allclose(y.mean((0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var((0, 1, 2)), 1, rtol=1e-5)


def test_backward_train_formula_literally(key):
    """dx = (scale/σ)·(dy − mean(dy) − x̂·mean(dy·x̂)), written out in NumPy."""
    x = np.asarray(jax.random.normal(key, (5, 2), jnp.float64))
    dy = np.asarray(jax.random.normal(jax.random.key(1), (5, 2), jnp.float64))
    params = {"scale": jnp.array([2.0, -1.0], jnp.float64), "bias": jnp.zeros(2, jnp.float64)}
    state = {"mean": jnp.zeros(2, jnp.float32), "var": jnp.ones(2, jnp.float32)}
    dparams, dx = BatchNorm(eps=1e-5).backward(params, state, jnp.asarray(x), jnp.asarray(dy), train=True)
    sigma = np.sqrt(x.var(0) + 1e-5)
    xhat = (x - x.mean(0)) / sigma
    ref = np.array([2.0, -1.0]) / sigma * (dy - dy.mean(0) - xhat * (dy * xhat).mean(0))
    np.testing.assert_allclose(dx, ref, rtol=1e-12)
    np.testing.assert_allclose(dparams["scale"], (dy * xhat).sum(0), rtol=1e-12)
    np.testing.assert_allclose(dparams["bias"], dy.sum(0), rtol=1e-12)


def test_state_keeps_dtype_and_jit_equals_eager(key):
    layer = BatchNorm()
    _, params, state = layer.init(key, (3,))
    x = jax.random.normal(key, (4, 3), jnp.float64)
    traces = []

    @jax.jit
    def step(params, state, x):
        traces.append(1)
        return layer.apply(params, state, x, train=True)

    y, new_state = step(params, state, x)
    step(params, new_state, x + 1)
    assert len(traces) == 1
    assert y.dtype == jnp.float64 and new_state["var"].dtype == jnp.float32
    y_eager, state_eager = layer.apply(params, state, x, train=True)
    np.testing.assert_allclose(y, y_eager, rtol=1e-12)
    np.testing.assert_allclose(new_state["var"], state_eager["var"], rtol=1e-6)


def test_init_shapes(key):
    out, params, state = BatchNorm(axis=1).init(key, (6, 5, 5))
    assert out == (6, 5, 5) and params["scale"].shape == state["mean"].shape == (6,)
    assert BatchNorm().init(key, (6, 5))[1]["bias"].shape == (5,)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(BatchNorm().init(key, (2,))[1:]))


def test_batch_of_one_in_train_mode():
    layer = BatchNorm()
    _, params, state = layer.init(None, (4,))
    with pytest.raises(ValueError, match=r"BatchNorm: train=True needs more than one value per.*1, 4"):
        layer.apply(params, state, jnp.ones((1, 4)), train=True)
    y, _ = layer.apply(params, state, jnp.ones((1, 4)), train=False)  # eval mode is fine
    assert y.shape == (1, 4)
    layer.apply(params, state, jnp.ones((1, 2, 4)), train=True)  # 2 values per channel: fine


@pytest.mark.parametrize("build, match", [
    (lambda: BatchNorm(momentum=1.0), r"BatchNorm: momentum must be in \[0.0, 1.0\)"),
    (lambda: BatchNorm(eps=0.0), r"BatchNorm: eps must be in \(0.0, inf\)"),
    (lambda: BatchNorm(axis=0), r"BatchNorm: axis must be a nonzero int"),
    (lambda: BatchNorm(running_var="sample"), r"running_var must be one of \['unbiased', 'biased'\]"),
])
def test_bad_hyperparameters(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_shapes():
    layer = BatchNorm()
    _, params, state = layer.init(None, (4,))
    msg = r"BatchNorm: expected x of shape \(N, 4\) \(4 channels on axis -1\), got \(3, 5\)"
    with pytest.raises(ValueError, match=msg):
        layer.apply(params, state, jnp.ones((3, 5)))
    with pytest.raises(ValueError, match=r"BatchNorm\(axis=3\): axis 3 is out of range for x of rank 3"):
        BatchNorm(axis=3).init(None, (2, 2))
    with pytest.raises(ValueError, match=r"BatchNorm: expected x of shape \(N, \.\.\., C\), got \(4,\)"):
        layer.apply(params, state, jnp.ones((4,)))
