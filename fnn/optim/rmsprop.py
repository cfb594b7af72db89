"""RMSprop: steps divided by a running root mean square of the gradients."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnn.core import Optimizer
from fnn.optim._base import as_schedule, check_grads, check_nonneg, check_unit, current_lr, zero_count
from fnn.typing import LearningRate


class RmspropState(NamedTuple):
    """Running averages, params-shaped in the params' dtype.

    count: int32 scalar. square_avg: E[g²]. grad_avg: E[g] when ``centered``, else ``()``.
    momentum_buffer: the momentum buffer when ``momentum > 0``, else ``()``. Unused fields
    are empty tuples (no leaves), so they cost no memory and the structure stays fixed.
    """

    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, as in optax
    square_avg: object
    grad_avg: object
    momentum_buffer: object


def _ema_square(a, g, *, decay):
    """a ← α·a + (1 − α)·g²."""
    g = g.astype(a.dtype)
    return decay * a + (1.0 - decay) * (g * g)


def _ema(a, g, *, decay):
    """a ← α·a + (1 − α)·g."""
    return decay * a + (1.0 - decay) * g.astype(a.dtype)


def _rms_direction(g, sq, mean=0.0, *, eps, eps_inside_sqrt):
    """g / (√(E[g²] − E[g]²) + ε), or with ε under the root; mean is 0 when not centered."""
    g = g.astype(sq.dtype)
    var = sq - mean * mean
    denom = jnp.sqrt(var + eps) if eps_inside_sqrt else jnp.sqrt(var) + eps
    return g / denom


def _buffer(b, d, *, momentum):
    """b ← μ·b + d."""
    return momentum * b + d


def _descend(d, *, lr):
    return -lr.astype(d.dtype) * d


def rmsprop(learning_rate: LearningRate, decay: float = 0.99, eps: float = 1e-8, eps_inside_sqrt: bool = False,
            centered: bool = False, momentum: float = 0.0) -> Optimizer:
    """RMSprop (Tieleman & Hinton, 2012, Coursera lecture 6.5), as ``torch.optim.RMSprop``.

    E[g²] ← α·E[g²] + (1 − α)·g²; d = g / (√(E[g²] − E[g]²·centered) + ε);
    with momentum: b ← μ·b + d, θ ← θ − lr·b; else θ ← θ − lr·d. ``decay`` is torch's
    ``alpha``. ``eps_inside_sqrt=True`` puts ε under the root, as optax/TensorFlow do.

    Args:
      learning_rate: a float >= 0 or a schedule ``count -> lr``.
      decay: α in [0, 1).
      eps: ε >= 0.
      eps_inside_sqrt: add ε to the mean square before the root (optax) instead of after (torch).
      centered: subtract the squared running mean of g (Graves, 2013).
      momentum: μ in [0, 1); 0 means no momentum buffer.
    """
    name = "rmsprop"
    schedule = as_schedule(name, learning_rate)
    alpha = check_unit(name, "decay", decay)
    eps = check_nonneg(name, "eps", eps)
    mu = check_unit(name, "momentum", momentum)
    centered = bool(centered)
    eps_inside_sqrt = bool(eps_inside_sqrt)

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return RmspropState(count=zero_count(), square_avg=zeros,
                            grad_avg=zeros if centered else (),
                            momentum_buffer=zeros if mu > 0 else ())

    def update(grads, state, params=None, *, lr_scale=1.0):
        check_grads(name, state.square_avg, grads)
        lr = current_lr(schedule, state.count, lr_scale)
        square_avg = jax.tree.map(partial(_ema_square, decay=alpha), state.square_avg, grads)
        direction_fn = partial(_rms_direction, eps=eps, eps_inside_sqrt=eps_inside_sqrt)
        if centered:
            grad_avg = jax.tree.map(partial(_ema, decay=alpha), state.grad_avg, grads)
            direction = jax.tree.map(direction_fn, grads, square_avg, grad_avg)
        else:
            grad_avg = ()
            direction = jax.tree.map(direction_fn, grads, square_avg)
        if mu > 0:
            buffer = jax.tree.map(partial(_buffer, momentum=mu), state.momentum_buffer, direction)
            direction = buffer
        else:
            buffer = ()
        updates = jax.tree.map(partial(_descend, lr=lr), direction)
        return updates, RmspropState(state.count + 1, square_avg, grad_avg, buffer)

    return Optimizer(init, update)
