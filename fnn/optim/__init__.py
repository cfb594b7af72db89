"""Optimizers as (init, update) pairs, transforms that compose with them, and schedules.

See DESIGN.md: ``init(params) -> state``; ``update(grads, state, params=None, *, lr_scale=1.0) ->
(updates, state)``; ``apply_updates(params, updates)``. ``learning_rate`` is a float or a
schedule ``count -> lr``; ``lr_scale`` is the multiplier from ``reduce_on_plateau``, and any
other keyword is a ``TypeError``.
"""

from fnn.optim.adagrad import AdagradState, adagrad
from fnn.optim.adam import AdamState, adam, adamw
from fnn.optim.averaging import EmaState, ema_params, with_ema
from fnn.optim.momentum import MomentumState, ema_momentum, momentum
from fnn.optim.nesterov import nesterov
from fnn.optim.rmsprop import RmspropState, rmsprop
from fnn.optim.rprop import RpropState, rprop
from fnn.optim.schedules import (
    PlateauController,
    PlateauState,
    constant_schedule,
    cosine_decay,
    exponential_decay,
    join,
    linear_warmup,
    one_cycle,
    reduce_on_plateau,
    step_decay,
    warmup_cosine_decay,
)
from fnn.optim.schedules import (
    constant as constant,  # deprecated alias of constant_schedule (removed in 0.3)
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
    "apply_updates", "global_norm", "with_ema", "ema_params", "EmaState",
    "constant_schedule", "step_decay", "exponential_decay", "cosine_decay", "linear_warmup", "join",
    "warmup_cosine_decay", "one_cycle",
    "reduce_on_plateau",
    "SgdState", "MomentumState", "AdagradState", "RmspropState", "AdamState", "RpropState",
    "ClipState", "EmptyState", "ScaleState", "PlateauState", "PlateauController",
]
