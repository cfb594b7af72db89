"""Training: a TrainState, a pure train_step, the ONE compiled epoch, the ONE evaluator, History,
callbacks, and ``fit``, a short loop over them.

Typical use::

    model = fnn.models.simple_cnn()
    ts, history = fit(model, losses.softmax_cross_entropy, optim.adam(1e-3), (x_train, y_train),
                      epochs=10, batch_size=128, key=jax.random.key(0), val_data=(x_val, y_val),
                      callbacks=[EarlyStopping(3), ReduceLROnPlateau(0.5, patience=1)])
    result = evaluate(model, losses.softmax_cross_entropy, ts.params, ts.state, x_test, y_test)

Gradient clipping and weight decay are optimizer transforms, not ``fit`` arguments::

    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.add_weight_decay(5e-4), optim.sgd(0.1))

An L1/L2 penalty joins the loss as ``losses.penalized(loss, losses.l2(5e-4))`` instead (with
plain SGD, ``l2(λ)`` and ``add_weight_decay(λ)`` give the same step). ``History.grad_norm`` is
the norm of the gradient before any clipping (penalty included).

Modules: ``state`` (TrainState), ``step`` (train_step, masked losses, metrics), ``epoch`` (the
compiled epoch and the per-step program), ``evaluate``, ``history``, ``callbacks``, ``probe``
(per-layer activation statistics), ``locate`` (finding the first NaN), ``progress``, ``fit``,
``tensorboard`` (TensorBoard event files, written without TensorFlow), ``mixing`` (mixup and
CutMix, ``fit(..., callbacks=[mixup(0.2, num_classes=10)])``), ``averaging`` (stochastic weight
averaging, ``SWA``, and ``recompute_batch_stats``).
"""

from fnn.train.averaging import SWA, recompute_batch_stats
from fnn.train.callbacks import (
    CHECKPOINT_NAME,
    Callback,
    Checkpoint,
    EarlyStopping,
    FunctionCallback,
    LearningRateLog,
    NanGuard,
    ReduceLROnPlateau,
    Run,
    StepRecorder,
)
from fnn.train.epoch import EpochSums, Probe, epoch_fn
from fnn.train.evaluate import evaluate, evaluation_sums, padded_batches
from fnn.train.fit import fit
from fnn.train.history import ACTIVATION_FIELDS, FIELDS, STEP_FIELDS, History, table_header, table_row
from fnn.train.mixing import Mixer, cutmix, mixup
from fnn.train.progress import Progress, echo
from fnn.train.state import TrainState, as_key, init_train_state
from fnn.train.step import GRAD_MODES, layer_groups, masked, resolve_grad_mode, train_step
from fnn.train.tensorboard import EventWriter, TensorBoard

__all__ = [
    "TrainState", "init_train_state", "as_key", "train_step", "resolve_grad_mode", "layer_groups", "masked",
    "GRAD_MODES", "epoch_fn", "EpochSums", "Probe", "evaluate", "evaluation_sums", "padded_batches",
    "History", "FIELDS", "STEP_FIELDS", "ACTIVATION_FIELDS", "table_header", "table_row", "fit",
    "Callback", "Run", "FunctionCallback", "NanGuard", "ReduceLROnPlateau", "EarlyStopping", "LearningRateLog",
    "StepRecorder", "Progress", "Checkpoint", "CHECKPOINT_NAME", "echo", "TensorBoard", "EventWriter",
    "Mixer", "mixup", "cutmix", "SWA", "recompute_batch_stats",
]
