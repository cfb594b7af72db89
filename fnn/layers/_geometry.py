"""Window geometry shared by conv, pool and the fast kernels: hyperparameter parsing, padding,
output sizes, channels-last dimension numbers, strided window slices.

Per spatial dim, with k_eff = (k − 1)·dilation + 1 and p = low + high padding:
o = ⌊(i + p − k_eff)/stride⌋ + 1.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from jax import lax

from fnn.core import fmt_shape

PADDINGS = ("VALID", "SAME", "FULL")


def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def ints(name: str, what: str, value, nd: int) -> tuple[int, ...]:
    """An int (the same for every spatial dim) or a tuple of nd positive ints."""
    seq = (value,) * nd if is_int(value) else value
    if not isinstance(seq, (tuple, list)) or len(seq) != nd or not all(is_int(v) and v > 0 for v in seq):
        raise ValueError(f"{name}: {what} must be a positive int or a tuple of {nd} positive ints, "
                         f"got {value!r}")
    return tuple(int(v) for v in seq)


RENAMED = object()
"""Default of a deprecated keyword: tells "not given" apart from any value, None included."""


def stride_arg(name: str, stride, strides):
    """`stride`, or the deprecated `strides` spelling (one release) with a DeprecationWarning."""
    if strides is RENAMED:
        return stride
    warnings.warn(f"{name}: strides= is deprecated, use stride= (the same values)", DeprecationWarning,
                  stacklevel=3)
    return strides


def padding_spec(name: str, padding, nd: int):
    """'VALID' | 'SAME' | 'FULL' (any case), or nd (low, high) pairs of non-negative ints."""
    if isinstance(padding, str) and padding.upper() in PADDINGS:
        return padding.upper()
    seq = (padding,) * nd if is_int(padding) else padding
    if isinstance(seq, (tuple, list)) and len(seq) == nd:
        pairs: tuple[Any, ...] = tuple((p, p) if is_int(p) else tuple(p) if isinstance(p, (tuple, list)) else None
                      for p in seq)
        if all(p is not None and len(p) == 2 and all(is_int(v) and v >= 0 for v in p) for p in pairs):
            return tuple((int(lo), int(hi)) for lo, hi in pairs)
    raise ValueError(f"{name}: padding must be 'VALID', 'SAME', 'FULL', a non-negative int or {nd} "
                     f"(low, high) pairs, got {padding!r}")


def pads_for(spec, spatial, k_eff, stride) -> tuple[tuple[int, int], ...]:
    """Explicit (low, high) padding per spatial dim. SAME gives o = ⌈i/s⌉, the extra cell going high."""
    if spec == "VALID":
        return ((0, 0),) * len(spatial)
    if spec == "FULL":
        return tuple((k - 1, k - 1) for k in k_eff)
    if spec == "SAME":
        totals = [max((-(-i // s) - 1) * s + k - i, 0)
                  for i, k, s in zip(spatial, k_eff, stride, strict=True)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return spec


def out_spatial(name, spatial, pads, k_eff, stride, what="kernel (dilated)"):
    """o = ⌊(i + p − k_eff)/s⌋ + 1 per dim, refusing windows larger than the padded input."""
    padded = tuple(i + lo + hi for i, (lo, hi) in zip(spatial, pads, strict=True))
    if any(p < k for p, k in zip(padded, k_eff, strict=True)):
        raise ValueError(f"{name}: {what} {'x'.join(map(str, k_eff))} is larger than the padded input "
                         f"{'x'.join(map(str, padded))} (input spatial shape {fmt_shape(spatial)})")
    return tuple((p - k) // s + 1 for p, k, s in zip(padded, k_eff, stride, strict=True))


def conv_dims(nd: int) -> lax.ConvDimensionNumbers:
    """Channels-last activations (N, *S, C) and kernels (*K, I, O), for any number of spatial dims."""
    act = (0, nd + 1, *range(1, nd + 1))
    return lax.ConvDimensionNumbers(act, (nd + 1, nd, *range(nd)), act)


def window_slice(xp, start, out, stride):
    """x_pad[:, start + o·s, :] for every output position o: (N, *O, C), one strided slice."""
    limit = [b + (o - 1) * s + 1 for b, o, s in zip(start, out, stride, strict=True)]
    return lax.slice(xp, (0, *start, 0), (xp.shape[0], *limit, xp.shape[-1]), (1, *stride, 1))
