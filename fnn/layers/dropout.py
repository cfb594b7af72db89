"""Dropout with inverted scaling."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnn.core import Layer, check_float, check_key, check_range, check_shape


def Dropout(drop_rate: float) -> Layer:
    """Zero each unit with probability `drop_rate` in training and scale the rest by 1/(1−drop_rate).

    Inverted dropout (Srivastava et al. 2014): the expected activation is unchanged, so
    evaluation (train=False) is the identity. train=True needs `key`; backward with the same
    key regenerates the same mask, so no mask is stored.
    """
    p = check_range("Dropout", "drop_rate", drop_rate, 0.0, 1.0)
    name = f"Dropout({p})"

    def init(key, input_shape):
        return check_shape(name, "input_shape", input_shape), {}, {}

    def _scale(x, key):
        keep = jax.random.bernoulli(key, 1.0 - p, x.shape)
        return jnp.where(keep, 1.0 / (1.0 - p), 0.0).astype(x.dtype)

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, ...) -> y: (N, ...)."""
        check_float(name, "x", x)
        if not train or p == 0.0:
            return x, state
        check_key(name, key, train)
        return x * _scale(x, key), state

    def backward(params, state, x, dy, *, key=None, train=False):
        """dx = dy ⊙ mask/(1−p), the same mask as the forward pass."""
        if not train or p == 0.0:
            return {}, dy
        check_key(name, key, train)
        # The forward's key again, to redraw the same mask; clone marks the reuse as intended.
        return {}, dy * _scale(dy, jax.random.clone(key))

    return Layer(name, init, apply, backward, kind="dropout")
