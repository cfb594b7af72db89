import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from strategies import batch, dims, float_dtypes, seeds, tol

from fnn.gradcheck import check_layer
from fnn.layers.dense import Dense, Maxout


@given(d=dims, m=dims, n=batch, seed=seeds, dtype=float_dtypes)
def test_dense_backward_matches_vjp_and_fd(d, m, n, seed, dtype):
    report = check_layer(Dense(m), (d,), key=jax.random.key(seed), batch_size=n, dtype=dtype, rtol=tol(dtype))
    assert report.output_shape == (m,)


@given(d=dims, m=dims, k=dims, n=batch, seed=seeds, dtype=float_dtypes)
def test_maxout_backward_matches_vjp_and_fd(d, m, k, n, seed, dtype):
    check_layer(Maxout(m, k), (d,), key=jax.random.key(seed), batch_size=n, dtype=dtype, rtol=tol(dtype))


def test_dense_formula_against_numpy(key):
    _, params, _ = Dense(3).init(key, (4,))
    x = np.arange(8.0).reshape(2, 4)
    y, _ = Dense(3).apply(jax.tree.map(lambda a: a.astype(jnp.float64), params), {}, jnp.asarray(x))
    np.testing.assert_allclose(y, x @ np.asarray(params["w"], np.float64) + np.asarray(params["b"]), rtol=1e-12)


def test_dense_backward_course_formulas(key):
    """dL/dX = dL/dY·Wᵀ and dL/dW = Xᵀ·dL/dY, literally."""
    w = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    x = jnp.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]])
    dy = jnp.array([[1.0, -1.0], [0.5, 2.0]])
    dparams, dx = Dense(2).backward({"w": w, "b": jnp.zeros(2)}, {}, x, dy)
    np.testing.assert_allclose(dx, [[-1.0, -1.0, -1.0], [4.5, 9.5, 14.5]])
    np.testing.assert_allclose(dparams["w"], [[2.0, 3.0], [0.5, 2.0], [-1.0, 1.0]])
    np.testing.assert_allclose(dparams["b"], [1.5, 1.0])


def test_maxout_ties_split_like_autodiff(key):
    """Equal pieces (identical weights) share the gradient as jax.vjp of max does."""
    layer = Maxout(2, 3)
    _, params, _ = layer.init(key, (4,))
    w = jnp.repeat(params["w"][..., :1], 3, axis=-1).astype(jnp.float64)
    params = {"w": w, "b": jnp.zeros((2, 3), jnp.float64)}
    x = jax.random.normal(key, (3, 4), jnp.float64)
    report = check_layer(layer, (4,), key=key, x=x, params=params, fd=False)
    assert report.vjp_rel_err < 1e-12


def test_dense_keeps_float32_and_jit_equals_eager(key):
    layer = Dense(5)
    _, params, _ = layer.init(key, (3,))
    x = jax.random.normal(key, (4, 3), jnp.float32)
    y_eager, _ = layer.apply(params, {}, x)
    y_jit, _ = jax.jit(layer.apply)(params, {}, x)
    assert y_eager.dtype == jnp.float32 and params["w"].dtype == jnp.float32
    np.testing.assert_array_equal(y_eager, y_jit)


def test_dense_no_retrace_on_second_call(key):
    traces = []
    layer = Dense(2)
    _, params, _ = layer.init(key, (3,))

    @jax.jit
    def f(params, x):
        traces.append(1)
        return layer.apply(params, {}, x)[0]

    x = jnp.ones((4, 3), jnp.float32)
    f(params, x)
    f(params, x + 1)
    assert len(traces) == 1


def test_dense_mixed_dtypes_compute_in_common_dtype(key):
    _, params, _ = Dense(2).init(key, (3,))
    with jax.numpy_dtype_promotion("standard"):
        y, _ = Dense(2).apply(params, {}, jnp.ones((1, 3), jnp.float64))
    assert y.dtype == jnp.float64


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_dense_bad_out_dim(bad):
    with pytest.raises(ValueError, match="Dense: out_dim must be a positive int"):
        Dense(bad)
