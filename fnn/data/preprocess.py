"""Preprocessing: ``to_float``, ``Standardizer`` (fit on the training set, applied to every set),
``train_val_split``, and ``check_xy``, the x/y check that splitting and batching share.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn._deprecation import key_keyword_only
from fnn.core import check_choice, check_finite, check_range, fmt_shape
from fnn.typing import DataArray

# ----------------------------------------------------------------------------------------
# Scaling

EPS = 1e-7


def to_float(x: np.ndarray | jax.Array) -> jax.Array:
    """uint8 images -> float32 in [0, 1] (x / 255). Any shape."""
    if np.dtype(x.dtype) != np.uint8:
        raise ValueError(f"to_float: expected uint8 x, got {x.dtype} of shape {fmt_shape(np.shape(x))}")
    return jnp.asarray(x).astype(jnp.float32) / 255.0


class Standardizer(NamedTuple):
    """Per-feature standardization ``(x - mean) / (std + eps)``, a pytree of two float32 arrays.

    Fit it on the training set only and apply it to train, validation and test alike.
    ``std`` is the unbiased (ddof=1) standard deviation by default, as in the course notes.
    Where the std is zero (constant pixels, such as image borders) it is stored as 1, so
    those features become ``x - mean`` (zero on the training set) instead of NaN.

    Attributes:
      mean: statistics shape: ``x.shape[1:]`` (per="pixel"), ``(C,)`` ("channel") or ``()``.
      std: the same shape; already guarded (1 where the data were constant).
    """

    mean: jax.Array
    std: jax.Array

    @classmethod
    def fit(cls, x: np.ndarray | jax.Array, *, per: str = "pixel", ddof: int = 1) -> Standardizer:
        """Compute mean and std on the host in float64 (two passes, in chunks).

        Args:
          x: (N, ...) training data, any numeric dtype (uint8 images are fine).
          per: "pixel" (statistics over N, shape x.shape[1:]), "channel" (over all axes but
            the last, shape (C,)) or "global" (over everything, shape ()).
          ddof: delta degrees of freedom, divisor ``count - ddof`` (1: unbiased, 0: biased).

        Raises:
          ValueError: bad `per`, too few values for `ddof`, NaN or Inf in x.
        """
        name = "Standardizer.fit"
        check_choice(name, "per", per, ("pixel", "channel", "global"))
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"{name}: expected non-empty x of shape (N, ...), got {fmt_shape(x.shape)}")
        if per == "pixel":
            stat_shape = x.shape[1:]
        elif per == "channel":
            if x.ndim < 2:
                raise ValueError(f"{name}: per='channel' expects x of shape (N, ..., C), "
                                 f"got {fmt_shape(x.shape)}")
            stat_shape = x.shape[-1:]
        else:
            stat_shape = ()
        rows = x.reshape(-1, math.prod(stat_shape))
        if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
            raise ValueError(f"{name}: ddof must be a non-negative int, got {ddof!r}")
        if len(rows) <= ddof:
            raise ValueError(f"{name}: ddof={ddof} needs more than {ddof} values per statistic, "
                             f"got {len(rows)} (x of shape {fmt_shape(x.shape)}, per={per!r})")
        # Chunks bound the float64 temporaries to a few MB whatever the size of x.
        step = max(1, (1 << 20) // rows.shape[1])
        total = np.zeros(rows.shape[1], np.float64)
        for i in range(0, len(rows), step):
            total += rows[i:i + step].sum(axis=0, dtype=np.float64)
        mean = total / len(rows)
        squares = np.zeros(rows.shape[1], np.float64)
        for i in range(0, len(rows), step):
            squares += ((rows[i:i + step].astype(np.float64) - mean) ** 2).sum(axis=0)
        std = np.sqrt(squares / (len(rows) - ddof))
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise ValueError(f"{name}: x of shape {fmt_shape(x.shape)} contains NaN or Inf")
        std = np.where(std <= EPS, 1.0, std)
        return cls(jnp.asarray(mean.reshape(stat_shape), jnp.float32),
                   jnp.asarray(std.reshape(stat_shape), jnp.float32))

    def apply(self, x: np.ndarray | jax.Array, *, eps: float = EPS) -> jax.Array:
        """x: (..., *mean.shape) -> float32 ``(x - mean) / (std + eps)`` of the same shape.

        Works under ``jax.jit``. Eagerly, a NaN or Inf in the result raises ValueError.
        """
        name = "Standardizer.apply"
        x = jnp.asarray(x)
        stat_shape = tuple(self.mean.shape)
        k = x.ndim - len(stat_shape)
        if k < 0 or tuple(x.shape[k:]) != stat_shape:
            raise ValueError(f"{name}: expected x of shape {fmt_shape((None, *stat_shape))} "
                             f"(statistics of shape {fmt_shape(stat_shape)}), got {fmt_shape(x.shape)}")
        lead = (1,) * k  # explicit, since rank promotion is refused
        y = (x.astype(jnp.float32) - self.mean.reshape(lead + stat_shape)) / (
            self.std.reshape(lead + stat_shape) + eps)
        check_finite(name, "the standardized x", y)
        return y

# ----------------------------------------------------------------------------------------
# The x/y check, and the split


def check_xy(name: str, x: DataArray, y: DataArray) -> int:
    """N, the number of examples of x and y, checked: both (N, ...) with the same N > 0.

    Shared by ``train_val_split`` and the batching functions (``fnn.data.batching``).

    Args:
      name: the public function that was called, to prefix the error message.
      x: (N, ...) inputs, anything with a shape (NumPy, JAX, memmap).
      y: (N, ...) targets.

    Returns:
      N.

    Raises:
      ValueError: x or y is a scalar, they differ in N, or N is 0.
    """
    nx, ny = np.shape(x), np.shape(y)
    if len(nx) == 0 or len(ny) == 0 or nx[0] != ny[0]:
        raise ValueError(f"{name}: x and y must have the same number of examples, "
                         f"got x of shape {fmt_shape(nx)} and y of shape {fmt_shape(ny)}")
    if nx[0] == 0:
        raise ValueError(f"{name}: got an empty data set, x of shape {fmt_shape(nx)}")
    return int(nx[0])


@key_keyword_only(0)
def train_val_split(x: DataArray, y: DataArray, val_fraction: float, *,
                    key: jax.Array) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Split off a random validation set, deterministically for a given key.

    ``train_val_split(key, x, y, val_fraction)``, the key first, still works until 0.3 with a
    ``DeprecationWarning``.

    Args:
      x: (N, ...) inputs (NumPy or JAX; the parts keep that type).
      y: (N, ...) targets.
      val_fraction: in (0, 1); the validation set has round(N * val_fraction) examples.
      key: a PRNG key (keyword-only).

    Returns:
      ``((x_train, y_train), (x_val, y_val))``, disjoint, together all N examples.

    Raises:
      ValueError: x and y differ in N, val_fraction outside (0, 1), or an empty part.
    """
    name = "train_val_split"
    n = check_xy(name, x, y)
    check_range(name, "val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False)
    n_val = int(round(n * float(val_fraction)))
    if n_val == 0 or n_val == n:
        raise ValueError(f"{name}: val_fraction={val_fraction} of N={n} examples leaves "
                         f"{n - n_val} for training and {n_val} for validation; both must be non-empty")
    perm = np.asarray(jax.random.permutation(key, n))
    val, train = perm[:n_val], perm[n_val:]
    return (x[train], y[train]), (x[val], y[val])
