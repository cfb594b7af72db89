"""Nesterov momentum in PyTorch's form."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from fnn.core import Optimizer
from fnn.optim._base import as_schedule, check_grads, check_unit, current_lr, zero_count
from fnn.optim.momentum import MomentumState, _heavy_ball_velocity
from fnn.typing import LearningRate


def _nesterov_step(g, v, *, momentum, lr):
    """−lr·(g + μ·v), with v already updated: the look-ahead gradient step."""
    g = g.astype(v.dtype)
    return -lr.astype(v.dtype) * (g + momentum * v)


def nesterov(learning_rate: LearningRate, momentum: float = 0.9) -> Optimizer:
    """Nesterov accelerated gradient (Nesterov, 1983; Sutskever et al., 2013), PyTorch's form.

    v ← μ·v + g, θ ← θ − lr·(g + μ·v), as ``torch.optim.SGD(momentum=μ, nesterov=True)``
    and ``optax.sgd(momentum=μ, nesterov=True)``. No dampening (torch refuses it too).

    Args:
      learning_rate: a float >= 0 or a schedule ``count -> lr``.
      momentum: μ in [0, 1).
    """
    name = "nesterov"
    schedule = as_schedule(name, learning_rate)
    mu = check_unit(name, "momentum", momentum)

    def init(params):
        return MomentumState(count=zero_count(), velocity=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None, *, lr_scale=1.0):
        check_grads(name, state.velocity, grads)
        lr = current_lr(schedule, state.count, lr_scale)
        step = partial(_heavy_ball_velocity, momentum=mu, dampening=0.0, first=state.count == 0)
        velocity = jax.tree.map(step, state.velocity, grads)
        updates = jax.tree.map(partial(_nesterov_step, momentum=mu, lr=lr), grads, velocity)
        return updates, MomentumState(count=state.count + 1, velocity=velocity)

    return Optimizer(init, update)
