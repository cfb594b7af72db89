"""Flatten and Reshape (the batch axis is kept)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fnn.core import Layer, check_shape, fmt_shape


def Flatten() -> Layer:
    """(N, d1, d2, ...) -> (N, d1·d2·...)."""
    name = "Flatten"

    def init(key, input_shape):
        shape = check_shape(name, "input_shape", input_shape)
        return (math.prod(shape),), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return x.reshape(x.shape[0], -1), state

    def backward(params, state, x, dy, *, key=None, train=False):
        return {}, dy.reshape(x.shape)

    return Layer(name, init, apply, backward, kind="flatten")


def Reshape(shape: Sequence[int]) -> Layer:
    """(N, *input_shape) -> (N, *shape); one entry of `shape` may be -1."""
    shape = tuple(int(d) for d in shape)
    name = f"Reshape({fmt_shape(shape)})"
    if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
        raise ValueError(f"{name}: shape may hold positive sizes and at most one -1, got {shape}")

    def init(key, input_shape):
        input_shape = check_shape(name, "input_shape", input_shape)
        size, known = math.prod(input_shape), math.prod(d for d in shape if d != -1)
        out = tuple(size // known if d == -1 else d for d in shape)
        if math.prod(out) != size:
            raise ValueError(f"{name}: cannot reshape input of shape {fmt_shape(input_shape)} "
                             f"({size} values) to {fmt_shape(shape)}")
        return out, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, *input_shape) -> y: (N, *shape)."""
        size, known = math.prod(np.shape(x)[1:]), math.prod(d for d in shape if d != -1)
        if np.ndim(x) < 1 or (size % known if -1 in shape else size != known):
            raise ValueError(f"{name}: cannot reshape x of shape {fmt_shape(np.shape(x))} "
                             f"({size} values per example) to {fmt_shape((None, *shape))}")
        return x.reshape(x.shape[0], *shape), state

    def backward(params, state, x, dy, *, key=None, train=False):
        return {}, dy.reshape(x.shape)

    return Layer(name, init, apply, backward, kind="reshape")
