"""Batching: ``Batches``, ``epoch_indices`` (the one builder of an epoch's shuffled batch indices),
``epoch_batches`` (device-resident batches for ``lax.scan``) and ``iterate_batches`` (host batches,
for data that does not fit on the device).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn._deprecation import key_keyword_only, warn_deprecated
from fnn.core import check_choice, check_positive_int
from fnn.data.preprocess import check_xy
from fnn.typing import DataArray, DTypeLike


class Batches(NamedTuple):
    """One epoch of device-resident batches, ready for ``lax.scan`` over the first axis.

    Attributes:
      x: (steps, batch, ...) inputs.
      y: (steps, batch, ...) targets.
      mask: (steps, batch), 1 for real examples and 0 for padding; x's dtype when x is
        floating, else float32. All ones with remainder="drop".
    """

    x: jax.Array
    y: jax.Array
    mask: jax.Array


@key_keyword_only(0)
def epoch_indices(n: int, batch_size: int, *, key: jax.Array, remainder: str = "drop",
                  mask_dtype: DTypeLike = jnp.float32) -> tuple[jax.Array, jax.Array]:
    """One epoch's shuffled example indices, cut into equal batches: what ``epoch_batches`` gathers.

    ``fit``'s fused epoch scans over these and gathers each batch inside the scan
    (``jnp.take(x, idx[i], axis=0)``), so no shuffled copy of the whole training set is made.
    The permutation, the remainder rule and the mask are exactly ``epoch_batches``'s.
    ``epoch_indices(key, n, batch_size)``, the key first, still works until 0.3 with a
    ``DeprecationWarning``.

    Args:
      n: the number of examples N (static).
      batch_size: examples per batch, at most N (static).
      key: a PRNG key (keyword-only).
      remainder: "drop" or "pad" (see ``epoch_batches``).
      mask_dtype: dtype of the mask.

    Returns:
      ``(idx, mask)``: idx (steps, batch_size) int32 indices into the N examples, mask
      (steps, batch_size) 1 for real examples and 0 for padding.
    """
    return _indices("epoch_indices", key, check_positive_int("epoch_indices", "n", n), batch_size, remainder,
                    mask_dtype)


def _indices(name: str, key, n: int, batch_size: int, remainder: str, mask_dtype):
    """epoch_indices with errors prefixed by `name` (the public function the caller called)."""
    check_choice(name, "remainder", remainder, ("drop", "pad"))
    batch_size = check_positive_int(name, "batch_size", batch_size)
    if batch_size > n:
        raise ValueError(f"{name}: batch_size={batch_size} is larger than the number of examples N={n}")
    perm = jax.random.permutation(key, n)
    if remainder == "drop":
        steps = n // batch_size
        idx = perm[: steps * batch_size]
        mask = jnp.ones((steps, batch_size), mask_dtype)
    else:
        steps = -(-n // batch_size)
        idx = jnp.concatenate([perm, perm[: steps * batch_size - n]])
        mask = (jnp.arange(steps * batch_size) < n).astype(mask_dtype).reshape(steps, batch_size)
    return idx.reshape(steps, batch_size).astype(jnp.int32), mask


@key_keyword_only(0)
def epoch_batches(x: DataArray, y: DataArray, batch_size: int, *, key: jax.Array, remainder: str = "drop") -> Batches:
    """Shuffle on the device with `key` and cut one epoch into equal batches.

    remainder="drop": ``steps = N // batch_size``; the last ``N % batch_size`` examples of
    the permutation are left out this epoch (each example appears at most once).
    remainder="pad": ``steps = ceil(N / batch_size)``; the last batch is filled up with the
    first examples of the permutation, marked 0 in ``mask`` (each example appears exactly once
    with mask 1). Weight per-example losses by ``mask`` and divide by ``mask.sum()``.

    This materializes a shuffled copy of x; ``epoch_indices`` gives the same batches as
    indices to gather one at a time (what ``fit`` does).

    Jit-able with `batch_size` and `remainder` static:
    ``jax.jit(epoch_batches, static_argnames=("batch_size", "remainder"))``.
    ``epoch_batches(key, x, y, batch_size)``, the key first, still works until 0.3 with a
    ``DeprecationWarning``.

    Args:
      x: (N, ...) inputs.
      y: (N, ...) targets.
      batch_size: examples per batch, at most N.
      key: a PRNG key (keyword-only).
      remainder: "drop" or "pad".

    Returns:
      ``Batches(x, y, mask)`` with x: (steps, batch_size, ...), y: (steps, batch_size, ...),
      mask: (steps, batch_size).

    Raises:
      ValueError: empty data, x and y differ in N, batch_size not positive or larger than N.
    """
    name = "epoch_batches"
    n = check_xy(name, x, y)
    x, y = jnp.asarray(x), jnp.asarray(y)
    mask_dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    idx, mask = _indices(name, key, n, batch_size, remainder, mask_dtype)
    steps, batch_size = idx.shape
    xb = jnp.take(x, idx.reshape(-1), axis=0).reshape((steps, batch_size) + x.shape[1:])
    yb = jnp.take(y, idx.reshape(-1), axis=0).reshape((steps, batch_size) + y.shape[1:])
    return Batches(xb, yb, mask)


def iterate_batches(x: DataArray, y: DataArray, batch_size: int, *, key: jax.Array | None = None, shuffle: bool = True,
                    remainder: str = "keep",
                    drop_remainder: bool | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield host (NumPy) batches, for data that does not fit on the device.

    Arguments are checked when called, not at the first ``next``. ``remainder`` shares its
    vocabulary with ``epoch_batches``: "drop" leaves the last N % batch_size examples out;
    "keep" yields them as a last, smaller batch (host batches may differ in size, so there
    is no need for "pad" and its mask here).

    Args:
      x: (N, ...) inputs, anything indexable by an integer array (np.ndarray, np.memmap).
      y: (N, ...) targets.
      batch_size: examples per batch.
      key: PRNG key for the shuffle; required when `shuffle` is True.
      shuffle: visit examples in a random order (from `key`) instead of in order.
      remainder: "keep" (default) or "drop" the last, smaller batch.
      drop_remainder: deprecated (removed in 0.3): True is ``remainder="drop"``, False ``"keep"``.

    Yields:
      ``(x_batch, y_batch)`` of shapes (B, ...), B = batch_size except perhaps the last.
    """
    name = "iterate_batches"
    batch_size = check_positive_int(name, "batch_size", batch_size)
    n = check_xy(name, x, y)
    if shuffle and key is None:
        raise ValueError(f"{name}: shuffle=True needs a PRNG key (pass key=jax.random.key(seed), "
                         f"or shuffle=False)")
    if drop_remainder is not None:
        warn_deprecated("iterate_batches(drop_remainder=...)", 'iterate_batches(remainder="drop" or "keep")')
        if remainder != "keep":
            raise ValueError(f"{name}: pass remainder={remainder!r} or the deprecated "
                             f"drop_remainder={drop_remainder!r}, not both")
        remainder = "drop" if drop_remainder else "keep"
    check_choice(name, "remainder", remainder, ("drop", "keep"))
    if remainder == "drop" and batch_size > n:
        raise ValueError(f"{name}: batch_size={batch_size} is larger than the number of examples N={n}, "
                         f"so remainder='drop' would yield no batch")
    order = np.asarray(jax.random.permutation(key, n)) if shuffle else np.arange(n)  # type: ignore[arg-type]  # key is checked above when shuffle
    stop = n - n % batch_size if remainder == "drop" else n

    def batches():
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size]
            yield np.asarray(x[idx]), np.asarray(y[idx])

    return batches()
