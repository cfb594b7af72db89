import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import batch, float_dtypes, seeds, shapes, tol

from fnn.gradcheck import check_layer
from fnn.layers.activation import Elu, Gelu, LeakyRelu, LogSoftmax, Relu, Sigmoid, Softmax, Tanh

ACTIVATIONS = {
    "relu": Relu(), "leaky": LeakyRelu(0.1), "elu": Elu(0.7), "gelu": Gelu(), "gelu_tanh": Gelu(approximate=True),
    "sigmoid": Sigmoid(), "tanh": Tanh(), "softmax": Softmax(), "log_softmax": LogSoftmax(),
}
REFERENCES = {
    "relu": jax.nn.relu, "leaky": lambda x: jax.nn.leaky_relu(x, 0.1), "elu": lambda x: jax.nn.elu(x, 0.7),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False), "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "softmax": jax.nn.softmax, "log_softmax": jax.nn.log_softmax,
}


@given(which=st.sampled_from(sorted(ACTIVATIONS)), shape=shapes(1, 3), n=batch, seed=seeds, dtype=float_dtypes)
def test_activation_backward_matches_vjp_and_fd(which, shape, n, seed, dtype):
    key = jax.random.key(seed)
    # Keep inputs away from the kink at 0 so finite differences are valid for ReLU-like units.
    x = jax.random.normal(key, (n, *shape), dtype)
    x = jnp.where(jnp.abs(x) < 1e-2, 0.5, x)
    report = check_layer(ACTIVATIONS[which], shape, key=key, x=x, dtype=dtype, rtol=tol(dtype))
    assert report.output_shape == shape


@pytest.mark.parametrize("which", sorted(ACTIVATIONS))
def test_activation_forward_matches_jax_nn(which):
    x = jnp.linspace(-4.0, 4.0, 24, dtype=jnp.float64).reshape(3, 8)
    y, state = ACTIVATIONS[which].apply({}, {}, x)
    np.testing.assert_allclose(y, REFERENCES[which](x), rtol=1e-12, atol=1e-14)
    assert state == {} and y.dtype == x.dtype


def test_relu_derivative_at_zero_is_zero_like_autodiff():
    x = jnp.zeros((1, 3), jnp.float64)
    _, dx = Relu().backward({}, {}, x, jnp.ones_like(x))
    np.testing.assert_array_equal(dx, jax.grad(lambda x: Relu().apply({}, {}, x)[0].sum())(x))
    np.testing.assert_array_equal(dx, 0.0)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_every_activation_agrees_with_autodiff_at_zero(alpha):
    # Kinks and ties sit at exactly 0, which dead ReLUs and tied Maxout pieces feed forward.
    # Elu's derivative there is α (the left branch); autodiff of min(x, 0) would split it to α/2.
    x = jnp.zeros((1, 3), jnp.float64)
    for layer in [Relu(), LeakyRelu(0.1), Elu(alpha)]:
        _, dx = layer.backward({}, {}, x, jnp.ones_like(x))
        np.testing.assert_array_equal(dx, jax.grad(lambda x, f=layer: f.apply({}, {}, x)[0].sum())(x),
                                      err_msg=layer.name)
    np.testing.assert_array_equal(Elu(alpha).backward({}, {}, x, jnp.ones_like(x))[1], alpha)


def test_softmax_is_stable_for_huge_logits():
    x = jnp.array([[1000.0, 1000.0, -1000.0]])
    y, _ = Softmax().apply({}, {}, x)
    np.testing.assert_allclose(y, [[0.5, 0.5, 0.0]], atol=1e-12)
    _, dx = LogSoftmax().backward({}, {}, x, jnp.ones_like(x))
    assert bool(jnp.all(jnp.isfinite(dx)))


def test_elu_large_negative_input_has_finite_grad():
    x = jnp.array([[-800.0, 800.0]])
    _, dx = Elu().backward({}, {}, x, jnp.ones_like(x))
    np.testing.assert_allclose(dx, [[0.0, 1.0]], atol=1e-300)


@pytest.mark.parametrize("layer", [Relu(), Sigmoid(), Softmax()])
def test_activation_refuses_integer_input(layer):
    with pytest.raises(ValueError, match=f"{layer.name}: expected x of a floating dtype, got int32"):
        layer.apply({}, {}, jnp.ones((2, 3), jnp.int32))


@pytest.mark.parametrize("ctor, arg, match", [
    (LeakyRelu, -0.1, "LeakyRelu: negative_slope must be in"),
    (Elu, 0.0, "Elu: alpha must be in"),
    (LeakyRelu, float("nan"), "LeakyRelu: negative_slope must be in"),
])
def test_activation_bad_hyperparameters(ctor, arg, match):
    with pytest.raises(ValueError, match=match):
        ctor(arg)


def test_jit_equals_eager_for_every_activation(key):
    x = jax.random.normal(key, (4, 5), jnp.float32)
    for layer in ACTIVATIONS.values():
        eager, _ = layer.apply({}, {}, x)
        jitted, _ = jax.jit(layer.apply)({}, {}, x)
        np.testing.assert_allclose(eager, jitted, rtol=1e-6, atol=1e-7, err_msg=layer.name)
