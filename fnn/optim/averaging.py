"""``with_ema``: any optimizer, plus an exponential moving average of the parameters in its state.

The average is updated inside every step (so inside ``fit``'s compiled epoch), and lives in
the optimizer state, so checkpoints, resumes and data-parallel meshes carry it like any other
state. Read it with ``ema_params(opt_state)``. For a network with BatchNorm, recompute the
running statistics for the averaged weights before using them
(``fnn.train.recompute_batch_stats``), as for SWA.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fnn.core import Optimizer, check_range
from fnn.optim.transforms import _is_transform, _scale_updates, apply_updates
from fnn.typing import PyTree


class EmaState(NamedTuple):
    """The wrapped optimizer's state and the moving average of the parameters."""

    inner: Any
    ema: PyTree


def with_ema(optimizer: Optimizer, decay: float) -> Optimizer:
    """`optimizer`, whose state also tracks ``ema ← decay·ema + (1 − decay)·params`` after each step.

    The average starts at the initial parameters and takes in the parameters after every
    update (``params + updates``), as Keras's ``use_ema`` and timm's ``ModelEmaV2`` do
    (``torch.optim.swa_utils.AveragedModel`` starts from the parameters after the first
    update instead). The updates are the wrapped optimizer's, unchanged: training does not
    depend on `decay`. Its horizon is about ``1 / (1 − decay)`` steps (0.999: a thousand).

    Args:
      optimizer: an Optimizer (a rule or an ``optim.chain``).
      decay: in [0, 1): the weight of the old average.

    State: ``EmaState(inner, ema)``; ``ema_params(state)`` returns ``ema``.
    """
    name = "with_ema"
    if not _is_transform(optimizer):
        raise ValueError(f"{name}: optimizer must be an Optimizer, got {type(optimizer).__name__}")
    decay = check_range(name, "decay", decay, 0.0, 1.0)

    def init(params):
        return EmaState(optimizer.init(params), jax.tree.map(lambda p: jnp.array(p, copy=True), params))

    def update(grads, state, params=None, *, lr_scale=1.0):
        if not isinstance(state, EmaState):
            raise ValueError(f"{name}: expected an EmaState, got {type(state).__name__}")
        if params is None:
            raise ValueError(f"{name}: update needs params (the average is of the parameters)")
        if isinstance(optimizer, Optimizer):
            updates, inner = optimizer.update(grads, state.inner, params, lr_scale=lr_scale)
        else:  # a foreign (optax) optimizer takes no lr_scale: scale its updates, as chain does
            updates, inner = optimizer.update(grads, state.inner, params)
            updates = _scale_updates(updates, lr_scale)
        new = apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: (decay * e + (1 - decay) * p.astype(e.dtype)).astype(e.dtype),
                           state.ema, new)
        return updates, EmaState(inner, ema)

    return Optimizer(init, update)


def ema_params(opt_state: Any) -> PyTree:
    """The moving average of the parameters held by a ``with_ema`` optimizer's state.

    Raises:
      ValueError: the state is not an ``EmaState``.
    """
    if not isinstance(opt_state, EmaState):
        raise ValueError(f"ema_params: expected the state of a with_ema optimizer (EmaState), "
                         f"got {type(opt_state).__name__}")
    return opt_state.ema
