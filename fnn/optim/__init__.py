"""Optimizers as (init, update) pairs, transforms that compose with them, and schedules.

See DESIGN.md: ``init(params) -> state``; ``update(grads, state, params=None, **extra) ->
(updates, state)``; ``apply_updates(params, updates)``. ``learning_rate`` is a float or a
schedule ``count -> lr``; ``update`` takes ``lr_scale=`` from ``reduce_on_plateau``.
"""

from fnn.optim.adagrad import AdagradState, adagrad
from fnn.optim.adam import AdamState, adam, adamw
from fnn.optim.momentum import MomentumState, ema_momentum, momentum
from fnn.optim.nesterov import nesterov
from fnn.optim.rmsprop import RmspropState, rmsprop
from fnn.optim.rprop import RpropState, rprop
from fnn.optim.schedules import (
    PlateauController,
    PlateauState,
    constant,
    cosine_decay,
    exponential_decay,
    join,
    linear_warmup,
    reduce_on_plateau,
    step_decay,
)
from fnn.optim.sgd import SgdState, sgd
from fnn.optim.transforms import (
    ClipState,
    EmptyState,
    ScaleState,
    add_weight_decay,
    apply_updates,
    chain,
    clip_by_global_norm,
    clip_by_value,
    global_norm,
    scale_by_learning_rate,
)

__all__ = [
    "sgd", "momentum", "ema_momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "rprop",
    "chain", "clip_by_value", "clip_by_global_norm", "add_weight_decay", "scale_by_learning_rate",
    "apply_updates", "global_norm",
    "constant", "step_decay", "exponential_decay", "cosine_decay", "linear_warmup", "join",
    "reduce_on_plateau",
    "SgdState", "MomentumState", "AdagradState", "RmspropState", "AdamState", "RpropState",
    "ClipState", "EmptyState", "ScaleState", "PlateauState", "PlateauController",
]
