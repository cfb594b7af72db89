"""Checks of the data given to ``fit`` and ``evaluate``: errors that name the function and the shapes."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from fnn.core import check_float, fmt_shape


def check_xy(name: str, what: str, x: Any, y: Any) -> tuple[Any, Any]:
    """(x, y) arrays with as many examples, x floating (not uint8 images) and finite."""
    if not hasattr(x, "shape") or not hasattr(y, "shape"):
        raise ValueError(f"{name}: {what} must be arrays (x, y), "
                         f"got {type(x).__name__} and {type(y).__name__}")
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: {what} x and y must have the same number of examples, "
                         f"got x of shape {fmt_shape(x.shape)} and y of shape {fmt_shape(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: {what} is empty (x of shape {fmt_shape(x.shape)})")
    if np.dtype(x.dtype) == np.uint8 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name}: {what} x has dtype {x.dtype}; convert images to float first, "
                         f"e.g. fnn.data.to_float(x) or Standardizer.fit(x_train).apply(x)")
    check_float(name, f"{what} x", x)
    if not bool(np.all(np.isfinite(np.asarray(x)))):
        raise ValueError(f"{name}: {what} x contains NaN or Inf")
    return x, y


def check_labels(name: str, what: str, y: Any, out_shape: tuple[Any, ...]) -> None:
    """Integer labels must be classes of the model's (N, M) output."""
    if not jnp.issubdtype(y.dtype, jnp.integer):
        return
    if len(out_shape) != 2 or y.ndim != 1:
        raise ValueError(f"{name}: {what} has integer labels of shape {fmt_shape(y.shape)}, which need "
                         f"a model output of shape (N, M); the model gives "
                         f"{fmt_shape((None,) + tuple(out_shape[1:]))}")
    m = out_shape[1]
    lab = np.asarray(y)
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0 or hi >= m:
        bad = int(np.flatnonzero((lab < 0) | (lab >= m))[0])
        raise ValueError(f"{name}: {what} labels must be in [0, {m}) for a model with {m} outputs, "
                         f"got values in [{lo}, {hi}] (first bad label {int(lab[bad])} at index {bad})")


def check_data(name: str, what: str, data: Any) -> tuple[Any, Any]:
    """A tuple (x, y) checked by ``check_xy``."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{name}: {what} must be a tuple (x, y), got {type(data).__name__}")
    return check_xy(name, what, *data)
