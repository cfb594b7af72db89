"""Plain stochastic gradient descent."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax

from fnn.core import Optimizer
from fnn.optim._base import as_schedule, check_grads, current_lr, zero_count
from fnn.typing import LearningRate


class SgdState(NamedTuple):
    """count: int32 scalar, the number of updates done so far (the schedule's input)."""

    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, as in optax


def _sgd_step(g, *, lr):
    """−lr·g, in g's dtype."""
    return -lr.astype(g.dtype) * g


def sgd(learning_rate: LearningRate) -> Optimizer:
    """Stochastic gradient descent: θ ← θ − lr·g (Robbins & Monro, 1951).

    Same as ``torch.optim.SGD(lr=...)`` and ``optax.sgd``. For L2 regularisation chain
    ``add_weight_decay`` before it (torch's ``weight_decay=``).

    Args:
      learning_rate: a float >= 0 or a schedule ``count -> lr``.
    """
    name = "sgd"
    schedule = as_schedule(name, learning_rate)

    def init(params):
        return SgdState(count=zero_count())

    def update(grads, state, params=None, *, lr_scale=1.0):
        if params is not None:
            check_grads(name, params, grads)
        lr = current_lr(schedule, state.count, lr_scale)
        updates = jax.tree.map(partial(_sgd_step, lr=lr), grads)
        return updates, SgdState(count=state.count + 1)

    return Optimizer(init, update)
