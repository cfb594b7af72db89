"""XLA:CPU-tuned backward kernels, used only by ``grad_mode="auto"`` on the CPU backend.

The layers' ``backward`` functions are the textbook derivations (fnn/layers/conv.py, pool.py).
Two of them have a faster form on XLA:CPU, kept here, tested equal to the textbook one
(tests/layers/test_fast_cpu.py):

- ``conv_weight_grad``: the convolution weight gradient. Inside ``lax.scan`` (a fused training
  epoch) XLA:CPU gives the textbook form, a convolution with the roles of the axes named by
  dimension numbers (what autodiff emits too), a non-canonical layout and runs it on a generic
  path, tens of times slower. Here it is a canonical (N, *S, C) x (*K, I, O) convolution of
  transposed operands, or, for small windows times C_in (first layers), strided patches and
  one matmul (benchmarks/cnn_grad_modes.py).
- ``tiled_extremum_grad``: max/min pool backward for windows that tile x (stride = window, no
  padding): a reshape instead of the general scatter, about 2x faster on XLA:CPU.

How they are chosen. On the CPU backend, ``fnn.backprop.value_and_grad`` traces the layers'
backward within ``enabled()`` in every grad mode that runs it: "manual" (around ``layer_bwd``),
"custom_vjp" and "auto" (``with_own_vjp(model, cpu_kernels=True)``, inside the ``jax.custom_vjp``
rule). ``enabled()`` sets a ``contextvars`` flag that Conv's and the pools' backward read while
JAX traces them, and pick these kernels by function (no string dispatch). GPU/TPU never see
them, and neither does a direct ``layer.backward(...)`` call.

The textbook forms stay what the checks check: ``fnn.gradcheck.check_model`` runs within
``textbook()``, which overrides ``enabled()`` for everything traced inside it, so the hand
derivation of each layer is what gradcheck compares with autodiff and finite differences, and
tests/layers/test_fast_cpu.py compares these kernels with that derivation and ``jax.vjp``.

Why no compiled program is reused across the two: the flag only changes what a trace records,
and it is read at trace time inside functions built by one ``value_and_grad``/``with_own_vjp``
call, whose jitted programs JAX caches by those function objects. The one way to leak would be
a ``jax.jit``-wrapped function called *inside* a layer's backward, traced first under one
setting and hit from the other; fnn's layers call none.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from fnn.layers._geometry import conv_dims, window_slice

_ENABLED: contextvars.ContextVar[bool | None] = contextvars.ContextVar("fnn_fast_cpu_kernels", default=None)
"""None: not chosen (textbook); True: these kernels; False: textbook, forced by ``textbook()``."""


@contextlib.contextmanager
def _setting(value: bool | None):
    token = _ENABLED.set(value)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def enabled():
    """Trace the layers' backward with the kernels of this module, unless inside ``textbook()``."""
    return _setting(False if _ENABLED.get() is False else True)


def textbook():
    """Trace every backward inside with the textbook forms, even within ``enabled()`` (gradcheck)."""
    return _setting(False)


def active() -> bool:
    """True while a backward is traced inside ``enabled()`` and not inside ``textbook()``."""
    return _ENABLED.get() is True


PATCH_LIMIT = 32
"""The weight gradient takes the patch path when the window size times C_in is at most this."""


def _weight_grad_patches(xp, dy, kernel, stride, dilation, pads):
    """dw as one matmul: x_pad's K = Π kernel window offsets (strided slices) stacked into
    (N·O, K·C_in) patches, contracted over N·O with dy (N·O, C_out).

    For first layers (C_in of 1 or 3) the conv form contracts over a tiny C_in-by-N operand and
    runs far below XLA:CPU's matmul speed (3x3, C_in 1, batch 128 at 28x28: 8 ms vs 2.3 ms;
    C_in 3: 22 ms vs 5.6 ms, benchmarks/README.md).
    """
    out, c_in, c_out = dy.shape[1:-1], xp.shape[-1], dy.shape[-1]
    xpad = lax.pad(xp, np.zeros((), xp.dtype), ((0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)))
    cols = [window_slice(xpad, [j * d for j, d in zip(offset, dilation, strict=True)], out, stride)
            for offset in itertools.product(*(range(k) for k in kernel))]
    patches = jnp.stack(cols, axis=-2).reshape(-1, len(cols) * c_in)
    dw = lax.dot_general(patches, dy.reshape(-1, c_out), (((0,), (0,)), ((), ())))
    return dw.reshape(*kernel, c_in, c_out)


def conv_weight_grad(xp, dy, kernel, stride, dilation, pads, rem):
    """The textbook ``conv._weight_grad`` (same arguments, same numbers up to rounding), as a
    canonical (N, *S, C) x (*K, I, O) conv on transposed operands: C_in plays the batch and the
    batch N the contracted channel. Small windows times C_in (at most PATCH_LIMIT) take
    ``_weight_grad_patches``."""
    nd = len(stride)
    if math.prod(kernel) * xp.shape[-1] <= PATCH_LIMIT:
        return _weight_grad_patches(xp, dy, kernel, stride, dilation, pads)
    sp = tuple(range(1, nd + 1))
    lhs = xp.transpose(nd + 1, *sp, 0)
    rhs = dy.transpose(*sp, 0, nd + 1)
    dw_pads = [(lo, hi - r) for (lo, hi), r in zip(pads, rem, strict=True)]
    dw = lax.conv_general_dilated(lhs, rhs, dilation, dw_pads, rhs_dilation=stride, dimension_numbers=conv_dims(nd))
    return dw.transpose(*sp, 0, nd + 1)


def tiles(window, stride, pads) -> bool:
    """Whether the windows tile x: stride = window and no padding (``tiled_extremum_grad`` applies)."""
    return tuple(stride) == tuple(window) and not any(lo or hi for lo, hi in pads)


def tiled_extremum_grad(x, dy, window, out, pick):
    """Max/min pool backward for windows that tile x, ``pick`` being jnp.argmax or jnp.argmin.

    A reshape instead of the general scatter. Each (N, *O, C) window is flattened row-major,
    so the first extremum is the same cell the textbook path (and select-and-scatter) picks;
    cells past the last whole window (x's remainder) get 0.
    """
    nd = len(window)
    n, c = x.shape[0], x.shape[-1]
    used = [o * k for o, k in zip(out, window, strict=True)]
    xc = lax.slice(x, (0,) * x.ndim, (n, *used, c))
    split = [d for o, k in zip(out, window, strict=True) for d in (o, k)]        # (N, O1, k1, O2, k2, ..., C)
    to_end = (0, *range(1, 2 * nd, 2), 2 * nd + 1, *range(2, 2 * nd + 1, 2))     # (N, O1, O2, .., C, k1, k2, ..)
    tiles_ = xc.reshape(n, *split, c).transpose(to_end).reshape(n, *out, c, -1)
    cells = jnp.arange(tiles_.shape[-1]).reshape((1,) * (tiles_.ndim - 1) + (-1,))
    onehot = cells == pick(tiles_, axis=-1)[..., None]
    g = jnp.where(onehot, dy[..., None], np.zeros((), x.dtype))
    back = tuple(np.argsort(to_end))
    dx = g.reshape(n, *out, c, *window).transpose(back).reshape(n, *used, c)
    rest = [(0, i - u, 0) for i, u in zip(x.shape[1:-1], used, strict=True)]
    return lax.pad(dx, np.zeros((), x.dtype), [(0, 0, 0), *rest, (0, 0, 0)])
