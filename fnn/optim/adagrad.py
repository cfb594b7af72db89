"""AdaGrad: per-coordinate steps scaled by the root of the summed squared gradients."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnn.core import Optimizer
from fnn.optim._base import as_schedule, check_grads, check_nonneg, current_lr, zero_count
from fnn.typing import LearningRate


class AdagradState(NamedTuple):
    """count: int32 scalar; sum_of_squares: params-shaped Σ g², in the params' dtype."""

    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, as in optax
    sum_of_squares: object


def _accumulate(s, g):
    """s ← s + g²."""
    g = g.astype(s.dtype)
    return s + g * g


def _adagrad_step(g, s, *, lr, eps):
    """−lr·g / (√s + ε): eps outside the root, as torch."""
    g = g.astype(s.dtype)
    return -lr.astype(s.dtype) * g / (jnp.sqrt(s) + eps)


def adagrad(learning_rate: LearningRate, eps: float = 1e-10, initial_accumulator: float = 0.0) -> Optimizer:
    """AdaGrad (Duchi, Hazan & Singer, 2011), as ``torch.optim.Adagrad``.

    s ← s + g², θ ← θ − lr·g / (√s + ε). torch's ``lr_decay`` is a schedule here:
    ``lambda count: lr / (1 + count * lr_decay)``.

    Args:
      learning_rate: a float >= 0 or a schedule ``count -> lr``.
      eps: ε >= 0, added to √s.
      initial_accumulator: >= 0, the starting value of s.
    """
    name = "adagrad"
    schedule = as_schedule(name, learning_rate)
    eps = check_nonneg(name, "eps", eps)
    s0 = check_nonneg(name, "initial_accumulator", initial_accumulator)

    def init(params):
        return AdagradState(count=zero_count(),
                            sum_of_squares=jax.tree.map(partial(jnp.full_like, fill_value=s0), params))

    def update(grads, state, params=None, *, lr_scale=1.0):
        check_grads(name, state.sum_of_squares, grads)
        lr = current_lr(schedule, state.count, lr_scale)
        sums = jax.tree.map(_accumulate, state.sum_of_squares, grads)
        updates = jax.tree.map(partial(_adagrad_step, lr=lr, eps=eps), grads, sums)
        return updates, AdagradState(count=state.count + 1, sum_of_squares=sums)

    return Optimizer(init, update)
