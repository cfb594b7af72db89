"""Residual and Shared around the conv layers: identity and projected shortcuts, BatchNorm inside."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import float_dtypes, seeds, tol

from fnn.gradcheck import check_layer
from fnn.layers.activation import Relu
from fnn.layers.combinators import Residual, Shared, serial
from fnn.layers.conv import Conv1D, Conv2D
from fnn.layers.dense import Dense
from fnn.layers.norm import BatchNorm
from fnn.layers.pool import GlobalAvgPool, MaxPool2D


def conv_block(c_out, stride, batch_norm):
    bn = [BatchNorm()] if batch_norm else []
    return serial(Conv2D(c_out, 3, stride=stride, padding="SAME"), *bn, Relu(),
                  Conv2D(c_out, 3, padding="SAME"))


# Whole blocks compile slowly: a third of the profile's examples.
THIRD = settings(max_examples=max(1, settings().max_examples // 3))


@THIRD
@given(size=st.integers(2, 5), c_in=st.integers(1, 3), c_out=st.integers(1, 3), stride=st.integers(1, 2),
       batch_norm=st.booleans(), train=st.booleans(), seed=seeds, dtype=float_dtypes)
def test_conv_residual_backward(size, c_in, c_out, stride, batch_norm, train, seed, dtype):
    """Identity shortcut when shapes agree, else the automatic strided 1x1 projection."""
    layer = Residual(conv_block(c_out, stride, batch_norm))
    x = np.random.default_rng(seed).standard_normal((2, size, size, c_in)).astype(dtype)
    report = check_layer(layer, (size, size, c_in), key=jax.random.key(seed), x=x, dtype=dtype,
                         train=train, rtol=tol(dtype), fd=False)
    o = -(-size // stride)
    assert report.output_shape == (o, o, c_out)
    params = jax.eval_shape(lambda k: layer.init(k, (size, size, c_in))[1], jax.random.key(seed))
    projected = (c_in, stride) != (c_out, 1)
    assert (params["shortcut"] != {}) == projected
    if projected:
        assert params["shortcut"]["w"].shape == (1, 1, c_in, c_out) and "b" not in params["shortcut"]


@pytest.mark.parametrize("d, m", [(3, 3), (3, 5)], ids=["identity", "projected"])
def test_dense_residual_float32(d, m, key):
    layer = Residual(serial(Dense(4), Relu(), Dense(m)))
    report = check_layer(layer, (d,), key=key, dtype=jnp.float32, rtol=tol(jnp.float32))
    assert report.output_shape == (m,)
    params = jax.eval_shape(lambda k: layer.init(k, (d,))[1], key)
    assert (params["shortcut"] == {}) == (d == m)


def test_residual_threads_batchnorm_state(key):
    layer = Residual(serial(Conv2D(2, 3, padding="SAME"), BatchNorm()))
    _, params, state = layer.init(key, (4, 4, 2))
    x = jax.random.normal(key, (3, 4, 4, 2))
    apply = jax.jit(layer.apply, static_argnames="train")
    y, new_state = apply(params, state, x, train=True)
    assert not np.allclose(new_state["block"][1]["mean"], state["block"][1]["mean"])
    _, eval_state = apply(params, new_state, x, train=False)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), eval_state, new_state))
    # train-mode BatchNorm output has zero mean per channel, so the block adds nothing on average
    np.testing.assert_allclose((y - x).mean((0, 1, 2)), 0, atol=1e-5)


def test_conv_projection_is_linear_shortcut(key):
    """With a zero block, y is the projection alone: a strided 1x1 conv without bias."""
    zeros = lambda k, s, dtype=jnp.float32: jnp.zeros(s, dtype)
    block = serial(Conv2D(3, 1, stride=2, padding="SAME", w_init=zeros))
    layer = Residual(block)
    _, params, state = layer.init(key, (5, 5, 2))
    x = jax.random.normal(key, (1, 5, 5, 2), jnp.float32)
    y, _ = layer.apply(params, state, x)
    w = params["shortcut"]["w"][0, 0]
    np.testing.assert_allclose(y, x[:, ::2, ::2] @ w, rtol=1e-5, atol=1e-6)


def test_mismatched_rank_needs_explicit_shortcut(key):
    with pytest.raises(ValueError, match="Residual: cannot project"):
        Residual(serial(Conv1D(2, 2), GlobalAvgPool())).init(key, (4, 3))


def test_shared_conv_embedding(key):
    """A triplet conv embedding: one set of weights, BatchNorm state threaded through the branches."""
    net = serial(Conv2D(3, 3, padding="SAME"), BatchNorm(), Relu(), MaxPool2D(2), GlobalAvgPool(), Dense(2))
    layer = Shared(net)
    keys = jax.random.split(key, 3)
    xs = tuple(jax.random.normal(k, (n, 4, 4, 2), jnp.float64) for k, n in zip(keys, (2, 1, 3), strict=True))
    check_layer(layer, (4, 4, 2), key=key, x=xs, train=True, fd=False)

    @jax.jit
    def run(key, xs):
        _, params, state = layer.init(key, (4, 4, 2))
        ys, new_state = layer.apply(params, state, xs, train=True)
        expected = state
        for x in xs:  # the branches, one after the other
            _, expected = net.apply(params, expected, x, train=True)
        return ys, state, new_state, expected

    ys, state, new_state, expected = run(key, xs)
    assert [y.shape for y in ys] == [(2, 2), (1, 2), (3, 2)]
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.allclose(new_state[1]["mean"], state[1]["mean"])
