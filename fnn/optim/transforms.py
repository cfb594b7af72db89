"""Gradient transforms that compose with the rules: chain, clipping, weight decay, scaling.

A transform is an ``Optimizer`` too: ``update`` maps incoming updates (the gradients, for
the first one in a chain) to outgoing ones. Transforms other than the rules do not apply
the sign; the rule at the end of a chain does.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fnn.core import Optimizer, check_range, check_tree_match
from fnn.optim._base import as_schedule, check_nonneg, current_lr, zero_count
from fnn.typing import LearningRate, PyTree


class EmptyState(NamedTuple):
    """The state of a stateless transform (no leaves)."""


class ClipState(NamedTuple):
    """global_norm: the pre-clip global norm of the last step's updates (0 before the first step)."""

    global_norm: jax.Array


class ScaleState(NamedTuple):
    """count: int32 scalar, the number of updates done so far (the schedule's input)."""

    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, as in optax


def _norm_dtype(tree) -> jnp.dtype:
    """The widest float dtype among the leaves, at least float32 (float16 sums overflow)."""
    dtypes = [jnp.dtype(jnp.float32)] + [jnp.dtype(x.dtype) for x in jax.tree.leaves(tree)]
    return max(dtypes, key=lambda d: d.itemsize)


def _sum_of_squares(x, *, dtype):
    x = x.astype(dtype)
    return jnp.sum(x * x)


def global_norm(tree: PyTree) -> jax.Array:
    """√(Σ over all leaves of Σ x²): the l2 norm of the whole pytree flattened into one vector.

    Computed in the widest float dtype of the leaves (at least float32); 0 for an empty tree.
    """
    dtype = _norm_dtype(tree)
    squares = jax.tree.leaves(jax.tree.map(partial(_sum_of_squares, dtype=dtype), tree))
    return jnp.sqrt(sum(squares, jnp.zeros((), dtype)))


def _add(p, u):
    """p + u in p's dtype."""
    return p + u.astype(p.dtype)


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
    """params + updates, leaf by leaf, keeping each parameter's dtype."""
    check_tree_match("apply_updates", "updates", params, updates)
    return jax.tree.map(_add, params, updates)


def _is_transform(opt) -> bool:
    """fnn's Optimizer, or anything else with optax's protocol: callable ``init`` and ``update``."""
    return callable(getattr(opt, "init", None)) and callable(getattr(opt, "update", None))


def chain(*optimizers: Any) -> Optimizer:
    """Compose transforms left to right: each one's updates feed the next.

    The state is a tuple with one entry per transform (as ``optax.chain``). Any object with
    optax's ``init(params)`` / ``update(updates, state, params)`` protocol may be a member, such
    as ``optax.clip_by_global_norm(1.0)`` or ``optax.adam(1e-3)``.

    ``lr_scale`` (reduce-on-plateau's factor, passed by ``fit``) reaches every rule: when all
    members are fnn's own (``fnn.core.Optimizer``), each is called as
    ``update(updates, state, params, lr_scale=lr_scale)`` and the rules scale their learning
    rate; when any member is foreign (it takes no ``lr_scale``), the members see
    ``lr_scale=1.0`` and the chain multiplies its final updates by ``lr_scale`` (what
    ``optax.chain(..., optax.scale(lr_scale))`` does, and what ``fit`` does for a bare optax
    optimizer). Example: ``chain(clip_by_global_norm(1.0), add_weight_decay(5e-4), momentum(0.1))``.
    """
    name = "chain"
    for i, opt in enumerate(optimizers):
        if not _is_transform(opt):
            raise ValueError(f"{name}: argument {i} must be an Optimizer, got {type(opt).__name__} "
                             f"(an Optimizer, or an object with optax's init and update)")
    own = tuple(isinstance(opt, Optimizer) for opt in optimizers)

    def init(params):
        return tuple(opt.init(params) for opt in optimizers)

    def update(grads, state, params=None, *, lr_scale=1.0):
        if not isinstance(state, tuple) or len(state) != len(optimizers):
            raise ValueError(f"{name}: expected a state tuple of length {len(optimizers)}, "
                             f"got {type(state).__name__}")
        updates, new_state = grads, []
        inner = lr_scale if all(own) else 1.0
        for opt, is_own, s in zip(optimizers, own, state, strict=True):
            if is_own:
                updates, s = opt.update(updates, s, params, lr_scale=inner)
            else:
                updates, s = opt.update(updates, s, params)
            new_state.append(s)
        if not all(own):
            updates = _scale_updates(updates, lr_scale)
        return updates, tuple(new_state)

    return Optimizer(init, update)


