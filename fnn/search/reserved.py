"""How the searches apply the reserved config keys (``spaces.RESERVED``), one definition shared
by ``fit_objective`` (``runs``) and ``vmap_search`` (``vmap``), so one config gives the same
model either way:

- ``seed``: ``seed_key(config, default_key)``;
- ``init_scale``: ``scale_params(params, scale)``;
- ``weight_decay``: ``optim.add_weight_decay(λ)`` in front of the optimizer, or
  ``traced_weight_decay(λ)`` where λ is traced (one per vmapped configuration).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import jax
import jax.numpy as jnp

from fnn import optim
from fnn.core import Optimizer
from fnn.typing import ArrayLike, Key, PyTree


def _decay_step(u, p, *, weight_decay):
    """u + λ·θ in u's dtype (as optim.add_weight_decay)."""
    return u + weight_decay.astype(u.dtype) * p.astype(u.dtype)


def traced_weight_decay(weight_decay: jax.Array) -> Optimizer:
    """``optim.add_weight_decay`` for a traced λ (one per vmapped configuration)."""
    def init(params):
        return optim.EmptyState()

    def update(grads, state, params=None, *, lr_scale=1.0):
        decay = partial(_decay_step, weight_decay=jnp.asarray(weight_decay))
        return jax.tree.map(decay, grads, params), state

    return Optimizer(init, update)


def _scale_param(p, *, scale):
    return p * jnp.asarray(scale).astype(p.dtype)


def scale_params(params: PyTree, scale: ArrayLike) -> PyTree:
    """Every parameter times `scale` (a float or a traced scalar), in the parameter's dtype."""
    return jax.tree.map(partial(_scale_param, scale=scale), params)


def seed_key(config: Mapping, default_key: Key) -> Key:
    """``jax.random.key(config["seed"])``, or `default_key` when the config has no seed."""
    return jax.random.key(int(config["seed"])) if "seed" in config else default_key
