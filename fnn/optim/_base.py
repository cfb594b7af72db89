"""Helpers shared by the optimizer rules: argument checks, learning-rate resolution, counters.

Scalars that every leaf needs (the learning rate, bias corrections) are computed once per
step in the default float dtype (float64 when x64 is on) and cast to each leaf's dtype
inside the per-leaf functions, so float32 parameters stay float32 under strict promotion.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnn.core import check_range, check_tree_match, is_concrete
from fnn.typing import Schedule


def default_float() -> jnp.dtype:
    """float64 when x64 is enabled, else float32 (read at call time, not import time)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def zero_count() -> jax.Array:
    """The step counter: an int32 scalar holding the number of updates done so far."""
    return jnp.zeros((), jnp.int32)


def as_schedule(name: str, learning_rate: Any) -> Schedule:
    """A float learning rate becomes a constant schedule; a callable is used as `count -> lr`."""
    if callable(learning_rate):
        return _checked_schedule(name, learning_rate)
    if isinstance(learning_rate, jax.core.Tracer):
        # A traced learning rate (e.g. vmapped over a grid of configurations) has no value to check.
        return lambda count: learning_rate
    lr = check_float_arg(name, "learning_rate", learning_rate)
    if not lr >= 0.0 or math.isinf(lr):
        raise ValueError(f"{name}: learning_rate must be a finite float >= 0 or a schedule "
                         f"count -> lr, got {learning_rate!r}")
    return lambda count: lr


def _checked_schedule(name: str, schedule: Schedule) -> Schedule:
    """`schedule`, refusing a NaN, infinite or negative value wherever it is concrete.

    Eagerly the value is checked at every call. Under ``jit`` it is a tracer and cannot be
    checked: a NaN learning rate then makes NaN updates, which ``fit``'s NaN/Inf guard stops.
    """
    def checked(count):
        lr = schedule(count)
        if is_concrete(lr):
            v = np.asarray(lr)
            if v.dtype.kind not in "biuf" or not (np.all(np.isfinite(v)) and np.all(v >= 0)):
                at = f"count {np.asarray(count).tolist()}" if is_concrete(count) else "a traced count"
                raise ValueError(f"{name}: the learning-rate schedule returned {lr!r} at {at}; "
                                 f"expected a finite float >= 0")
        return lr

    return checked


def check_float_arg(name: str, what: str, value: Any) -> float:
    """Convert a hyperparameter to a Python float or fail with a message naming it."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: {what} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {what} must be a number, got {value!r}") from None


def check_unit(name: str, what: str, value: Any) -> float:
    """Decay rates, betas and momenta live in [0, 1)."""
    return check_range(name, what, value, 0.0, 1.0)


def check_nonneg(name: str, what: str, value: Any) -> float:
    """eps, weight decay and the like: finite and >= 0."""
    return check_range(name, what, value, 0.0, math.inf)


def check_grads(name: str, expected: Any, grads: Any) -> None:
    """Refuse grads whose tree structure or leaf shapes differ from the state's (or params')."""
    check_tree_match(name, "grads", expected, grads)


def as_scale(lr_scale: Any) -> jax.Array:
    """The reduce-on-plateau multiplier ``lr_scale`` as a scalar of the default float dtype."""
    return jnp.asarray(lr_scale).astype(default_float())


def current_lr(schedule: Schedule, count: jax.Array, lr_scale: Any) -> jax.Array:
    """schedule(count) · lr_scale as a scalar of the default float dtype."""
    lr = jnp.asarray(schedule(count)).astype(default_float())
    return lr * as_scale(lr_scale)


def as_float(count: jax.Array) -> jax.Array:
    """The int32 counter as a default-float scalar (strict promotion refuses float ** int)."""
    return jnp.asarray(count).astype(default_float())
