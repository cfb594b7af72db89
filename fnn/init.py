"""Weight initializers: ``init(key, shape, dtype=jnp.float32) -> array``.

Plain initializers (``zeros``, ``glorot_uniform``, ``he_normal``, ...) are used as they are;
``constant``, ``normal``, ``uniform`` and ``variance_scaling`` are factories returning one.

Fans follow the usual convention: a dense kernel ``(D, M)`` has fan_in D and fan_out M; a
conv kernel ``(*window, C_in, C_out)`` has fan_in ``prod(window)·C_in`` and fan_out
``prod(window)·C_out``.

The course's small-scale variants are all expressible:

- ``normal(0.001)``                             N(0, 1)·0.001
- ``variance_scaling(1.0, "fan_in", "normal")``  N(0, 1)·1/√n      (= ``lecun_normal``)
- ``variance_scaling(2.0, "fan_in", "normal")``  N(0, 1)·√(2/n)    (= ``he_normal``)
- ``variance_scaling(1.0, "fan_avg", "normal")`` N(0, 1)·√(2/(n_in+n_out)) (= ``glorot_normal``)

Note: unlike ``jax.nn.initializers``, the named normal initializers here draw from a plain
(untruncated) normal, as the course and ``torch.nn.init.kaiming_normal_`` do; use
``variance_scaling(..., distribution="truncated_normal")`` for the truncated form.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from fnn.typing import Array, DTypeLike, Initializer, Key, ShapeLike

# Standard deviation of a unit normal truncated to [-2, 2]; dividing by it restores unit variance.
_TRUNC_STD = 0.87962566103423978


def _fans(shape: Sequence[int]) -> tuple[float, float]:
    shape = tuple(shape)
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive = math.prod(shape[:-2])
    return float(shape[-2] * receptive), float(shape[-1] * receptive)


def zeros(key: Key | None, shape: ShapeLike, dtype: DTypeLike = jnp.float32) -> Array:
    """All zeros."""
    del key
    return jnp.zeros(shape, dtype)


def ones(key: Key | None, shape: ShapeLike, dtype: DTypeLike = jnp.float32) -> Array:
    """All ones."""
    del key
    return jnp.ones(shape, dtype)


def constant(value: float) -> Initializer:
    """All entries equal to `value`."""

    def init(key: Key | None, shape: ShapeLike, dtype: DTypeLike = jnp.float32) -> Array:
        del key
        return jnp.full(shape, value, dtype)

    return init


def normal(stddev: float = 1e-2) -> Initializer:
    """N(0, stddev²)."""

    def init(key: Key, shape: ShapeLike, dtype: DTypeLike = jnp.float32) -> Array:
        return stddev * jax.random.normal(key, shape, dtype)

    return init


def uniform(scale: float = 1e-2) -> Initializer:
    """U(-scale, scale), variance scale²/3 (symmetric, unlike jax.nn.initializers.uniform)."""

    def init(key: Key, shape: ShapeLike, dtype: DTypeLike = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


def variance_scaling(scale: float, mode: str = "fan_in", distribution: str = "normal") -> Initializer:
    """Draw with variance ``scale / n``, n the fan given by `mode`.

    Args:
      scale: numerator of the variance.
      mode: "fan_in", "fan_out" or "fan_avg" ((fan_in + fan_out) / 2).
      distribution: "normal", "truncated_normal" (to ±2σ, rescaled to the exact variance)
        or "uniform" (U(-a, a) with a = √(3·scale/n)).
    """
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"variance_scaling: mode must be one of ['fan_in', 'fan_out', 'fan_avg'], got {mode!r}")
    if distribution not in ("normal", "truncated_normal", "uniform"):
        raise ValueError("variance_scaling: distribution must be one of "
                         f"['normal', 'truncated_normal', 'uniform'], got {distribution!r}")
    if not scale > 0:
        raise ValueError(f"variance_scaling: scale must be > 0, got {scale!r}")

    def init(key: Key, shape: ShapeLike, dtype: DTypeLike = jnp.float32) -> Array:
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        var = scale / n
        if distribution == "normal":
            return math.sqrt(var) * jax.random.normal(key, shape, dtype)
        if distribution == "truncated_normal":
            z = jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
            return (math.sqrt(var) / _TRUNC_STD) * z
        limit = math.sqrt(3.0 * var)
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return init


glorot_uniform = variance_scaling(1.0, "fan_avg", "uniform")
glorot_uniform.__doc__ = "Glorot/Xavier uniform: U(-a, a), a = √(6/(fan_in+fan_out)) (Glorot & Bengio 2010)."
glorot_normal = variance_scaling(1.0, "fan_avg", "normal")
glorot_normal.__doc__ = "Glorot/Xavier normal: N(0, 2/(fan_in+fan_out))."
he_normal = variance_scaling(2.0, "fan_in", "normal")
he_normal.__doc__ = "He/Kaiming normal: N(0, 2/fan_in) (He et al. 2015), for ReLU nets."
he_uniform = variance_scaling(2.0, "fan_in", "uniform")
he_uniform.__doc__ = "He/Kaiming uniform: U(-a, a), a = √(6/fan_in)."
lecun_normal = variance_scaling(1.0, "fan_in", "normal")
lecun_normal.__doc__ = "LeCun normal: N(0, 1/fan_in)."
lecun_uniform = variance_scaling(1.0, "fan_in", "uniform")
lecun_uniform.__doc__ = "LeCun uniform: U(-a, a), a = √(3/fan_in)."
