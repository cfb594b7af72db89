"""Rprop, in the iRprop− variant of torch.optim.Rprop."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnn.core import Optimizer, check_range
from fnn.optim._base import as_scale, check_float_arg, check_grads


class RpropState(NamedTuple):
    """step_size: per-coordinate step Δ; prev_grad: last step's (possibly zeroed) gradient.

    Both are params-shaped in the params' dtype. Rprop needs no step counter.
    """

    step_size: object
    prev_grad: object


def _new_step_size(step, g, prev, *, eta_minus, eta_plus, min_step, max_step):
    """Δ ← clip(Δ·η, min, max) with η = η+ if g·g_prev > 0, η− if < 0, else 1."""
    s = jnp.sign(g.astype(step.dtype) * prev)
    factor = jnp.where(s > 0, eta_plus, jnp.where(s < 0, eta_minus, 1.0)).astype(step.dtype)
    return jnp.clip(step * factor, min_step, max_step)


def _gated_grad(g, prev):
    """g, or 0 where its sign flipped: iRprop− skips that coordinate and forgets the sign."""
    g = g.astype(prev.dtype)
    return jnp.where(g * prev < 0, jnp.zeros_like(g), g)


def _rprop_step(g, step, *, scale):
    """−sign(g)·Δ·scale."""
    return -jnp.sign(g) * step * scale.astype(step.dtype)


def rprop(learning_rate: float = 0.01, eta_minus: float = 0.5, eta_plus: float = 1.2,
          min_step: float = 1e-6, max_step: float = 50.0) -> Optimizer:
    """iRprop− (Igel & Hüsken, 2000; Riedmiller & Braun, 1993), exactly as ``torch.optim.Rprop``.

    Per coordinate, with s = sign(g·g_prev): Δ ← clip(Δ·η+, ...) if s > 0; Δ ← clip(Δ·η−, ...)
    and g ← 0 if s < 0; Δ ← clip(Δ, ...) if s = 0. Then θ ← θ − sign(g)·Δ and g_prev ← g.
    Step sizes start at ``learning_rate``, and the first step already moves by Δ₀ (optax's
    ``rprop`` lags one step behind this). Full-batch gradients are assumed: Rprop uses
    only gradient signs, which mini-batch noise scrambles.

    ``lr_scale`` (from reduce-on-plateau) multiplies the applied step only,
    θ ← θ − sign(g)·Δ·lr_scale; the adapted step sizes Δ are stored unscaled, so a scale
    acts at once and does not compound from step to step.

    Args:
      learning_rate: Δ₀ > 0, the initial step size (a float; Rprop takes no schedule).
      eta_minus: η− in (0, 1).
      eta_plus: η+ > 1.
      min_step, max_step: 0 <= min_step <= max_step, the bounds on Δ.
    """
    name = "rprop"
    if callable(learning_rate):
        raise ValueError(f"{name}: learning_rate is the initial step size and must be a float, "
                         f"got the callable {learning_rate!r}")
    lr = check_float_arg(name, "learning_rate", learning_rate)
    if not lr >= 0.0 or lr == float("inf"):
        raise ValueError(f"{name}: learning_rate must be a finite float >= 0, got {learning_rate!r}")
    eta_minus = check_range(name, "eta_minus", eta_minus, 0.0, 1.0, low_inclusive=False)
    eta_plus = check_range(name, "eta_plus", eta_plus, 1.0, float("inf"), low_inclusive=False)
    min_step = check_range(name, "min_step", min_step, 0.0, float("inf"))
    max_step = check_range(name, "max_step", max_step, min_step, float("inf"))

    def init(params):
        return RpropState(step_size=jax.tree.map(partial(jnp.full_like, fill_value=lr), params),
                          prev_grad=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None, *, lr_scale=1.0):
        check_grads(name, state.step_size, grads)
        new_step = partial(_new_step_size, eta_minus=eta_minus, eta_plus=eta_plus,
                           min_step=min_step, max_step=max_step)
        step_size = jax.tree.map(new_step, state.step_size, grads, state.prev_grad)
        gated = jax.tree.map(_gated_grad, grads, state.prev_grad)
        updates = jax.tree.map(partial(_rprop_step, scale=as_scale(lr_scale)), gated, step_size)
        return updates, RpropState(step_size=step_size, prev_grad=gated)

    return Optimizer(init, update)
