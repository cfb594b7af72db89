"""Momentum in its two common forms: heavy ball (PyTorch's) and exponential average (the course's)."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnn.core import Optimizer, check_range
from fnn.optim._base import as_schedule, check_grads, check_unit, current_lr, zero_count
from fnn.typing import LearningRate


class MomentumState(NamedTuple):
    """count: int32 scalar (updates done); velocity: params-shaped, in the params' dtype."""

    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, as in optax
    velocity: object


def _heavy_ball_velocity(v, g, *, momentum, dampening, first):
    """v ← μ·v + (1 − dampening)·g, except v₁ = g at the first step (as torch.optim.SGD)."""
    g = g.astype(v.dtype)
    return jnp.where(first, g, momentum * v + (1.0 - dampening) * g)


def _ema_velocity(v, g, *, decay):
    """v ← γ·v + (1 − γ)·g, starting from v₀ = 0 (no bias correction)."""
    return decay * v + (1.0 - decay) * g.astype(v.dtype)


def _descend(v, *, lr):
    """−lr·v."""
    return -lr.astype(v.dtype) * v


def momentum(learning_rate: LearningRate, momentum: float = 0.9, dampening: float = 0.0) -> Optimizer:
    """Heavy-ball momentum (Polyak, 1964) in PyTorch's form, as ``torch.optim.SGD(momentum=)``.

    v ← μ·v + (1 − dampening)·g (with v₁ = g), θ ← θ − lr·v. With dampening 0 this is
    also ``optax.sgd(momentum=)``. For the exponential-average form see ``ema_momentum``.

    Args:
      learning_rate: a float >= 0 or a schedule ``count -> lr``.
      momentum: μ in [0, 1).
      dampening: in [0, 1]; scales the new gradient from the second step on.
    """
    name = "momentum"
    schedule = as_schedule(name, learning_rate)
    mu = check_unit(name, "momentum", momentum)
    damp = check_range(name, "dampening", dampening, 0.0, 1.0, high_inclusive=True)

    def init(params):
        return MomentumState(count=zero_count(), velocity=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None, *, lr_scale=1.0):
        check_grads(name, state.velocity, grads)
        lr = current_lr(schedule, state.count, lr_scale)
        step = partial(_heavy_ball_velocity, momentum=mu, dampening=damp, first=state.count == 0)
        velocity = jax.tree.map(step, state.velocity, grads)
        updates = jax.tree.map(partial(_descend, lr=lr), velocity)
        return updates, MomentumState(count=state.count + 1, velocity=velocity)

    return Optimizer(init, update)


def ema_momentum(learning_rate: LearningRate, decay: float = 0.9) -> Optimizer:
    """Momentum as an exponential moving average of gradients (the course's form).

    v ← γ·v + (1 − γ)·g with v₀ = 0, θ ← θ − lr·v: Polyak's (1964) momentum written as
    Adam's first moment without bias correction (Kingma & Ba, 2015). Its velocity is (1 − γ)
    times the heavy-ball one, so ``ema_momentum(lr, γ)`` takes exactly the steps of
    ``momentum(lr·(1 − γ), γ)``: same path, a learning rate 1/(1 − γ) times larger.

    Args:
      learning_rate: a float >= 0 or a schedule ``count -> lr``.
      decay: γ in [0, 1).
    """
    name = "ema_momentum"
    schedule = as_schedule(name, learning_rate)
    gamma = check_unit(name, "decay", decay)

    def init(params):
        return MomentumState(count=zero_count(), velocity=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None, *, lr_scale=1.0):
        check_grads(name, state.velocity, grads)
        lr = current_lr(schedule, state.count, lr_scale)
        velocity = jax.tree.map(partial(_ema_velocity, decay=gamma), state.velocity, grads)
        updates = jax.tree.map(partial(_descend, lr=lr), velocity)
        return updates, MomentumState(count=state.count + 1, velocity=velocity)

    return Optimizer(init, update)
