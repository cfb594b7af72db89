"""Batch normalization (Ioffe & Szegedy 2015), with running statistics in ``state``."""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from fnn.core import (
    Layer,
    check_choice,
    check_float,
    check_params,
    check_range,
    check_shape,
    fmt_shape,
    promote,
)


def BatchNorm(momentum: float = 0.9, eps: float = 1e-5, axis: int = -1,
              running_var: str = "unbiased") -> Layer:
    """y = scale·(x − μ)/√(σ² + eps) + bias, per channel, statistics over every axis but `axis`.

    train=True normalizes with the batch mean μ and the biased batch variance σ², and returns
    the running statistics updated as ``running = momentum·running + (1 − momentum)·batch``:
    `momentum` is the weight of the OLD value (PyTorch's momentum is 1 − ours; 0.9 here is
    torch's default 0.1). The variance that enters the running average is, per `running_var`,
    "unbiased" (σ²·n/(n − 1), as PyTorch, the default) or "biased" (σ², as flax and Keras),
    n being the number of values per channel. train=False normalizes with the running
    statistics and leaves them unchanged.

    Args:
      momentum: in [0, 1).
      eps: added to the variance, > 0.
      axis: the channel axis of x (batch axis included, so -1 or 1..x.ndim-1; not 0).
      running_var: "unbiased" or "biased".
    params = {"scale": ones(C), "bias": zeros(C)}, state = {"mean": zeros(C), "var": ones(C)}
    (float32; the state keeps its dtype through training).
    """
    momentum = check_range("BatchNorm", "momentum", momentum, 0.0, 1.0)
    eps = check_range("BatchNorm", "eps", eps, 0.0, math.inf, low_inclusive=False)
    check_choice("BatchNorm", "running_var", running_var, ("unbiased", "biased"))
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis == 0:
        raise ValueError(f"BatchNorm: axis must be a nonzero int (axis 0 is the batch), got {axis!r}")
    axis = int(axis)
    name = "BatchNorm" if axis == -1 else f"BatchNorm(axis={axis})"

    def _axis(ndim):
        """The channel axis of an x of rank ndim (batch axis included)."""
        a = axis + ndim if axis < 0 else axis
        if not 1 <= a < ndim:
            raise ValueError(f"{name}: axis {axis} is out of range for x of rank {ndim} "
                             f"(axis 0 is the batch)")
        return a

    def _setup(params, state, x):
        """Check x, and return (axis, reduced axes, broadcast shape, values per channel)."""
        if np.ndim(x) < 2:
            raise ValueError(f"{name}: expected x of shape (N, ..., C), got {fmt_shape(np.shape(x))}")
        a = _axis(np.ndim(x))
        scale: Any = params.get("scale") if isinstance(params, dict) else None
        c = np.shape(scale)[0] if np.ndim(scale) == 1 else None
        check_params(name, "params", params, {"scale": (c,), "bias": (c,)})
        check_params(name, "state", state, {"mean": (c,), "var": (c,)})
        if x.shape[a] != c:
            expected = tuple(c if i == a else None for i in range(x.ndim))
            raise ValueError(f"{name}: expected x of shape {fmt_shape(expected)} "
                             f"({c} channels on axis {axis}), got {fmt_shape(x.shape)}")
        check_float(name, "x", x)
        reduce = tuple(i for i in range(x.ndim) if i != a)
        return reduce, tuple(c if i == a else 1 for i in range(x.ndim)), math.prod(x.shape) // c

    def _stats(params, state, x, train):
        """x̂, 1/√(σ² + eps), μ, σ² (common dtype, shaped for broadcasting), reduced axes, bshape, n."""
        reduce, bshape, n = _setup(params, state, x)
        x, scale = promote(x, params["scale"])
        if train:
            if n < 2:
                raise ValueError(f"{name}: train=True needs more than one value per channel to compute batch "
                                 f"statistics, got x of shape {fmt_shape(x.shape)}")
            mean = x.mean(reduce, keepdims=True)
            var = jnp.square(x - mean).mean(reduce, keepdims=True)
        else:
            mean = state["mean"].astype(x.dtype).reshape(bshape)
            var = state["var"].astype(x.dtype).reshape(bshape)
        inv = 1 / jnp.sqrt(var + np.asarray(eps, x.dtype))
        return (x - mean) * inv, inv, mean, var, reduce, bshape, n

    def init(key, input_shape):
        shape = check_shape(name, "input_shape", input_shape)
        a = _axis(len(shape) + 1)
        c = shape[a - 1]
        params = {"scale": jnp.ones((c,), jnp.float32), "bias": jnp.zeros((c,), jnp.float32)}
        return shape, params, {"mean": jnp.zeros((c,), jnp.float32), "var": jnp.ones((c,), jnp.float32)}

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, ..., C, ...) -> y: same shape; new_state holds the updated running statistics when train."""
        xhat, _, mean, var, _, bshape, n = _stats(params, state, x, train)
        xhat, scale, bias = promote(xhat, params["scale"], params["bias"])
        y = scale.reshape(bshape) * xhat + bias.reshape(bshape)
        if not train:
            return y, state
        var_in = var * np.asarray(n / (n - 1), var.dtype) if running_var == "unbiased" else var

        def ema(old, new):
            return (momentum * old + (1 - momentum) * new.reshape(-1).astype(old.dtype)).astype(old.dtype)

        return y, {"mean": ema(state["mean"], mean), "var": ema(state["var"], var_in)}

    def backward(params, state, x, dy, *, key=None, train=False):
        """dscale = Σ dy·x̂, dbias = Σ dy. Eval: dx = dy·scale/σ. Train, where μ and σ depend on x:
        dx = (scale/σ)·(dy − mean(dy) − x̂·mean(dy·x̂)) (docs/derivations.md, "Batch normalization")."""
        xhat, inv, _, _, reduce, bshape, _ = _stats(params, state, x, train)
        xhat, scale, dy = promote(xhat, params["scale"], dy)
        dparams = {"scale": (dy * xhat).sum(reduce).astype(params["scale"].dtype),
                   "bias": dy.sum(reduce).astype(params["bias"].dtype)}
        g = scale.reshape(bshape) * inv.astype(dy.dtype)
        if train:
            dx = g * (dy - dy.mean(reduce, keepdims=True) - xhat * (dy * xhat).mean(reduce, keepdims=True))
        else:
            dx = g * dy
        return dparams, dx.astype(x.dtype)

    return Layer(name, init, apply, backward, kind="batch_norm")