def _scale_updates(updates, lr_scale):
    """updates × lr_scale, each leaf in its own dtype; unchanged (same arrays) for a Python 1.0."""
    if isinstance(lr_scale, (int, float)) and lr_scale == 1.0:
        return updates
    return jax.tree.map(lambda u: u * jnp.asarray(lr_scale, u.dtype), updates)


def _clip_value(u, *, max_value):
    return jnp.clip(u, -max_value, max_value)


def clip_by_value(max_value: float) -> Optimizer:
    """Clip every coordinate to [−max_value, max_value] (``torch.nn.utils.clip_grad_value_``)."""
    name = "clip_by_value"
    max_value = check_range(name, "max_value", max_value, 0.0, math.inf, low_inclusive=False)

    def init(params):
        return EmptyState()

    def update(grads, state, params=None, *, lr_scale=1.0):
        if params is not None:
            check_tree_match(name, "grads", params, grads)
        return jax.tree.map(partial(_clip_value, max_value=max_value), grads), state

    return Optimizer(init, update)


def _rescale(u, *, factor):
    return u * factor.astype(u.dtype)


def clip_by_global_norm(max_norm: float, eps: float = 0.0) -> Optimizer:
    """Rescale the updates by min(1, max_norm / (‖u‖ + eps)), ‖u‖ the global norm (Pascanu et al., 2013).

    With the default ``eps=0`` a clipped update has norm exactly ``max_norm``, as
    ``optax.clip_by_global_norm``. ``torch.nn.utils.clip_grad_norm_`` adds 1e-6 to the
    norm: pass ``eps=1e-6`` to match it exactly. The state keeps the pre-clip norm of the
    last step (``ClipState.global_norm``) for logging and diagnostics.

    Args:
      max_norm: > 0.
      eps: >= 0, added to the norm in the denominator.
    """
    name = "clip_by_global_norm"
    max_norm = check_range(name, "max_norm", max_norm, 0.0, math.inf, low_inclusive=False)
    eps = check_nonneg(name, "eps", eps)

    def init(params):
        return ClipState(global_norm=jnp.zeros((), _norm_dtype(params)))

    def update(grads, state, params=None, *, lr_scale=1.0):
        if params is not None:
            check_tree_match(name, "grads", params, grads)
        norm = global_norm(grads)
        # min(1, ...) rather than a branch: norm 0 gives max_norm/0 = inf, and min keeps 1.
        factor = jnp.minimum(1.0, max_norm / (norm + eps))
        updates = jax.tree.map(partial(_rescale, factor=factor), grads)
        return updates, ClipState(global_norm=norm.astype(state.global_norm.dtype))

    return Optimizer(init, update)


def _add_decay(u, p, *, weight_decay):
    """u + λ·θ (the gradient of λ/2·‖θ‖²)."""
    return u + weight_decay * p.astype(u.dtype)


def add_weight_decay(weight_decay: float) -> Optimizer:
    """Coupled L2 regularisation: g ← g + λ·θ, as ``weight_decay=`` on torch's SGD, Adam, RMSprop...

    Put it before the rule in a ``chain`` (after clipping, as torch clips ``p.grad`` before
    ``step`` adds the decay). For Adam this is not AdamW: see ``adamw``. Needs ``params``.
    """
    name = "add_weight_decay"
    wd = check_nonneg(name, "weight_decay", weight_decay)

    def init(params):
        return EmptyState()

    def update(grads, state, params=None, *, lr_scale=1.0):
        if params is None:
            raise ValueError(f"{name}: update needs params, got None")
        check_tree_match(name, "grads", params, grads)
        return jax.tree.map(partial(_add_decay, weight_decay=wd), grads, params), state

    return Optimizer(init, update)


def _scale_step(u, *, lr):
    return -lr.astype(u.dtype) * u


def scale_by_learning_rate(learning_rate: LearningRate) -> Optimizer:
    """u ← −lr·u, with lr = schedule(count)·lr_scale: the last stage of a hand-built chain.

    ``chain(clip_by_value(1.0), scale_by_learning_rate(0.1))`` is clipped SGD.
    """
    name = "scale_by_learning_rate"
    schedule = as_schedule(name, learning_rate)

    def init(params):
        return ScaleState(count=zero_count())

    def update(grads, state, params=None, *, lr_scale=1.0):
        if params is not None:
            check_tree_match(name, "grads", params, grads)
        lr = current_lr(schedule, state.count, lr_scale)
        return jax.tree.map(partial(_scale_step, lr=lr), grads), ScaleState(count=state.count + 1)

    return Optimizer(init, update)
