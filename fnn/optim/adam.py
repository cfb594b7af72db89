"""Adam and AdamW."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnn.core import Optimizer
from fnn.optim._base import (
    as_float,
    as_schedule,
    check_grads,
    check_nonneg,
    check_unit,
    current_lr,
    zero_count,
)
from fnn.typing import LearningRate


class AdamState(NamedTuple):
    """count: int32 scalar; m, v: first and second moment estimates, params-shaped."""

    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, as in optax
    m: object
    v: object


def _first_moment(m, g, *, b1):
    """m ← β₁·m + (1 − β₁)·g."""
    return b1 * m + (1.0 - b1) * g.astype(m.dtype)


def _second_moment(v, g, *, b2):
    """v ← β₂·v + (1 − β₂)·g²."""
    g = g.astype(v.dtype)
    return b2 * v + (1.0 - b2) * (g * g)


def _adam_step(m, v, *, lr, bc1, bc2, eps):
    """−lr·m̂ / (√v̂ + ε) with m̂ = m/bc1, v̂ = v/bc2 (bc = 1 when uncorrected)."""
    dt = m.dtype
    m_hat = m / bc1.astype(dt)
    v_hat = v / bc2.astype(dt)
    return -lr.astype(dt) * m_hat / (jnp.sqrt(v_hat) + eps)


def _decoupled_decay(u, p, *, lr, weight_decay):
    """u − lr·λ·θ: AdamW's decay, outside the adaptive scaling."""
    return u - lr.astype(u.dtype) * weight_decay * p.astype(u.dtype)


def _checked(name, b1, b2, eps):
    return check_unit(name, "b1", b1), check_unit(name, "b2", b2), check_nonneg(name, "eps", eps)


def _moments_and_step(grads, state, lr, b1, b2, eps, bias_correction):
    m = jax.tree.map(partial(_first_moment, b1=b1), state.m, grads)
    v = jax.tree.map(partial(_second_moment, b2=b2), state.v, grads)
    t = as_float(state.count + 1)
    one = jnp.ones_like(t)
    bc1 = 1.0 - b1 ** t if bias_correction else one
    bc2 = 1.0 - b2 ** t if bias_correction else one
    updates = jax.tree.map(partial(_adam_step, lr=lr, bc1=bc1, bc2=bc2, eps=eps), m, v)
    return updates, AdamState(state.count + 1, m, v)


def adam(learning_rate: LearningRate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         bias_correction: bool = True) -> Optimizer:
    """Adam (Kingma & Ba, 2015, Algorithm 1), as ``torch.optim.Adam`` and ``optax.adam``.

    m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², θ ← θ − lr·m̂/(√v̂ + ε) with
    m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ). ``bias_correction=False`` gives the uncorrected
    form θ ← θ − lr·m/(√v + ε) used in the course. For coupled L2 (torch's
    ``weight_decay=``) chain ``add_weight_decay`` before it; for decoupled decay use ``adamw``.

    Args:
      learning_rate: a float >= 0 or a schedule ``count -> lr``.
      b1, b2: β₁, β₂ in [0, 1).
      eps: ε >= 0, added to √v̂.
      bias_correction: divide the moments by 1 − βᵗ.
    """
    name = "adam"
    schedule = as_schedule(name, learning_rate)
    b1, b2, eps = _checked(name, b1, b2, eps)
    bias_correction = bool(bias_correction)

    def init(params):
        # Two separate buffers: aliasing m and v would break buffer donation under jit.
        return AdamState(count=zero_count(), m=jax.tree.map(jnp.zeros_like, params),
                         v=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None, *, lr_scale=1.0):
        check_grads(name, state.m, grads)
        lr = current_lr(schedule, state.count, lr_scale)
        return _moments_and_step(grads, state, lr, b1, b2, eps, bias_correction)

    return Optimizer(init, update)


def adamw(learning_rate: LearningRate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 1e-2) -> Optimizer:
    """AdamW (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``: Adam plus θ ← θ − lr·λ·θ.

    The decay uses the parameters before this step and the same (scheduled, scaled)
    learning rate as the Adam step, so it needs ``params`` in ``update``.

    Args:
      learning_rate: a float >= 0 or a schedule ``count -> lr``.
      b1, b2: β₁, β₂ in [0, 1).
      eps: ε >= 0.
      weight_decay: λ >= 0 (torch's default 1e-2; optax's is 1e-4).
    """
    name = "adamw"
    schedule = as_schedule(name, learning_rate)
    b1, b2, eps = _checked(name, b1, b2, eps)
    wd = check_nonneg(name, "weight_decay", weight_decay)

    def init(params):
        # Two separate buffers: aliasing m and v would break buffer donation under jit.
        return AdamState(count=zero_count(), m=jax.tree.map(jnp.zeros_like, params),
                         v=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None, *, lr_scale=1.0):
        if params is None:
            raise ValueError(f"{name}: update needs params for the decoupled weight decay, got None")
        check_grads(name, state.m, grads)
        check_grads(name, params, grads)
        lr = current_lr(schedule, state.count, lr_scale)
        updates, new_state = _moments_and_step(grads, state, lr, b1, b2, eps, True)
        updates = jax.tree.map(partial(_decoupled_decay, lr=lr, weight_decay=wd), updates, params)
        return updates, new_state

    return Optimizer(init, update)
