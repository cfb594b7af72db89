"""Pooling, N-d and channels-last: MaxPool, MinPool, AvgPool over a window, and GlobalAvgPool.

x (N, *spatial, C) -> y (N, *out, C), each channel pooled separately. Windows, stride and
padding follow Conv's conventions (fnn.layers.conv): o = ⌊(i + p − window)/stride⌋ + 1, with
padding "VALID", "SAME", an int or (low, high) pairs. Padded cells never win a max or a min.

The three windowed pools are one helper, ``_pool``, given a ``PoolRule``: how a window is
reduced, what padding holds, and how a window's dy goes back to its cells.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from fnn.core import Layer, check_float, check_shape, fmt_shape
from fnn.layers import _fast_cpu
from fnn.layers._geometry import RENAMED, ints, is_int, out_spatial, padding_spec, pads_for, stride_arg, window_slice
from fnn.typing import Padding, Size


class PoolRule(NamedTuple):
    """What makes a pool a max, a min or an average.

    reduce: the binary op ``lax.reduce_window`` folds each window with.
    fill: the padding value, one that never changes the result (−inf for max, +inf for min, 0 for a sum).
    route: ``route(windows, dy) -> grads``: ``windows`` is the list of x_pad slices, one (N, *O, C)
      array per window offset in row-major order; ``grads`` the matching list of dy shares.
    pick: for an extremum rule, ``jnp.argmax``/``jnp.argmin`` (the fast tiled path of
      fnn/layers/_fast_cpu.py uses it); None otherwise.
    divisor: for an average, ``divisor(window, stride, spatial, pads, dtype)`` -> what each sum is
      divided by (y = sum / divisor, and dy is divided by it on the way back); None otherwise.
    """

    reduce: Callable
    fill: float
    route: Callable
    pick: Callable | None = None
    divisor: Callable | None = None


def _first_extremum(pick):
    """dy goes to the first extremum of its window in row-major order (the cell autodiff's
    select-and-scatter picks)."""
    def route(windows, dy):
        winner = pick(jnp.stack(windows), axis=0)
        zero = np.zeros((), dy.dtype)
        return [jnp.where(winner == i, dy, zero) for i in range(len(windows))]
    return route


def _spread(windows, dy):
    """Every cell of the window gets dy (already divided by the window's count)."""
    return [dy] * len(windows)


def _cells_counted(count_include_pad: bool):
    """Divisor of the average per output cell: the window size, or only its cells inside x."""
    def divisor(window, stride, spatial, pads, dtype):
        if count_include_pad:
            return np.asarray(math.prod(window), dtype)
        ones = np.ones((1, *spatial, 1), dtype)
        return lax.reduce_window(ones, np.zeros((), dtype), lax.add, (1, *window, 1), (1, *stride, 1),
                                 ((0, 0), *pads, (0, 0)))
    return divisor


MAX = PoolRule(lax.max, -np.inf, _first_extremum(jnp.argmax), pick=jnp.argmax)
MIN = PoolRule(lax.min, np.inf, _first_extremum(jnp.argmin), pick=jnp.argmin)


def _pool(base: str, kind: str, rule: PoolRule, window, stride, padding, extra_name=()) -> Layer:
    """A windowed pool named ``{base}{nd}D(...)`` that reduces, pads and routes dy by `rule`."""
    if not isinstance(window, (tuple, list)):
        raise ValueError(f"{base}: window must be a tuple with one size per spatial dim, e.g. (2, 2), got "
                         f"{window!r} ({base}1D/2D/3D accept an int)")
    nd = len(window)
    window = ints(f"{base}{nd}D", "window", window, nd)
    stride = window if stride is None else ints(f"{base}{nd}D", "stride", stride, nd)
    spec = padding_spec(f"{base}{nd}D", padding, nd)
    if spec == "FULL":
        raise ValueError(f"{base}{nd}D: padding 'FULL' would make windows of padding only; use 'SAME' or ints")
    parts = ["x".join(map(str, window))] + ([f"stride={stride}"] if stride != window else []) \
        + ([] if spec == "VALID" else [spec if isinstance(spec, str) else f"padding={spec}"]) + list(extra_name)
    name = f"{base}{nd}D({', '.join(parts)})"
    full = (1, *window, 1), (1, *stride, 1)

    def _geometry(spatial):
        pads = pads_for(spec, spatial, window, stride)
        return pads, out_spatial(name, spatial, pads, window, stride, what="window")

    def _divisor(x, pads):
        return rule.divisor(window, stride, x.shape[1:-1], pads, x.dtype)  # type: ignore[misc]  # only AvgPool calls it, with a divisor

    def init(key, input_shape):
        shape = check_shape(name, "input_shape", input_shape, rank=nd + 1)
        _, out = _geometry(shape[:-1])
        return (*out, shape[-1]), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, *S, C) -> y: (N, *O, C)."""
        if np.ndim(x) != nd + 2:
            raise ValueError(f"{name}: expected x of rank {nd + 2} (N, {nd} spatial dims, C), "
                             f"got {fmt_shape(np.shape(x))}")
        check_float(name, "x", x)
        pads, _ = _geometry(x.shape[1:-1])
        y = lax.reduce_window(x, np.asarray(rule.fill, x.dtype), rule.reduce, *full, ((0, 0), *pads, (0, 0)))
        return (y if rule.divisor is None else y / _divisor(x, pads)), state

    def backward(params, state, x, dy, *, key=None, train=False):
        """Each window's dy goes back to its cells as ``rule.route`` shares it; dx sums the shares of
        overlapping windows (cell o of window offset k sits at k + o·s of x_pad)."""
        pads, out = _geometry(x.shape[1:-1])
        dy = dy.astype(x.dtype)
        if rule.pick is not None and _fast_cpu.active() and _fast_cpu.tiles(window, stride, pads):
            return {}, _fast_cpu.tiled_extremum_grad(x, dy, window, out, rule.pick)
        if rule.divisor is not None:
            dy = dy / _divisor(x, pads)
        zero = np.zeros((), x.dtype)
        xp = lax.pad(x, np.asarray(rule.fill, x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
        offsets = list(itertools.product(*(range(w) for w in window)))
        grads = rule.route([window_slice(xp, k, out, stride) for k in offsets], dy)
        span = [(o - 1) * s + 1 for o, s in zip(out, stride, strict=True)]
        dxp = jnp.zeros(xp.shape, x.dtype)
        for k, g in zip(offsets, grads, strict=True):
            cfg = [(a, p - a - sp, s - 1) for a, p, sp, s in zip(k, xp.shape[1:-1], span, stride, strict=True)]
            dxp = dxp + lax.pad(g, zero, [(0, 0, 0), *cfg, (0, 0, 0)])
        ends = [lo + i for (lo, _), i in zip(pads, x.shape[1:-1], strict=True)]
        return {}, lax.slice(dxp, (0, *(lo for lo, _ in pads), 0), (x.shape[0], *ends, x.shape[-1]))

    return Layer(name, init, apply, backward, kind=kind)


def MaxPool(window: Size, stride: Size | None = None, padding: Padding = "VALID", *,
            strides: Any = RENAMED) -> Layer:
    """Maximum over each window (N-d: one size per spatial dim); stride defaults to the window."""
    return _pool("MaxPool", "max_pool", MAX, window, stride_arg("MaxPool", stride, strides), padding)


def MinPool(window: Size, stride: Size | None = None, padding: Padding = "VALID", *,
            strides: Any = RENAMED) -> Layer:
    """Minimum over each window; stride defaults to the window."""
    return _pool("MinPool", "min_pool", MIN, window, stride_arg("MinPool", stride, strides), padding)


def AvgPool(window: Size, stride: Size | None = None, padding: Padding = "VALID", count_include_pad: bool = True, *,
            strides: Any = RENAMED) -> Layer:
    """Mean over each window; stride defaults to the window.

    count_include_pad: with padding, whether padded cells count in the divisor. True (the
    default, as PyTorch's avg_pool and flax's avg_pool) divides by the window size everywhere;
    False divides by the number of real cells (TensorFlow's SAME average pooling).
    """
    rule = PoolRule(lax.add, 0.0, _spread, divisor=_cells_counted(count_include_pad))
    return _pool("AvgPool", "avg_pool", rule, window, stride_arg("AvgPool", stride, strides), padding,
                 [] if count_include_pad else ["count_include_pad=False"])


def _fixed_rank(make: Callable[..., Layer], nd: int) -> Callable[..., Layer]:
    def pool(window: Size, stride: Size | None = None, padding: Padding = "VALID", *, strides: Any = RENAMED,
             **kwargs: Any) -> Layer:
        as_tuple = lambda v: (v,) * nd if is_int(v) else v
        if isinstance(window, (tuple, list)) and len(window) != nd:
            raise ValueError(f"{make.__name__}{nd}D: window must be an int or a tuple of {nd} ints, "
                             f"got {window!r}")
        stride = stride_arg(f"{make.__name__}{nd}D", stride, strides)
        return make(as_tuple(window), None if stride is None else as_tuple(stride), padding, **kwargs)

    pool.__name__ = pool.__qualname__ = f"{make.__name__}{nd}D"
    pool.__doc__ = f"{make.__name__} over {nd} spatial dims; window and stride may be ints."
    return pool


MaxPool1D, MaxPool2D, MaxPool3D = (_fixed_rank(MaxPool, n) for n in (1, 2, 3))
MinPool1D, MinPool2D, MinPool3D = (_fixed_rank(MinPool, n) for n in (1, 2, 3))
AvgPool1D, AvgPool2D, AvgPool3D = (_fixed_rank(AvgPool, n) for n in (1, 2, 3))


def GlobalAvgPool() -> Layer:
    """Mean over all spatial dims: (N, *S, C) -> (N, C)."""
    name = "GlobalAvgPool"

    def init(key, input_shape):
        shape = check_shape(name, "input_shape", input_shape, min_rank=2)
        return (shape[-1],), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, *S, C) -> y: (N, C)."""
        if np.ndim(x) < 3:
            raise ValueError(f"{name}: expected x of shape (N, *spatial, C), got {fmt_shape(np.shape(x))}")
        check_float(name, "x", x)
        return x.mean(tuple(range(1, x.ndim - 1))), state

    def backward(params, state, x, dy, *, key=None, train=False):
        """Each of the S cells of a channel has weight 1/S: dx = dy / S broadcast over the spatial dims."""
        cells = math.prod(x.shape[1:-1])
        dy = dy.astype(x.dtype).reshape(x.shape[0], *(1,) * (x.ndim - 2), x.shape[-1])
        return {}, jnp.broadcast_to(dy / np.asarray(cells, x.dtype), x.shape)

    return Layer(name, init, apply, backward, kind="global_avg_pool")
