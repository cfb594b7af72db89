"""Convolution, N-d and channels-last: x (N, *spatial, C_in), w (*window, C_in, C_out), b (C_out,).

The number of spatial dims is ``len(kernel_size)``. Output size per spatial dim, with
k_eff = (k − 1)·dilation + 1 and p = low + high padding: o = ⌊(i + p − k_eff)/stride⌋ + 1.
Derivations of the backward pass: docs/derivations.md, "Convolution". ``backward`` is the textbook
form; ``grad_mode="auto"`` on XLA:CPU swaps in a faster weight gradient (fnn/layers/_fast_cpu.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from fnn.core import (
    Layer,
    check_choice,
    check_float,
    check_params,
    check_positive_int,
    check_shape,
    fmt_shape,
    promote,
)
from fnn.init import he_normal
from fnn.layers import _fast_cpu
from fnn.layers._geometry import (
    RENAMED,
    conv_dims,
    ints,
    is_int,
    out_spatial,
    padding_spec,
    pads_for,
    stride_arg,
)
from fnn.typing import Initializer, Padding, Size

_LETTERS = {1: "W", 2: "HW", 3: "DHW"}


def _edge_fold(g, pads):
    """Gradient w.r.t. an edge-padded array -> w.r.t. the unpadded one: border copies add to the border."""
    zero = np.zeros((), g.dtype)
    for ax, (lo, hi) in enumerate(pads, start=1):
        n = g.shape[ax] - lo - hi
        cfg = [(0, 0, 0)] * g.ndim
        low = lax.slice_in_dim(g, 0, lo, axis=ax).sum(ax, keepdims=True)
        high = lax.slice_in_dim(g, lo + n, lo + n + hi, axis=ax).sum(ax, keepdims=True)
        g = lax.slice_in_dim(g, lo, lo + n, axis=ax)
        g = g + lax.pad(low, zero, cfg[:ax] + [(0, n - 1, 0)] + cfg[ax + 1:]) \
              + lax.pad(high, zero, cfg[:ax] + [(n - 1, 0, 0)] + cfg[ax + 1:])
    return g


def _sizes(x, pads):
    """Padded spatial sizes of a channels-last x."""
    return [i + lo + hi for i, (lo, hi) in zip(x.shape[1:-1], pads, strict=True)]


def _input_grad(dy, w, stride, dilation, pads, rem):
    """dx: dy (N, *O, C_out) dilated by the stride, correlated with the flipped, transposed kernel.

    The padding (k_eff − 1 − low, k_eff − 1 − high + r) makes dx exactly x's shape: negative
    values crop, and the r trailing cells that no window reached get zeros.
    """
    nd = len(stride)
    k_eff = [(k - 1) * d + 1 for k, d in zip(w.shape[:nd], dilation, strict=True)]
    dx_pads = [(k - 1 - lo, k - 1 - hi + r) for k, (lo, hi), r in zip(k_eff, pads, rem, strict=True)]
    # XLA:CPU (jaxlib 0.10.2) aborts compiling this very conv (jax.vjp emits it too) when a dim has
    # window 2, base dilation 2 and no padding: it swaps the operands and takes that dim for a
    # "group" dim. One extra zero row of padding there, sliced off below, sidesteps it; the values
    # are unchanged, and other backends compute one row more (tests/layers/test_conv.py,
    # test_backward_where_xla_autodiff_aborts).
    extra = [int(k == 2 and s == 2 and d == 1 and p == (0, 0))
             for k, s, d, p in zip(w.shape[:nd], stride, dilation, dx_pads, strict=True)]
    dx_pads = [(lo, hi + e) for (lo, hi), e in zip(dx_pads, extra, strict=True)]
    w_t = lax.rev(w, tuple(range(nd))).swapaxes(-1, -2)
    dx = lax.conv_general_dilated(dy, w_t, (1,) * nd, dx_pads, lhs_dilation=stride, rhs_dilation=dilation,
                                  dimension_numbers=conv_dims(nd))
    if any(extra):
        ends = [n - e for n, e in zip(dx.shape[1:-1], extra, strict=True)]
        dx = lax.slice(dx, (0,) * dx.ndim, (dx.shape[0], *ends, dx.shape[-1]))
    return dx


def _weight_grad(xp, dy, kernel, stride, dilation, pads, rem):
    """dw[k] = Σ_{n,o} x_pad[n, o·s + k·d] ⊗ dy[n, o]: a conv of x_pad by dy (dilated by s), stride d.

    The dimension numbers name the roles: x's channel axis is the conv's batch, x's batch N the
    contracted feature, dy is the kernel (N in, C_out out), and the result is laid out (*K, C_in, C_out).
    """
    nd = len(stride)
    sp = tuple(range(1, nd + 1))
    roles = lax.ConvDimensionNumbers((nd + 1, 0, *sp), (nd + 1, 0, *sp), (nd, nd + 1, *range(nd)))
    dw_pads = [(lo, hi - r) for (lo, hi), r in zip(pads, rem, strict=True)]
    return lax.conv_general_dilated(xp, dy, dilation, dw_pads, rhs_dilation=stride, dimension_numbers=roles)


def Conv(out_channels: int, kernel_size: Sequence[int], *, stride: Size = 1, padding: Padding = "VALID",
         dilation: Size = 1, use_bias: bool = True, w_init: Initializer = he_normal, padding_mode: str = "zeros",
         strides: Any = RENAMED) -> Layer:
    """N-d convolution (cross-correlation, as in every framework), channels-last.

    Args:
      out_channels: C_out.
      kernel_size: the window, one size per spatial dim, e.g. (3, 3) (Conv1D/2D/3D also accept an int).
      stride, dilation: an int or one per spatial dim. (``strides=`` is the deprecated spelling.)
      padding: "VALID", "SAME" (o = ⌈i/stride⌉, the odd cell padded high as in TF/JAX), "FULL"
        (k_eff − 1 on each side: o = i + k − 1 at stride 1), an int, or one (low, high) pair per dim.
      padding_mode: "zeros", or "edge" (the border value repeated, as jnp.pad mode="edge").
    """
    out_channels = check_positive_int("Conv", "out_channels", out_channels)
    if not isinstance(kernel_size, (tuple, list)):
        raise ValueError(f"Conv: kernel_size must be a tuple with one size per spatial dim, e.g. (3, 3), "
                         f"got {kernel_size!r} (Conv1D/Conv2D/Conv3D accept an int)")
    nd = len(kernel_size)
    name = f"Conv{nd}D"
    kernel = ints(name, "kernel_size", kernel_size, nd)
    stride = ints(name, "stride", stride_arg(name, stride, strides), nd)
    dilation = ints(name, "dilation", dilation, nd)
    spec = padding_spec(name, padding, nd)
    check_choice(name, "padding_mode", padding_mode, ("zeros", "edge"))
    parts = [str(out_channels), "x".join(map(str, kernel))]
    parts += [f"stride={stride}"] if set(stride) != {1} else []
    parts += [f"dilation={dilation}"] if set(dilation) != {1} else []
    parts += [] if spec == "VALID" else [spec if isinstance(spec, str) else f"padding={spec}"]
    parts += ["edge"] if padding_mode == "edge" else []
    name = f"Conv{nd}D({', '.join(parts)})"
    k_eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))
    dims = conv_dims(nd)
    param_shapes = {"w": (*kernel, None, out_channels), **({"b": (out_channels,)} if use_bias else {})}

    def _geometry(spatial):
        pads = pads_for(spec, spatial, k_eff, stride)
        return pads, out_spatial(name, spatial, pads, k_eff, stride)

    def _check_x(x, c_in):
        if np.ndim(x) != nd + 2 or np.shape(x)[-1] != c_in:
            letters = _LETTERS.get(nd, "".join(f"S{i}" for i in range(nd)))
            raise ValueError(f"{name}: expected x of shape (N, {', '.join(letters)}, {c_in}), "
                             f"got {fmt_shape(np.shape(x))}")
        check_float(name, "x", x)

    def init(key, input_shape):
        shape = check_shape(name, "input_shape", input_shape, rank=nd + 1)
        _, out = _geometry(shape[:-1])
        params = {"w": w_init(key, (*kernel, shape[-1], out_channels))}
        if use_bias:
            params["b"] = jnp.zeros((out_channels,), jnp.float32)
        return (*out, out_channels), params, {}

    def _padded(x, pads):
        """(x with edge padding applied, padding left for the conv itself)."""
        if padding_mode == "edge":
            return jnp.pad(x, ((0, 0), *pads, (0, 0)), mode="edge"), ((0, 0),) * nd
        return x, pads

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, *S, C_in) -> y: (N, *O, C_out)."""
        check_params(name, "params", params, param_shapes)
        _check_x(x, params["w"].shape[-2])
        pads, _ = _geometry(x.shape[1:-1])
        x, w = promote(x, params["w"])
        xp, conv_pads = _padded(x, pads)
        y = lax.conv_general_dilated(xp, w, stride, conv_pads, rhs_dilation=dilation, dimension_numbers=dims)
        if use_bias:
            y, b = promote(y, params["b"])
            y = y + b.reshape((1,) * (nd + 1) + (-1,))
        return y, state

    def backward(params, state, x, dy, *, key=None, train=False):
        """dx = dy dilated by the stride, fully correlated with the flipped kernel (in/out swapped);
        dw[k] = Σ_{n,o} x_pad[n, o·s + k·d] ⊗ dy[n, o] (a conv of x_pad by dy, dilated by s); db = Σ dy.
        Padding of the dx conv: (k_eff − 1 − low, k_eff − 1 − high + r), r = (i + p − k_eff) mod s.
        Edge padding: the gradient of each border copy folds back onto the border cell."""
        pads, _ = _geometry(x.shape[1:-1])
        xc, w, dyc = promote(x, params["w"], dy)
        xp, conv_pads = _padded(xc, pads)
        rem = [(i - k) % s for i, k, s in zip(_sizes(xp, conv_pads), k_eff, stride, strict=True)]
        dx = _input_grad(dyc, w, stride, dilation, conv_pads, rem)
        if padding_mode == "edge":
            dx = _edge_fold(dx, pads)
        weight_grad = _fast_cpu.conv_weight_grad if _fast_cpu.active() else _weight_grad
        dparams = {"w": weight_grad(xp, dyc, kernel, stride, dilation, conv_pads, rem).astype(params["w"].dtype)}
        if use_bias:
            dparams["b"] = dyc.sum(tuple(range(nd + 1))).astype(params["b"].dtype)
        return dparams, dx.astype(x.dtype)

    return Layer(name, init, apply, backward, kind="conv")


def _fixed_rank(nd: int) -> Callable[..., Layer]:
    def make(out_channels: int, kernel_size: Size, **kwargs: Any) -> Layer:
        if is_int(kernel_size):
            kernel_size = (kernel_size,) * nd  # type: ignore[assignment]  # the int becomes nd sizes
        elif not isinstance(kernel_size, (tuple, list)) or len(kernel_size) != nd:
            raise ValueError(f"Conv{nd}D: kernel_size must be an int or a tuple of {nd} ints, "
                             f"got {kernel_size!r}")
        return Conv(out_channels, tuple(kernel_size), **kwargs)  # type: ignore[arg-type]

    make.__name__ = make.__qualname__ = f"Conv{nd}D"
    make.__doc__ = f"{nd}-D convolution: Conv with an int kernel_size meaning {nd} equal sizes."
    return make


Conv1D, Conv2D, Conv3D = _fixed_rank(1), _fixed_rank(2), _fixed_rank(3)
