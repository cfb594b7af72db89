"""Search spaces: what each config key may take, and the configs drawn from a space.

A space is a dict from names to a ``list`` or ``choice([...])`` (these values),
``loguniform(low, high)`` or ``uniform_range(low, high)`` (a continuous range), or a fixed
value. ``grid(space)`` enumerates a space of lists; ``sample(space, num_trials, key=key)``
draws random configs from any space. ``RESERVED`` names the config keys with a meaning of
their own (see the ``fnn.search`` package docstring); ``to_python`` turns NumPy scalars into
Python ones (shared with ``trials`` and ``vmap``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn._deprecation import deprecated_alias, key_keyword_only
from fnn.core import check_positive_int

RESERVED = ("seed", "init_scale", "weight_decay")


class LogUniform(NamedTuple):
    """Log-uniform on [low, high]: log x is uniform on [log low, log high]."""

    low: float
    high: float


class Uniform(NamedTuple):
    """Uniform on [low, high]."""

    low: float
    high: float


class Choice(NamedTuple):
    """One of `values`, each equally likely."""

    values: tuple


def _bounds(name: str, low, high, *, positive: bool) -> tuple[float, float]:
    try:
        lo, hi = float(low), float(high)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: low and high must be numbers, got {low!r} and {high!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name}: expected finite low < high, got low={low!r}, high={high!r}")
    if positive and lo <= 0:
        raise ValueError(f"{name}: low must be > 0 (a log scale), got {low!r}")
    return lo, hi


def loguniform(low: float, high: float) -> LogUniform:
    """A log-uniform range, e.g. ``loguniform(1e-4, 1e-1)`` for a learning rate (0 < low < high)."""
    return LogUniform(*_bounds("loguniform", low, high, positive=True))


def uniform_range(low: float, high: float) -> Uniform:
    """A uniform range [low, high] (low < high), e.g. ``uniform_range(0.5, 1.5)`` for an init scale."""
    return Uniform(*_bounds("uniform_range", low, high, positive=False))


@deprecated_alias("fnn.search.uniform", "fnn.search.uniform_range")
def uniform(low: float, high: float) -> Uniform:
    """Deprecated alias of ``uniform_range`` (``uniform`` is also an initializer, ``fnn.init.uniform``)."""
    return uniform_range(low, high)


def choice(values: Sequence) -> Choice:
    """One of `values` (a non-empty sequence), e.g. ``choice([64, 128, 256])``."""
    values = tuple(values)
    if not values:
        raise ValueError("choice: needs at least one value")
    return Choice(values)


def _check_space(name: str, space) -> dict:
    if not isinstance(space, Mapping) or not space:
        raise ValueError(f"{name}: space must be a non-empty dict from names to values, lists or ranges, "
                         f"got {space!r}")
    for k, v in space.items():
        if not isinstance(k, str):
            raise ValueError(f"{name}: space keys must be strings, got {k!r}")
        if isinstance(v, list) and not v:
            raise ValueError(f"{name}: space[{k!r}] is an empty list")
    return dict(space)


def grid(space: Mapping[str, Any]) -> list[dict]:
    """Every combination of the listed values, in order (the last key varies fastest).

    Raises:
      ValueError: a ``uniform_range``/``loguniform`` range (a grid needs finite values: list them).
    """
    space = _check_space("grid", space)
    axes = []
    for k, v in space.items():
        if isinstance(v, (Uniform, LogUniform)):
            raise ValueError(f"grid: space[{k!r}] is a continuous range {v!r}; a grid needs a list of "
                             f"values (or use random_search)")
        axes.append(list(v.values) if isinstance(v, Choice) else v if isinstance(v, list) else [v])
    return [dict(zip(space, combo, strict=True)) for combo in itertools.product(*axes)]


@partial(jax.jit, static_argnums=(1, 2))
def _uniforms(key, num_trials: int, num_dims: int) -> jax.Array:
    """(num_trials, num_dims) U[0, 1): trial t, dimension j from fold_in(fold_in(key, t), j).

    Folding in the trial number makes trial t's config independent of num_trials.
    """
    def one(t, j):
        return jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, t), j), (), jnp.float32)

    t = jnp.arange(num_trials, dtype=jnp.uint32)
    j = jnp.arange(num_dims, dtype=jnp.uint32)
    return jax.vmap(lambda tt: jax.vmap(lambda jj: one(tt, jj))(j))(t)


def to_python(v: Any) -> Any:
    """A NumPy scalar as the Python scalar it holds; anything else unchanged (for JSON and dict printing)."""
    return v.item() if isinstance(v, np.generic) else v


@key_keyword_only(2)
def sample(space: Mapping[str, Any], num_trials: int, *, key: jax.Array) -> list[dict]:
    """`num_trials` random configs from `space`, deterministic for a given `key` (keyword-only).

    Lists and ``choice`` pick uniformly; ``loguniform``/``uniform_range`` draw in their range
    (inclusive bounds); fixed values are copied. The first n configs do not depend on
    `num_trials` (each trial folds its index into the key). ``sample(space, num_trials, key)``
    with a positional key still works until 0.3 with a ``DeprecationWarning``.
    """
    space = _check_space("sample", space)
    num_trials = check_positive_int("sample", "num_trials", num_trials)
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key))
    u = np.asarray(_uniforms(key, num_trials, len(space)), np.float64)
    configs = []
    for t in range(num_trials):
        config = {}
        for j, (k, v) in enumerate(space.items()):
            if isinstance(v, LogUniform):
                lo, hi = math.log(v.low), math.log(v.high)
                config[k] = min(max(math.exp(lo + u[t, j] * (hi - lo)), v.low), v.high)
            elif isinstance(v, Uniform):
                config[k] = min(max(v.low + u[t, j] * (v.high - v.low), v.low), v.high)
            elif isinstance(v, (Choice, list)):
                values = list(v.values) if isinstance(v, Choice) else v
                config[k] = to_python(values[min(int(u[t, j] * len(values)), len(values) - 1)])
            else:
                config[k] = v
        configs.append(config)
    return configs
