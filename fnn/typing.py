"""Type aliases used in fnn's public signatures.

They are names for readers (and for type checkers); none adds a runtime check. A pytree has
no static type that a checker could verify (any nesting of dicts, lists, tuples and
NamedTuples of arrays), so ``PyTree`` is ``Any``, as in JAX itself.

    from fnn.typing import Array, PyTree

    def l2_norm(tree: PyTree) -> Array: ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import jax
import numpy as np
from jax.typing import ArrayLike, DTypeLike

__all__ = ["Array", "ArrayLike", "DTypeLike", "PyTree", "Params", "State", "Key", "KeyLike", "Shape", "ShapeLike",
           "Size", "Padding", "DataArray",            "Data", "Schedule", "LearningRate", "Initializer"]

Array: TypeAlias = jax.Array
"""A JAX array (what fnn's functions return)."""

PyTree: TypeAlias = Any
"""A pytree of arrays: params, state, gradients, optimizer state."""

Params: TypeAlias = PyTree
"""A layer's or model's parameters (a dict of arrays for a leaf layer, a tuple of those for ``serial``)."""

State: TypeAlias = PyTree
"""A layer's non-trainable state (BatchNorm's running statistics; ``{}`` for most layers)."""

Key: TypeAlias = jax.Array
"""A typed PRNG key, ``jax.random.key(seed)``."""

KeyLike: TypeAlias = jax.Array | int | None
"""What ``fit`` and friends accept as a key: a typed key, a legacy ``uint32[2]`` key, an int seed or None."""

Shape: TypeAlias = tuple[int, ...]
"""A per-example shape (no batch axis), e.g. ``(28, 28, 1)``."""

ShapeLike: TypeAlias = Sequence[int]
"""Any sequence of ints accepted as a shape."""

Size: TypeAlias = int | Sequence[int]
"""A window, stride or dilation: one int for every spatial dim, or one int per dim."""

Padding: TypeAlias = str | int | Sequence[int] | Sequence[tuple[int, int]]
"""``"VALID"``, ``"SAME"``, ``"FULL"``, an int for every side, one int per dim, or one (low, high) pair per dim."""

DataArray: TypeAlias = jax.Array | np.ndarray
"""Inputs or targets of a data set, (N, ...) with the examples on the first axis: a NumPy or JAX array."""

Data: TypeAlias = tuple[DataArray, DataArray]
"""``(x, y)``: inputs (N, ...) and targets (N,) or (N, M)."""

Schedule: TypeAlias = Callable[[Any], Any]
"""A learning-rate schedule ``count -> lr`` (``count`` the number of steps taken, an int or an int array)."""

LearningRate: TypeAlias = float | Schedule
"""A constant learning rate or a schedule."""

Initializer: TypeAlias = Callable[..., jax.Array]
"""A weight initializer ``init(key, shape, dtype=jnp.float32) -> array`` (``fnn.init``)."""
