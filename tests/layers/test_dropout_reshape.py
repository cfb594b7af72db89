import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import batch, float_dtypes, seeds, shapes, tol

from fnn.gradcheck import check_layer
from fnn.layers.dropout import Dropout
from fnn.layers.reshape import Flatten, Reshape


@given(rate=st.sampled_from([0.0, 0.1, 0.5, 0.9]), shape=shapes(1, 3), n=batch, seed=seeds, dtype=float_dtypes,
       train=st.booleans())
def test_dropout_backward_matches_vjp(rate, shape, n, seed, dtype, train):
    check_layer(Dropout(rate), shape, key=jax.random.key(seed), batch_size=n, dtype=dtype, train=train,
                rtol=tol(dtype))


def test_dropout_statistics_and_inverted_scaling(key):
    x = jnp.ones((200, 500), jnp.float32)
    y, _ = Dropout(0.3).apply({}, {}, x, key=key, train=True)
    dropped = float(jnp.mean(y == 0))
    assert abs(dropped - 0.3) < 0.01
    np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs(float(y.mean()) - 1.0) < 0.02  # expectation preserved


def test_dropout_is_identity_in_eval_and_deterministic_per_key(key):
    x = jax.random.normal(key, (4, 6))
    np.testing.assert_array_equal(Dropout(0.5).apply({}, {}, x)[0], x)
    a, _ = Dropout(0.5).apply({}, {}, x, key=key, train=True)
    b, _ = Dropout(0.5).apply({}, {}, x, key=key, train=True)
    c, _ = Dropout(0.5).apply({}, {}, x, key=jax.random.key(1), train=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_needs_key_in_train_mode():
    with pytest.raises(ValueError, match=r"Dropout\(0.5\): a PRNG key is required when train=True"):
        Dropout(0.5).apply({}, {}, jnp.ones((2, 3)), train=True)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_rate_outside_range(rate):
    with pytest.raises(ValueError, match=r"Dropout: drop_rate must be in \[0.0, 1.0\)"):
        Dropout(rate)


@settings(max_examples=6)  # each example compiles two checks of new shapes
@given(shape=shapes(1, 4), n=batch, seed=seeds)
def test_flatten_and_reshape_backward(shape, n, seed):
    key = jax.random.key(seed)
    report = check_layer(Flatten(), shape, key=key, batch_size=n)
    assert report.output_shape == (int(np.prod(shape)),)
    report = check_layer(Reshape((-1, shape[0])), shape, key=key, batch_size=n)
    assert report.output_shape == (int(np.prod(shape)) // shape[0], shape[0])


def test_reshape_errors():
    with pytest.raises(ValueError, match=r"Reshape\(\(5, -1\)\): cannot reshape input of shape \(2, 3\)"):
        Reshape((5, -1)).init(jax.random.key(0), (2, 3))
    with pytest.raises(ValueError, match="at most one -1"):
        Reshape((-1, -1))
