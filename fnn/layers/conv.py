"""Convolution, N-d and channels-last: x (N, *spatial, C_in), w (*window, C_in, C_out), b (C_out,).

The number of spatial dims is ``len(kernel_size)``. Output size per spatial dim, with
k_eff = (k − 1)·dilation + 1 and p = low + high padding: o = ⌊(i + p − k_eff)/stride⌋ + 1.
Derivations of the backward pass: docs/derivations.md, "Convolution".
"""

from __future__ import annotations

import itertools
import math

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

PADDINGS = ("VALID", "SAME", "FULL")
_LETTERS = {1: "W", 2: "HW", 3: "DHW"}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _ints(name: str, what: str, value, nd: int) -> tuple[int, ...]:
    """An int (the same for every spatial dim) or a tuple of nd positive ints."""
    seq = (value,) * nd if _is_int(value) else value
    if not isinstance(seq, (tuple, list)) or len(seq) != nd or not all(_is_int(v) and v > 0 for v in seq):
        raise ValueError(f"{name}: {what} must be a positive int or a tuple of {nd} positive ints, "
                         f"got {value!r}")
    return tuple(int(v) for v in seq)


def _padding_spec(name: str, padding, nd: int):
    """'VALID' | 'SAME' | 'FULL' (any case), or nd (low, high) pairs of non-negative ints."""
    if isinstance(padding, str) and padding.upper() in PADDINGS:
        return padding.upper()
    seq = (padding,) * nd if _is_int(padding) else padding
    if isinstance(seq, (tuple, list)) and len(seq) == nd:
        pairs = tuple((p, p) if _is_int(p) else tuple(p) if isinstance(p, (tuple, list)) else None
                      for p in seq)
        if all(p is not None and len(p) == 2 and all(_is_int(v) and v >= 0 for v in p) for p in pairs):
            return tuple((int(lo), int(hi)) for lo, hi in pairs)
    raise ValueError(f"{name}: padding must be 'VALID', 'SAME', 'FULL', a non-negative int or {nd} "
                     f"(low, high) pairs, got {padding!r}")


def _pads(spec, spatial, k_eff, strides) -> tuple[tuple[int, int], ...]:
    """Explicit (low, high) padding per spatial dim. SAME gives o = ⌈i/s⌉, the extra cell going high."""
    if spec == "VALID":
        return ((0, 0),) * len(spatial)
    if spec == "FULL":
        return tuple((k - 1, k - 1) for k in k_eff)
    if spec == "SAME":
        totals = [max((-(-i // s) - 1) * s + k - i, 0)
                  for i, k, s in zip(spatial, k_eff, strides, strict=True)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return spec


def _out_spatial(name, spatial, pads, k_eff, strides, what="kernel (dilated)"):
    """o = ⌊(i + p − k_eff)/s⌋ + 1 per dim, refusing windows larger than the padded input."""
    padded = tuple(i + lo + hi for i, (lo, hi) in zip(spatial, pads, strict=True))
    if any(p < k for p, k in zip(padded, k_eff, strict=True)):
        raise ValueError(f"{name}: {what} {'x'.join(map(str, k_eff))} is larger than the padded input "
                         f"{'x'.join(map(str, padded))} (input spatial shape {fmt_shape(spatial)})")
    return tuple((p - k) // s + 1 for p, k, s in zip(padded, k_eff, strides, strict=True))


def _dims(nd: int) -> lax.ConvDimensionNumbers:
    """Channels-last activations (N, *S, C) and kernels (*K, I, O), for any number of spatial dims."""
    act = (0, nd + 1, *range(1, nd + 1))
    return lax.ConvDimensionNumbers(act, (nd + 1, nd, *range(nd)), act)


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


def _input_grad(dy, w, strides, dilation, pads, rem):
    """dx: dy (N, *O, C_out) dilated by the strides, correlated with the flipped, transposed kernel.

    The padding (k_eff − 1 − low, k_eff − 1 − high + r) makes dx exactly x's shape: negative
    values crop, and the r trailing cells that no window reached get zeros.
    """
    nd = len(strides)
    k_eff = [(k - 1) * d + 1 for k, d in zip(w.shape[:nd], dilation, strict=True)]
    dx_pads = [(k - 1 - lo, k - 1 - hi + r) for k, (lo, hi), r in zip(k_eff, pads, rem, strict=True)]
    # XLA:CPU (jaxlib 0.10.2) aborts compiling a base-dilated conv with a dim of window 2, base
    # dilation 2 and no padding when it swaps the operands (it takes the dim for a "group" dim);
    # jax.vjp emits the same conv. One extra high row there, sliced off below, sidesteps it.
    extra = [int(k == 2 and s == 2 and d == 1 and p == (0, 0))
             for k, s, d, p in zip(w.shape[:nd], strides, dilation, dx_pads, strict=True)]
    dx_pads = [(lo, hi + e) for (lo, hi), e in zip(dx_pads, extra, strict=True)]
    w_t = lax.rev(w, tuple(range(nd))).swapaxes(-1, -2)
    dx = lax.conv_general_dilated(dy, w_t, (1,) * nd, dx_pads, lhs_dilation=strides, rhs_dilation=dilation,
                                  dimension_numbers=_dims(nd))
    if any(extra):
        ends = [n - e for n, e in zip(dx.shape[1:-1], extra, strict=True)]
        dx = lax.slice(dx, (0,) * dx.ndim, (dx.shape[0], *ends, dx.shape[-1]))
    return dx


PATCH_LIMIT = 32
"""The weight gradient takes the patch path when the window size times C_in is at most this."""


def _window_slice(xp, start, out, strides):
    """x_pad[:, start + o·s, :] for every output position o: (N, *O, C), one strided slice."""
    limit = [b + (o - 1) * s + 1 for b, o, s in zip(start, out, strides, strict=True)]
    return lax.slice(xp, (0, *start, 0), (xp.shape[0], *limit, xp.shape[-1]), (1, *strides, 1))


def _weight_grad_patches(xp, dy, kernel, strides, dilation, pads):
    """dw as one matmul: x_pad's K = Π kernel window offsets (strided slices) stacked into
    (N·O, K·C_in) patches, contracted over N·O with dy (N·O, C_out).

    For first layers (C_in of 1 or 3) the conv form below contracts over a tiny C_in-by-N
    operand and runs far below XLA:CPU's matmul speed (3x3, C_in 1, batch 128 at 28x28:
    8 ms vs 2.3 ms; C_in 3: 22 ms vs 5.6 ms, benchmarks/README.md).
    """
    out, c_in, c_out = dy.shape[1:-1], xp.shape[-1], dy.shape[-1]
    xpad = lax.pad(xp, np.zeros((), xp.dtype), ((0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)))
    cols = [_window_slice(xpad, [j * d for j, d in zip(offset, dilation, strict=True)], out, strides)
            for offset in itertools.product(*(range(k) for k in kernel))]
    patches = jnp.stack(cols, axis=-2).reshape(-1, len(cols) * c_in)
    dw = lax.dot_general(patches, dy.reshape(-1, c_out), (((0,), (0,)), ((), ())))
    return dw.reshape(*kernel, c_in, c_out)


def _weight_grad(xp, dy, kernel, strides, dilation, pads, rem):
    """dw[k] = Σ_{n,o} x_pad[n, o·s + k·d] ⊗ dy[n, o]: a conv of x_pad by dy (dilated by s), stride d.

    Written as a canonical (N, *S, C) x (*K, I, O) conv on transposed operands, C_in playing the
    batch and the batch N the contracted channel. The same conv expressed by dimension numbers
    alone (as autodiff emits it) gets a non-canonical layout inside lax.scan on XLA:CPU and runs
    on a generic path, tens of times slower (benchmarks/cnn_grad_modes.py). Small windows
    times C_in (at most PATCH_LIMIT: first layers) take ``_weight_grad_patches`` instead.
    """
    nd = len(strides)
    if math.prod(kernel) * xp.shape[-1] <= PATCH_LIMIT:
        return _weight_grad_patches(xp, dy, kernel, strides, dilation, pads)
    sp = tuple(range(1, nd + 1))
    lhs = xp.transpose(nd + 1, *sp, 0)
    rhs = dy.transpose(*sp, 0, nd + 1)
    dw_pads = [(lo, hi - r) for (lo, hi), r in zip(pads, rem, strict=True)]
    dw = lax.conv_general_dilated(lhs, rhs, dilation, dw_pads, rhs_dilation=strides,
                                  dimension_numbers=_dims(nd))
    return dw.transpose(*sp, 0, nd + 1)


def Conv(out_channels: int, kernel_size, *, strides=1, padding="VALID", dilation=1, use_bias: bool = True,
         w_init=he_normal, padding_mode: str = "zeros") -> Layer:
    """N-d convolution (cross-correlation, as in every framework), channels-last.

    Args:
      out_channels: C_out.
      kernel_size: the window, one size per spatial dim, e.g. (3, 3) (Conv1D/2D/3D also accept an int).
      strides, dilation: an int or one per spatial dim.
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
    kernel = _ints(name, "kernel_size", kernel_size, nd)
    strides = _ints(name, "strides", strides, nd)
    dilation = _ints(name, "dilation", dilation, nd)
    spec = _padding_spec(name, padding, nd)
    check_choice(name, "padding_mode", padding_mode, ("zeros", "edge"))
    parts = [str(out_channels), "x".join(map(str, kernel))]
    parts += [f"strides={strides}"] if set(strides) != {1} else []
    parts += [f"dilation={dilation}"] if set(dilation) != {1} else []
    parts += [] if spec == "VALID" else [spec if isinstance(spec, str) else f"padding={spec}"]
    parts += ["edge"] if padding_mode == "edge" else []
    name = f"Conv{nd}D({', '.join(parts)})"
    k_eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))
    dims = _dims(nd)
    param_shapes = {"w": (*kernel, None, out_channels), **({"b": (out_channels,)} if use_bias else {})}

    def _geometry(spatial):
        pads = _pads(spec, spatial, k_eff, strides)
        return pads, _out_spatial(name, spatial, pads, k_eff, strides)

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
        y = lax.conv_general_dilated(xp, w, strides, conv_pads, rhs_dilation=dilation, dimension_numbers=dims)
        if use_bias:
            y, b = promote(y, params["b"])
            y = y + b.reshape((1,) * (nd + 1) + (-1,))
        return y, state

    def backward(params, state, x, dy, *, key=None, train=False):
        """dx = dy dilated by the strides, fully correlated with the flipped kernel (in/out swapped);
        dw[k] = Σ_{n,o} x_pad[n, o·s + k·d] ⊗ dy[n, o] (a conv of x_pad by dy, dilated by s); db = Σ dy.
        Padding of the dx conv: (k_eff − 1 − low, k_eff − 1 − high + r), r = (i + p − k_eff) mod s."""
        pads, _ = _geometry(x.shape[1:-1])
        xc, w, dyc = promote(x, params["w"], dy)
        xp, conv_pads = _padded(xc, pads)
        rem = [(i - k) % s for i, k, s in zip(_sizes(xp, conv_pads), k_eff, strides, strict=True)]
        dx = _input_grad(dyc, w, strides, dilation, conv_pads, rem)
        if padding_mode == "edge":
            dx = _edge_fold(dx, pads)
        dw = _weight_grad(xp, dyc, kernel, strides, dilation, conv_pads, rem)
        dparams = {"w": dw.astype(params["w"].dtype)}
        if use_bias:
            dparams["b"] = dyc.sum(tuple(range(nd + 1))).astype(params["b"].dtype)
        return dparams, dx.astype(x.dtype)

    return Layer(name, init, apply, backward)


def _fixed_rank(nd: int):
    def make(out_channels: int, kernel_size, **kwargs) -> Layer:
        if _is_int(kernel_size):
            kernel_size = (kernel_size,) * nd
        elif not isinstance(kernel_size, (tuple, list)) or len(kernel_size) != nd:
            raise ValueError(f"Conv{nd}D: kernel_size must be an int or a tuple of {nd} ints, "
                             f"got {kernel_size!r}")
        return Conv(out_channels, tuple(kernel_size), **kwargs)

    make.__name__ = make.__qualname__ = f"Conv{nd}D"
    make.__doc__ = f"{nd}-D convolution: Conv with an int kernel_size meaning {nd} equal sizes."
    return make


Conv1D, Conv2D, Conv3D = _fixed_rank(1), _fixed_rank(2), _fixed_rank(3)
