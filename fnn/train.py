"""Training: TrainState, a pure train_step, evaluate, fit (fused epochs or per-step), History.

The fast path (``fit(..., fused=True)``) compiles one function per epoch: the permutation is
drawn on the device (``fnn.data.epoch_indices``), ``lax.scan`` runs every step (gathering its batch), per-step
metrics are summed inside the scan, and the TrainState buffers are donated, so nothing
returns to Python between steps. ``fused=False`` runs the same step body, jitted on its own,
from a Python loop over host batches: for debugging and for data that does not fit on the
device. For the same key both give the same parameters (see ``fit``).

Typical use::

    model = fnn.models.simple_cnn()
    ts, history = fit(model, losses.softmax_cross_entropy, optim.adam(1e-3), (x_train, y_train),
                      epochs=10, batch_size=128, key=jax.random.key(0), val_data=(x_val, y_val))
    result = evaluate(model, losses.softmax_cross_entropy, ts.params, ts.state, x_test, y_test)

Gradient clipping and weight decay are optimizer transforms, not ``fit`` arguments::

    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.add_weight_decay(5e-4), optim.sgd(0.1))

An L1/L2 penalty added to the loss goes through ``penalty=losses.l2(5e-4)`` instead (with
plain SGD, ``l2(λ)`` and ``add_weight_decay(λ)`` give the same step). ``History.grad_norm`` is
the norm of the gradient before any clipping (penalty included).

Gradients: ``fit``'s default ``grad_mode="auto"`` is "custom_vjp" on XLA:CPU (the layers'
hand-derived backward serves as the VJP rule) and "autodiff" elsewhere. Inside ``lax.scan``
on XLA:CPU, autodiff's convolution weight gradient falls on a slow path (simple_cnn: about
18x slower per epoch measured, 80x for one conv), while the hand-written backward does not;
``train_step`` keeps "autodiff" as its default, the independent reference.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn import checkpoint as ckpt
from fnn import parallel, precision
from fnn.backprop import MODES, value_and_grad
from fnn.core import (
    Layer,
    Loss,
    Optimizer,
    check_choice,
    check_float,
    check_positive_int,
    check_tree_match,
    fmt_shape,
    layer_bwd,
    layer_fwd,
)
from fnn.data import epoch_indices
from fnn.diagnostics import ACTIVATION_FIELDS, activation_probe
from fnn.optim import apply_updates, global_norm
from fnn.optim._base import default_float

GRAD_MODES = ("auto",) + MODES
CHECKPOINT_NAME = "checkpoint.fnn"


# ----------------------------------------------------------------------------------------
# State


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree.

    Attributes:
      params: the model's parameters.
      state: the model's non-trainable state (BatchNorm running statistics; ``()``/``{}`` else).
      opt_state: the optimizer's state.
      key: a typed PRNG key, split at every step (and once per epoch for the shuffle).
      step: int32 scalar, the number of updates done so far.
    """

    params: Any
    state: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array


def _as_key(name: str, key) -> jax.Array:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if not hasattr(key, "dtype"):
        raise ValueError(f"{name}: key must be a PRNG key (jax.random.key(seed)), got {type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)  # a legacy uint32[2] key


def init_train_state(model: Layer, optimizer: Optimizer, input_shape: Sequence[int],
                     key: jax.Array) -> TrainState:
    """Initialize params and state from shapes, the optimizer state from params.

    Args:
      model: the Layer to train.
      optimizer: an Optimizer (``init``/``update``).
      input_shape: the shape of one example (no batch axis), e.g. (28, 28, 1).
      key: a PRNG key; one half initializes the model, the other becomes ``TrainState.key``.
    """
    init_key, key = jax.random.split(_as_key("init_train_state", key))
    _, params, state = model.init(init_key, tuple(int(d) for d in input_shape))
    return TrainState(params, state, optimizer.init(params), key, jnp.zeros((), jnp.int32))


def resolve_grad_mode(grad_mode: str) -> str:
    """"auto" -> "custom_vjp" on XLA:CPU, "autodiff" elsewhere; other modes pass through.

    Why: inside ``lax.scan`` on XLA:CPU, autodiff's convolution weight gradient runs on a slow
    path (about 80x slower for one conv), while the layers' own backward, used as the VJP
    rule, stays fast. The per-step loop gets the same choice so both loops give the same numbers.
    """
    check_choice("fit", "grad_mode", grad_mode, GRAD_MODES)
    if grad_mode != "auto":
        return grad_mode
    return "custom_vjp" if jax.default_backend() == "cpu" else "autodiff"


# ----------------------------------------------------------------------------------------
# Helpers shared by train_step and evaluate


def _with_predictions(model: Layer) -> Layer:
    """The same layer whose new state also carries the predictions: (y, (new_state, y)).

    value_and_grad returns the new state as its auxiliary output, so the step gets the
    predictions (for accuracy) from the forward pass it already runs.
    """
    def apply(params, state, x, *, key=None, train=False):
        y, new_state = model.apply(params, state, x, key=key, train=train)
        return y, (new_state, y)

    def fwd(params, state, x, *, key=None, train=False):
        y, new_state, saved = layer_fwd(model, params, state, x, key=key, train=train)
        return y, (new_state, y), saved

    def bwd(params, state, saved, dy, *, key=None, train=False):
        return layer_bwd(model, params, state, saved, dy, key=key, train=train)

    return Layer(model.name, model.init, apply, model.backward, fwd, bwd)


def _per_example(loss: Loss, pred, target):
    """(N,) per-example losses: the loss of each example as a batch of one."""
    return jax.vmap(lambda p, t: loss.value(p[None], t[None]))(pred, target)


def _masked(loss: Loss) -> Loss:
    """The loss averaged over the examples where mask is 1; target is (y, mask).

    Exact for losses that average over examples (all of fnn's but the triplet loss).
    """
    def value(pred, target):
        y, mask = target
        per = _per_example(loss, pred, y)
        w = mask.astype(per.dtype)
        return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)

    def backward(pred, target):
        y, mask = target
        d = jax.vmap(lambda p, t: loss.backward(p[None], t[None])[0])(pred, y)
        w = mask.astype(d.dtype) / jnp.maximum(jnp.sum(mask.astype(d.dtype)), 1.0)
        return d * w.reshape((-1,) + (1,) * (d.ndim - 1))

    return Loss(f"masked({loss.name})", value, backward)


def _class_labels(pred, y):
    """Integer true classes for (N, M) predictions, or None when this is not classification."""
    if len(pred.shape) != 2:
        return None
    if jnp.issubdtype(y.dtype, jnp.integer) and y.shape == pred.shape[:1]:
        return y
    if y.shape == pred.shape:
        return jnp.argmax(y, axis=-1).astype(jnp.int32)
    return None


def _correct(pred, y, mask):
    """Number of examples (where mask is 1) whose argmax prediction is the true class; -1 if n/a."""
    labels = _class_labels(pred, y)
    if labels is None:
        return jnp.full((), -1, jnp.int32)
    hit = (jnp.argmax(pred, axis=-1).astype(labels.dtype) == labels).astype(jnp.int32)
    if mask is not None:
        hit = hit * (mask > 0).astype(jnp.int32)
    return jnp.sum(hit).astype(jnp.int32)


def _tree_all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return functools.reduce(jnp.logical_and, leaves, jnp.asarray(True))


# ----------------------------------------------------------------------------------------
# One step


def layer_groups(params) -> tuple:
    """The parameter groups that per-layer statistics are taken over: one per top-level layer.

    A ``serial`` model's params are a tuple with one entry per layer (empty for layers
    without parameters); any other params tree is one group. ``fnn.diagnostics`` labels the
    groups with the layers' names.
    """
    return tuple(params) if isinstance(params, (tuple, list)) else (params,)


def _group_norms(tree) -> jax.Array:
    """(G,) the l2 norm of each group of `tree` (0 for a group without arrays)."""
    return jnp.stack([global_norm(g).astype(jnp.float32) for g in layer_groups(tree)])


def train_step(model: Layer, loss: Loss, optimizer: Optimizer, *, grad_mode: str = "autodiff",
               penalty: Loss | None = None, policy=None, layer_stats: bool = False) -> Callable:
    """Build a pure ``step(ts, x, y, mask=None, lr_scale=1.0) -> (ts, metrics)``.

    The gradient comes from ``fnn.backprop.value_and_grad(model, loss, mode, penalty=penalty)``;
    the TrainState key is split, one half for this step (dropout), the other kept for later.
    Jit it yourself (``jax.jit(step, donate_argnums=0)``) or let ``fit`` do it.

    Args (of step):
      ts: a TrainState.
      x: (B, ...) inputs; y: (B,) integer labels or (B, ...) targets.
      mask: optional (B,) weights, 1 for real examples, 0 for padding: the loss and the
        accuracy then count only the masked-in examples (through per-example losses).
      lr_scale: multiplier on the learning rate (reduce-on-plateau's ``state.scale``).

    Metrics: ``loss`` (the data loss, without the penalty), ``accuracy`` (argmax vs labels,
    NaN when predictions are not (B, M)), ``grad_norm`` (global l2 norm of the gradient,
    penalty included), ``finite`` (loss and gradient free of NaN/Inf), ``correct`` and
    ``count`` (examples right and examples counted).

    ``policy``: a ``fnn.precision.Policy`` (or a compute dtype such as ``jnp.bfloat16``) for mixed
    precision: the step runs ``precision.apply_policy(model, policy)``.

    ``layer_stats=True`` adds two (G,) float32 metrics, one entry per parameter group of
    ``layer_groups(params)`` (per top-level layer of a ``serial``; 0 for layers without
    parameters): ``layer_grad_norms`` (‖∂L/∂θ_i‖ of this batch) and ``layer_update_ratios``
    (‖Δθ_i‖ / ‖θ_i‖ of this step's update, NaN where ‖θ_i‖ = 0). ``fit(record_every=N)`` records them.
    """
    mode = resolve_grad_mode(grad_mode)
    policy = precision.get_policy(policy, where="train_step")
    if policy is not None:
        model = precision.apply_policy(model, policy)
    net = _with_predictions(model)
    masked_loss = _masked(loss)
    vg_plain = value_and_grad(net, loss, mode, penalty=penalty)
    vg_masked = value_and_grad(net, masked_loss, mode, penalty=penalty)

    def step(ts: TrainState, x, y, mask=None, lr_scale=1.0):
        key, sub = jax.random.split(ts.key)
        if mask is None:
            (value, (new_state, pred)), grads = vg_plain(ts.params, ts.state, x, y, key=sub, train=True)
            count = jnp.asarray(x.shape[0], jnp.int32)
            data_loss = loss.value(pred, y) if penalty is not None else value
        else:
            (value, (new_state, pred)), grads = vg_masked(ts.params, ts.state, x, (y, mask), key=sub,
                                                          train=True)
            count = jnp.sum(mask > 0).astype(jnp.int32)
            data_loss = masked_loss.value(pred, (y, mask)) if penalty is not None else value
        updates, opt_state = optimizer.update(grads, ts.opt_state, ts.params, lr_scale=lr_scale)
        params = apply_updates(ts.params, updates)
        gnorm = global_norm(grads)
        correct = _correct(pred, y, mask)
        accuracy = jnp.where(correct >= 0, correct.astype(jnp.float32) / jnp.maximum(count, 1).astype(
            jnp.float32), jnp.nan)
        metrics = {"loss": data_loss, "accuracy": accuracy, "grad_norm": gnorm,
                   "finite": jnp.isfinite(value) & jnp.isfinite(gnorm), "correct": correct, "count": count}
        if layer_stats:
            pnorms = _group_norms(ts.params)
            metrics["layer_grad_norms"] = _group_norms(grads)
            metrics["layer_update_ratios"] = jnp.where(pnorms > 0, _group_norms(updates) / pnorms, jnp.nan)
        return TrainState(params, new_state, opt_state, key, ts.step + 1), metrics

    return step


# ----------------------------------------------------------------------------------------
# Evaluation


@functools.lru_cache(maxsize=64)
def _eval_fn(model: Layer, loss: Loss):
    def run(params, state, xb, yb, mb):
        """xb: (S, B, ...), yb: (S, B, ...), mb: (S, B) -> (loss sum, confusion or None)."""
        def body(carry, batch):
            loss_sum, conf = carry
            x, y, m = batch
            pred, _ = model.apply(params, state, x, key=None, train=False)
            per = _per_example(loss, pred, y)
            loss_sum = loss_sum + jnp.sum(per * m.astype(per.dtype)).astype(loss_sum.dtype)
            labels = _class_labels(pred, y)
            if conf is not None and labels is not None:
                guess = jnp.argmax(pred, axis=-1).astype(labels.dtype)
                conf = conf.at[labels, guess].add(m.astype(jnp.int32))
            return (loss_sum, conf), None

        pred_shape = jax.eval_shape(lambda x: model.apply(params, state, x)[0], xb[0]).shape
        y_probe = jax.ShapeDtypeStruct(yb.shape[1:], yb.dtype)
        classify = _class_labels(jax.ShapeDtypeStruct(pred_shape, jnp.float32), y_probe) is not None
        conf0 = jnp.zeros((pred_shape[-1], pred_shape[-1]), jnp.int32) if classify else None
        (loss_sum, conf), _ = jax.lax.scan(body, (jnp.zeros((), default_float()), conf0), (xb, yb, mb))
        return loss_sum, conf

    return jax.jit(run)


def evaluate(model: Layer, loss: Loss, params, state, x, y, *, batch_size: int = 1000) -> dict:
    """Loss, accuracy and confusion matrix over a whole data set, in jitted batches.

    All batches have ``batch_size`` examples: the remainder is padded with the first
    examples and masked out, so every example counts exactly once and nothing recompiles.

    Args:
      model, loss: as given to ``fit``; the model runs with ``train=False``.
      params, state: e.g. ``ts.params, ts.state``.
      x: (N, ...) float inputs; y: (N,) integer labels (or (N, M) one-hot/targets).
      batch_size: examples per compiled batch (capped at N).

    Returns:
      dict with ``loss`` (mean over the N examples), ``accuracy`` (float, or None when not
      classification), ``confusion`` ((M, M) int64 NumPy array, rows = true class, columns =
      predicted class; None when not classification) and ``num_examples``.
    """
    name = "evaluate"
    x, y = _check_xy(name, "data", x, y)
    batch_size = min(check_positive_int(name, "batch_size", batch_size), len(x))
    labels = y
    n = len(x)
    steps = -(-n // batch_size)
    pad = steps * batch_size - n
    x, y = jnp.asarray(x), jnp.asarray(y)
    if pad:
        x = jnp.concatenate([x, x[:pad]])
        y = jnp.concatenate([y, y[:pad]])
    mask = (jnp.arange(steps * batch_size) < n).astype(jnp.float32)
    xb = x.reshape((steps, batch_size) + x.shape[1:])
    yb = y.reshape((steps, batch_size) + y.shape[1:])
    loss_sum, conf = _eval_fn(model, loss)(params, state, xb, yb, mask.reshape(steps, batch_size))
    if conf is not None:  # out-of-range labels would have been dropped, negative ones wrapped around
        _check_labels(name, "data", labels, (None, conf.shape[0]))
    result = {"loss": float(loss_sum) / n, "accuracy": None, "confusion": None, "num_examples": n}
    if conf is not None:
        conf = np.asarray(conf).astype(np.int64)
        result["confusion"] = conf
        result["accuracy"] = float(np.trace(conf)) / n
    return result


# ----------------------------------------------------------------------------------------
# History

FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "lr_scale",
          "grad_norm", "seconds", "images_per_second")


class History:
    """Per-epoch records, one dict per epoch with the keys in ``FIELDS``.

    ``history["val_loss"]`` (or ``history.val_loss``) is the list over epochs; missing
    values (no validation data, no base learning rate given) are None. ``lr`` is the
    learning rate in effect at the epoch's last step (base lr or schedule value × plateau
    scale) when ``fit`` knows it, ``lr_scale`` the plateau scale alone. ``seconds`` times the
    training steps only (not compilation, not validation).

    Attributes besides the records: ``stop_reason`` (None, or why training ended early),
    ``best_epoch`` (with early stopping), ``compile_seconds``, and with
    ``fit(record_every=N)`` the per-step records ``steps``: dicts with ``epoch``, ``step``,
    ``loss``, ``grad_norm``, ``layer_grad_norms`` and ``layer_update_ratios`` (lists aligned
    with ``layer_names``, the layers with parameters) and ``act_mean``, ``act_std``,
    ``dead_fraction``, ``saturated_fraction`` (lists aligned with ``activation_names``, every
    layer; NaN where a statistic does not apply); ``save_steps_jsonl`` writes them.
    """

    def __init__(self, records: Sequence[dict] = ()):
        self.records = [dict(r) for r in records]
        self.stop_reason: str | None = None
        self.best_epoch: int | None = None
        self.compile_seconds: float | None = None
        self.steps: list[dict] = []
        self.layer_names: list[str] = []
        self.activation_names: list[str] = []

    def append(self, record: dict) -> None:
        self.records.append({k: record.get(k) for k in FIELDS})

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, field: str) -> list:
        if field not in FIELDS:
            raise KeyError(f"History: unknown field {field!r}; fields are {list(FIELDS)}")
        return [r.get(field) for r in self.records]

    def __getattr__(self, field: str) -> list:
        if field in FIELDS:
            return self[field]
        raise AttributeError(field)

    def __repr__(self) -> str:
        steps = f", {len(self.steps)} step records" if self.steps else ""
        return f"History({len(self)} epochs{steps}, stop_reason={self.stop_reason!r})"

    def save_jsonl(self, path: str | os.PathLike) -> None:
        """One JSON object per line and per epoch (None for missing values)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for r in self.records:
                f.write(json.dumps(r, allow_nan=False) + "\n")

    def save_steps_jsonl(self, path: str | os.PathLike) -> None:
        """The per-step records, one JSON object per line, each with ``layer_names`` spelled out
        as dicts ``{"layer_grad_norms": {name: value}, ...}`` (NaN/Inf written as null)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        clean = lambda v: v if math.isfinite(v) else None
        with open(path, "w", encoding="utf-8") as f:
            for r in self.steps:
                row = {"epoch": r["epoch"], "step": r["step"], "loss": clean(r["loss"]),
                       "grad_norm": clean(r["grad_norm"])}
                for k in ("layer_grad_norms", "layer_update_ratios"):
                    row[k] = {name: clean(v) for name, v in zip(self.layer_names, r[k], strict=True)}
                for k in ACTIVATION_FIELDS:
                    row[k] = {name: clean(v) for name, v in zip(self.activation_names, r[k], strict=True)}
                f.write(json.dumps(row, allow_nan=False) + "\n")

    @classmethod
    def load_jsonl(cls, path: str | os.PathLike) -> History:
        """Read what ``save_jsonl`` wrote."""
        records = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"History.load_jsonl: {path} line {i} is not JSON: {e}") from None
        return cls(records)

    def as_table(self) -> str:
        """A fixed-width text table, one row per epoch."""
        return "\n".join([table_header()] + [table_row(r) for r in self.records])


def table_header() -> str:
    return (f"{'epoch':>5}  {'train_loss':>10}  {'train_acc':>9}  {'val_loss':>8}  {'val_acc':>7}  "
            f"{'lr':>9}  {'grad_norm':>9}  {'time_s':>7}  {'img/s':>7}")


def table_row(r: dict) -> str:
    def num(v, fmt, width):
        return f"{'-':>{width}}" if v is None else format(v, f">{width}{fmt}")

    lr = r.get("lr") if r.get("lr") is not None else r.get("lr_scale")
    return (f"{r['epoch']:>5}  {num(r.get('train_loss'), '.4f', 10)}  "
            f"{num(r.get('train_accuracy'), '.4f', 9)}  "
            f"{num(r.get('val_loss'), '.4f', 8)}  {num(r.get('val_accuracy'), '.4f', 7)}  "
            f"{num(lr, '.2e', 9)}  {num(r.get('grad_norm'), '.3f', 9)}  {num(r.get('seconds'), '.2f', 7)}  "
            f"{num(r.get('images_per_second'), '.0f', 7)}")


# ----------------------------------------------------------------------------------------
# Progress


class _Progress:
    """A tqdm bar on stderr when tqdm is installed, else one plain line per epoch."""

    def __init__(self, enabled: bool, total: int, unit: str, initial: int = 0):
        self.enabled, self.bar = enabled, None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, initial=initial, unit=unit, desc="fit", file=sys.stderr,
                                dynamic_ncols=True, leave=True)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def epoch_start(self, epoch: int, epochs: int) -> None:
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch}/{epochs}", refresh=False)

    def epoch_done(self, record: dict, epochs: int) -> None:
        if not self.enabled:
            return
        info = {"loss": f"{record['train_loss']:.4f}"}
        if record.get("train_accuracy") is not None:
            info["acc"] = f"{record['train_accuracy']:.4f}"
        if record.get("val_accuracy") is not None:
            info["val_acc"] = f"{record['val_accuracy']:.4f}"
        info["img/s"] = f"{record['images_per_second']:.0f}"
        if self.bar is not None:
            self.bar.set_postfix(info, refresh=True)
        else:
            print(f"epoch {record['epoch']}/{epochs} " + " ".join(f"{k}={v}" for k, v in info.items()),
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def echo(line: str, file=None) -> None:
    """Print a line without breaking a tqdm bar that may be running on stderr."""
    file = sys.stdout if file is None else file
    try:
        from tqdm import tqdm
    except ImportError:
        print(line, file=file, flush=True)
        return
    tqdm.write(line, file=file)
    file.flush()


# ----------------------------------------------------------------------------------------
# Input checks


def _check_xy(name: str, what: str, x, y):
    if not hasattr(x, "shape") or not hasattr(y, "shape"):
        raise ValueError(f"{name}: {what} must be arrays (x, y), "
                         f"got {type(x).__name__} and {type(y).__name__}")
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: {what} x and y must have the same number of examples, "
                         f"got x of shape {fmt_shape(x.shape)} and y of shape {fmt_shape(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: {what} is empty (x of shape {fmt_shape(x.shape)})")
    if np.dtype(x.dtype) == np.uint8 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name}: {what} x has dtype {x.dtype}; convert images to float first, "
                         f"e.g. fnn.data.to_float(x) or Standardizer.fit(x_train).apply(x)")
    check_float(name, f"{what} x", x)
    if not bool(np.all(np.isfinite(np.asarray(x)))):
        raise ValueError(f"{name}: {what} x contains NaN or Inf")
    return x, y


def _check_labels(name: str, what: str, y, out_shape: tuple[int, ...]) -> None:
    """Integer labels must be classes of the model's (N, M) output."""
    if not jnp.issubdtype(y.dtype, jnp.integer):
        return
    if len(out_shape) != 2 or y.ndim != 1:
        raise ValueError(f"{name}: {what} has integer labels of shape {fmt_shape(y.shape)}, which need "
                         f"a model output of shape (N, M); the model gives "
                         f"{fmt_shape((None,) + tuple(out_shape[1:]))}")
    m = out_shape[1]
    lab = np.asarray(y)
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0 or hi >= m:
        bad = int(np.flatnonzero((lab < 0) | (lab >= m))[0])
        raise ValueError(f"{name}: {what} labels must be in [0, {m}) for a model with {m} outputs, "
                         f"got values in [{lo}, {hi}] (first bad label {int(lab[bad])} at index {bad})")


def _check_data(name: str, what: str, data):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{name}: {what} must be a tuple (x, y), got {type(data).__name__}")
    return _check_xy(name, what, *data)


# ----------------------------------------------------------------------------------------
# fit


class _Acc(NamedTuple):
    """Sums over the steps of one epoch, carried through the scan."""

    loss: jax.Array        # Σ loss·count over good steps
    correct: jax.Array     # Σ correct (int32), -1 per step when not classification
    count: jax.Array       # Σ examples counted
    grad_norm: jax.Array   # Σ grad_norm over good steps
    steps: jax.Array       # good steps
    bad: jax.Array         # a non-finite loss or gradient was seen
    first_bad: jax.Array   # index of the first bad step in the epoch, -1 if none
    i: jax.Array           # steps seen
    bad_what: jax.Array    # the first non-finite quantity: 0 none, 1 loss, 2 gradient, 3 parameters


_BAD_WHAT = {1: "loss", 2: "gradient", 3: "parameters (after the update)"}


def _acc0() -> _Acc:
    f, i32 = default_float(), jnp.int32
    return _Acc(jnp.zeros((), f), jnp.zeros((), i32), jnp.zeros((), i32), jnp.zeros((), f),
                jnp.zeros((), i32), jnp.zeros((), jnp.bool_), jnp.full((), -1, i32), jnp.zeros((), i32),
                jnp.zeros((), i32))


STEP_FIELDS = ("loss", "grad_norm", "layer_grad_norms", "layer_update_ratios")
"""What ``fit(record_every=N)`` keeps of a step (``History.steps``): see ``train_step(layer_stats=True)``."""


def _make_body(step: Callable, use_mask: bool, record: bool = False, probe=None, every: int = 1) -> Callable:
    """The scan body: one step, then add its metrics to the sums unless it (or an earlier one) was bad.

    Updates after a bad step are not undone here: ``fit`` rolls back to the state from before
    the epoch, so the sums only have to ignore them. With `record`, the body also returns the
    step's ``STEP_FIELDS`` (the scan stacks them over the epoch's steps); else None. With a
    `probe` (``diagnostics.activation_probe``), global steps 1, every, 2·every, ... also get
    the per-layer activation statistics of the step's forward pass (same batch, parameters
    and dropout key as the step), under ``lax.cond``; other steps get NaN.
    """
    def activations(ts, x):
        n = ts.step + 1
        sub = jax.random.split(jax.random.clone(ts.key))[1]  # the key train_step gives the model
        names, run = probe
        blank = {f: jnp.full((len(names),), jnp.nan, jnp.float32) for f in ACTIVATION_FIELDS}
        return jax.lax.cond((n == 1) | (n % every == 0),
                            lambda: run(ts.params, ts.state, x, sub, True), lambda: blank)

    def body(carry, batch, lr_scale):
        ts, acc = carry
        x, y, mask = batch
        acts = activations(ts, x) if record and probe is not None else {}
        ts, m = step(ts, x, y, mask if use_mask else None, lr_scale)
        ok = m["finite"] & ~acc.bad
        first = ~acc.bad & ~m["finite"]
        what = jnp.where(jnp.isfinite(m["loss"]) & ~jnp.isfinite(m["grad_norm"]), 2, 1)
        f = acc.loss.dtype
        acc = _Acc(
            loss=acc.loss + jnp.where(ok, m["loss"].astype(f) * m["count"].astype(f), 0.0).astype(f),
            correct=acc.correct + jnp.where(ok, m["correct"], 0),
            count=acc.count + jnp.where(ok, m["count"], 0),
            grad_norm=acc.grad_norm + jnp.where(ok, m["grad_norm"].astype(f), 0.0).astype(f),
            steps=acc.steps + ok.astype(jnp.int32),
            bad=acc.bad | ~m["finite"],
            first_bad=jnp.where(first, acc.i, acc.first_bad),
            i=acc.i + 1,
            bad_what=jnp.where(first, what, acc.bad_what).astype(jnp.int32))
        return (ts, acc), ({**{k: m[k] for k in STEP_FIELDS}, **acts} if record else None)

    return body


def _finish(ts: TrainState, acc: _Acc) -> _Acc:
    """A step may leave non-finite parameters behind a finite loss: flag the epoch's last step."""
    params_ok = _tree_all_finite(ts.params)
    first = ~acc.bad & ~params_ok
    return acc._replace(bad=acc.bad | ~params_ok, first_bad=jnp.where(first, acc.i - 1, acc.first_bad),
                        bad_what=jnp.where(first, 3, acc.bad_what).astype(jnp.int32))


class _Programs(NamedTuple):
    epoch: Callable   # (ts, x, y, lr_scale) -> (ts, acc, steps): one fused epoch, ts donated
    step: Callable    # ((ts, acc), (x, y, mask), lr_scale) -> ((ts, acc), step): one step, carry donated
    raw_step: Callable  # train_step itself, not jitted (debug_nans re-runs a bad step eagerly)


@functools.lru_cache(maxsize=32)
def _programs(model, loss, optimizer, penalty, mode, batch_size, remainder, dp=None,
              record_every: int | None = None) -> _Programs:
    """The jitted programs of ``fit``; `steps`/`step` in their results: the per-step STEP_FIELDS
    and ACTIVATION_FIELDS (stacked over the epoch) with `record_every`, else None."""
    record = record_every is not None
    step = train_step(model, loss, optimizer, grad_mode=mode, penalty=penalty, layer_stats=record)
    probe = activation_probe(model) if record else None
    # Data parallel (dp: a fnn.parallel.DataParallel): batches split over the mesh, the rest replicated.
    body = _make_body(step if dp is None else dp.wrap_step(step), use_mask=remainder == "pad", record=record,
                      probe=probe, every=record_every or 1)

    def epoch_fn(ts, x, y, lr_scale):
        k, perm_key = jax.random.split(ts.key)
        mask_dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
        idx, mask = epoch_indices(perm_key, x.shape[0], batch_size, remainder=remainder, mask_dtype=mask_dtype)
        if dp is not None:
            idx, mask = dp.constrain_stacked((idx, mask))  # (steps, B): each device gathers its own rows

        def gather_body(carry, batch):
            # One batch gathered per step: no shuffled copy of the whole training set.
            i, m = batch
            return body(carry, (jnp.take(x, i, axis=0), jnp.take(y, i, axis=0), m), lr_scale)

        (ts, acc), per_step = jax.lax.scan(gather_body, (ts._replace(key=k), _acc0()), (idx, mask))
        return ts, _finish(ts, acc), per_step

    def step_fn(carry, batch, lr_scale):
        return body(carry, batch, lr_scale)

    if dp is not None:
        return _Programs(dp.jit_epoch(epoch_fn), dp.jit_carry_step(step_fn), step)
    return _Programs(jax.jit(epoch_fn, donate_argnums=0), jax.jit(step_fn, donate_argnums=0), step)


@functools.partial(jax.jit, static_argnums=1)
def _shuffle(key, n):
    """The per-step loop's shuffle: the same split and permutation as the fused epoch's."""
    k, perm_key = jax.random.split(key)
    return k, jax.random.permutation(perm_key, n)


_finish_jit = jax.jit(_finish)


def _copy_tree(tree):
    """A device copy with fresh buffers (the originals will be donated to the next epoch)."""
    def copy(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(jnp.array(jax.random.key_data(x), copy=True),
                                            impl=jax.random.key_impl(x))
        return jnp.array(x, copy=True)
    return jax.tree.map(copy, tree)


def _locate_nonfinite(step: Callable, ts: TrainState, batch, use_mask: bool, lr_scale) -> str:
    """Re-run one step eagerly under jax.debug_nans/debug_infs: the first primitive making a NaN/Inf."""
    x, y, mask = (jnp.asarray(a) for a in batch)
    try:
        with jax.debug_nans(True), jax.debug_infs(True):
            jax.block_until_ready(step(ts, x, y, mask if use_mask else None, lr_scale))
    except FloatingPointError as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if f"{os.sep}jax{os.sep}" not in f.filename and f"{os.sep}jaxlib{os.sep}" not in f.filename]
        where = f" at {frames[-1].filename}:{frames[-1].lineno} ({frames[-1].name})" if frames else ""
        return f"jax.debug_nans: {str(e).splitlines()[0]}{where}"
    return "jax.debug_nans: re-running the step eagerly produced no NaN/Inf"


def _lr(learning_rate, step_count: int, scale: float):
    if learning_rate is None:
        return None
    if callable(learning_rate):
        base = float(learning_rate(jnp.asarray(max(step_count - 1, 0), jnp.int32)))
    else:
        base = float(learning_rate)
    return base * scale


def _group_labels(names: list[str], params) -> tuple[list[str], list[int]]:
    """(labels, indices) of the groups of ``layer_groups(params)`` that hold parameters, labelled
    with the layer names of ``diagnostics.activation_probe`` (one per top-level layer)."""
    groups = layer_groups(params)
    keep = [i for i, g in enumerate(groups) if jax.tree.leaves(g)]
    if len(names) == len(groups):
        return [names[i] for i in keep], keep
    return [f"[{i}]" for i in keep], keep


def _step_records(stacked: dict, epoch: int, step0: int, every: int, last: int | None,
                  keep: list[int]) -> list[dict]:
    """History.steps rows of one epoch: global steps 1 and every `every`-th (up to local `last`);
    per-layer values of the groups `keep` (those with parameters)."""
    out = []
    n = len(stacked["loss"]) if last is None else last + 1
    for j in range(n):
        step = step0 + j + 1
        if step != 1 and step % every:
            continue
        row = {"epoch": epoch, "step": step, "loss": float(stacked["loss"][j]),
               "grad_norm": float(stacked["grad_norm"][j]),
               "layer_grad_norms": [float(stacked["layer_grad_norms"][j][i]) for i in keep],
               "layer_update_ratios": [float(stacked["layer_update_ratios"][j][i]) for i in keep]}
        for f in ACTIVATION_FIELDS:
            row[f] = [float(v) for v in stacked[f][j]]
        out.append(row)
    return out


def _none_if_nan(v):
    return None if v is None or not math.isfinite(v) else float(v)


@parallel.with_mesh_context
def fit(model: Layer, loss: Loss, optimizer: Optimizer, train_data, *, epochs: int, batch_size: int,
        key: jax.Array, val_data=None, fused: bool = True, grad_mode: str = "auto",
        penalty: Loss | None = None, plateau=None, early_stopping: int | None = None,
        callbacks: Sequence[Callable] = (), progress: bool = True,
        checkpoint_dir: str | os.PathLike | None = None, resume: bool = True, remainder: str = "drop",
        learning_rate=None, train_state: TrainState | None = None, eval_batch_size: int = 1000,
        debug_nans: bool = False, mesh=None, batch_axis: str = "data", compute_dtype=None,
        policy=None, record_every: int | None = None) -> tuple[TrainState, History]:
    """Train `model` on `train_data` for `epochs` epochs.

    Each epoch draws a fresh permutation from the TrainState key and runs N // batch_size
    steps (``remainder="drop"``: the last N % batch_size examples of that epoch's permutation
    sit this epoch out; different ones every epoch). ``remainder="pad"`` instead pads the last
    batch with the permutation's first examples, masked out of loss and accuracy through
    per-example losses (BatchNorm statistics still see the padding).

    ``fused=True`` compiles one epoch as one call: permutation and batching on the device,
    ``lax.scan`` over the steps, buffers donated. ``fused=False`` jits the same step body and
    calls it from Python once per batch (host batches, so the data may stay in host memory).
    For the same key both give bitwise-identical parameters on XLA:CPU (tests/test_train.py
    checks it); on other backends XLA may fuse the two programs differently, which can change
    the last bits.

    After each epoch: validation (``evaluate`` on `val_data`), reduce-on-plateau, early
    stopping, the History row, callbacks, then the checkpoint. The monitored metric of
    plateau and early stopping is the validation loss, or the training loss without
    `val_data`.

    If the loss or a gradient becomes NaN/Inf (or the parameters do), training stops after
    that epoch with a RuntimeWarning naming the epoch, the step and the first non-finite
    quantity (loss, gradient or parameters), ``History.stop_reason`` says the same, and the
    returned TrainState is the one from the end of the previous epoch (the last good one;
    the bad epoch is not recorded in History, and the checkpoint on disk is that epoch's).

    Args:
      model: the Layer to train.
      loss: the Loss of (predictions, y).
      optimizer: an Optimizer; clipping and weight decay go in an ``optim.chain``.
      train_data: ``(x, y)``; x: (N, ...) floating (standardize integer images first),
        y: (N,) integer labels in [0, M) for an (N, M) model output, or float targets.
      epochs: the total number of epochs (a resumed run continues up to this number).
      batch_size: examples per step, <= N.
      key: PRNG key (typed, legacy uint32[2] or an int seed): model init, shuffles, dropout.
      val_data: optional ``(x, y)`` evaluated after each epoch.
      fused: one compiled call per epoch (True) or one per step (False).
      grad_mode: "auto" (default: "custom_vjp" on XLA:CPU, "autodiff" elsewhere, see
        ``resolve_grad_mode``), "autodiff", "manual" or "custom_vjp".
      penalty: optional regularizer added to the loss, e.g. ``losses.l2(5e-4)``.
      plateau: optional ``optim.reduce_on_plateau(...)`` controller, stepped once per epoch;
        its scale multiplies the learning rate through ``update(..., lr_scale=scale)``.
      early_stopping: patience in epochs: stop when the monitored loss has not improved for
        that many epochs, and return the TrainState of the best epoch (also when all epochs
        ran). ``History.best_epoch`` says which one.
      callbacks: functions ``cb(epoch, train_state, record) -> bool | None`` called after
        each epoch (1-based `epoch`, `record` the History row); a truthy return stops
        training. Copy arrays you keep (``np.asarray``): the next epoch donates the buffers.
      progress: a tqdm bar on stderr (per epoch when fused, per step otherwise).
      checkpoint_dir: if given, ``checkpoint.fnn`` there is rewritten after every epoch
        (TrainState, plateau and early-stopping state, History in the metadata).
      resume: with `checkpoint_dir`, continue from the checkpoint found there (True); the
        result equals an uninterrupted run. False starts afresh and overwrites it.
      remainder: "drop" (default) or "pad", see above.
      learning_rate: the optimizer's base learning rate (float or schedule), used only to
        log ``History.lr``; None logs the plateau scale alone (``lr`` stays None).
      train_state: start from this TrainState instead of initializing from `key`.
      eval_batch_size: batch size of the validation pass.
      debug_nans: look for NaN/Inf after every step rather than every epoch: runs the
        per-step loop (``fused`` is ignored) and stops at the first bad step, then re-runs
        that step eagerly under ``jax.debug_nans``/``jax.debug_infs`` and adds the first
        primitive that produced a NaN/Inf (and its source line) to the warning and
        ``stop_reason``. The returned state is the same as without it. Slower: for debugging.
        (Turning ``jax_debug_nans`` on around a fused ``fit`` instead raises an internal error
        from the compiled epoch and loses the state.)
      mesh: a ``jax.sharding.Mesh`` for data-parallel training (``fnn.parallel``): each batch
        split along `batch_axis`, everything else replicated; batch_size must be a multiple of
        that axis's size. The returned TrainState is replicated over the mesh.
      batch_axis: the mesh axis that splits batches.
      compute_dtype: mixed precision (``fnn.precision``): e.g. ``jnp.bfloat16`` computes the
        forward and backward passes in bfloat16, with float32 parameters, optimizer state and loss.
      policy: a ``fnn.precision.Policy`` instead of `compute_dtype`.
      record_every: record per-step statistics into ``History.steps`` at global step 1 and
        every `record_every`-th step: the batch loss, the gradient norm, per top-level layer
        with parameters the gradient norm and the update/parameter norm ratio (see
        ``train_step(layer_stats=True)``; ``History.layer_names`` labels them), and per
        top-level layer the output's mean and std, dead ReLU and saturated sigmoid/tanh
        fractions (``diagnostics.activation_probe``, an extra forward pass on those steps
        only; ``History.activation_names``). They are computed inside the fused epoch (its
        scan returns every step's values, and the host keeps every N-th), so vanishing or
        exploding gradients and dying units show within an epoch.
        ``fnn.plot.plot_grad_norms(history, path)`` draws them and
        ``fnn.diagnostics.detect_exploding(history)`` reads them. A bad epoch's steps are
        kept up to the first non-finite one. Not stored in checkpoints.

    Returns:
      ``(train_state, history)``.

    Raises:
      ValueError: integer x (convert to float first), NaN/Inf in x, x and y of different
        lengths, labels outside the model's classes, batch_size > N, bad arguments, a
        `train_state` or a checkpoint that does not match the model and optimizer.
    """
    name = "fit"
    epochs = check_positive_int(name, "epochs", epochs)
    batch_size = check_positive_int(name, "batch_size", batch_size)
    policy = precision.get_policy(policy, compute_dtype, where=name)
    if policy is not None:
        model = precision.apply_policy(model, policy)
    dp = None if mesh is None else parallel.data_parallel(mesh, batch_axis, batch_size=batch_size, where=name)
    place = (lambda tree: tree) if dp is None else dp.replicate
    check_choice(name, "remainder", remainder, ("drop", "pad"))
    x, y = _check_data(name, "train_data", train_data)
    n = int(x.shape[0])
    if batch_size > n:
        raise ValueError(f"{name}: batch_size={batch_size} is larger than the number of training "
                         f"examples N={n}")
    if val_data is not None:
        x_val, y_val = _check_data(name, "val_data", val_data)
        if tuple(x_val.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(f"{name}: val_data x has examples of shape {fmt_shape(x_val.shape[1:])}, "
                             f"train_data x of shape {fmt_shape(x.shape[1:])}")
    if early_stopping is not None:
        early_stopping = check_positive_int(name, "early_stopping", early_stopping)
    if record_every is not None:
        record_every = check_positive_int(name, "record_every", record_every)
    mode = resolve_grad_mode(grad_mode)
    key = _as_key(name, key)

    ts = train_state if train_state is not None else init_train_state(model, optimizer, x.shape[1:], key)
    if train_state is not None:
        _, params_like, state_like = jax.eval_shape(lambda k: model.init(k, tuple(x.shape[1:])), key)
        check_tree_match(name, "train_state.params", params_like, ts.params)
        check_tree_match(name, "train_state.state", state_like, ts.state)
        opt_like = jax.eval_shape(optimizer.init, ts.params)
        check_tree_match(name, "train_state.opt_state", opt_like, ts.opt_state)
    fused = fused and not debug_nans
    out_shape = jax.eval_shape(lambda p, s, xx: model.apply(p, s, xx)[0], ts.params, ts.state,
                               jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype)).shape
    _check_labels(name, "train_data", y, out_shape)
    if val_data is not None:
        _check_labels(name, "val_data", y_val, out_shape)

    # Loop state beyond the TrainState.
    history = History()
    activation_names = activation_probe(model)[0] if record_every is not None else []
    recorded = _group_labels(activation_names, ts.params) if record_every is not None else ([], [])
    history.layer_names, history.activation_names = recorded[0], activation_names
    plateau_state = plateau.init() if plateau is not None else None
    best_ts, best_metric, best_epoch, wait = None, math.inf, None, 0
    start_epoch = 0
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None

    def bundle(ts_, plateau_state_, best_ts_):
        # Before any improvement there is no best state yet: ts stands in (best_epoch is None).
        best_ = (best_ts_ if best_ts_ is not None else ts_) if early_stopping is not None else None
        return {"train_state": ts_, "plateau": plateau_state_, "best": best_}

    if path is not None and resume and path.exists():
        meta = ckpt.read_metadata(path)
        restored = ckpt.restore(path, bundle(ts, plateau_state, ts))
        ts, plateau_state = restored["train_state"], restored["plateau"]
        history = History(meta.get("history", []))
        history.layer_names, history.activation_names = recorded[0], activation_names
        start_epoch = int(meta["epoch"])
        best_epoch, wait = meta.get("best_epoch"), int(meta.get("wait", 0))
        best_ts = restored["best"] if best_epoch is not None else None
        best_metric = math.inf if meta.get("best_metric") is None else float(meta["best_metric"])
        if progress:
            print(f"fit: resuming from {path} after epoch {start_epoch}", file=sys.stderr)

    # Donation needs one buffer per leaf; optimizer states may share them (m and v: the same zeros).
    ts = place(_copy_tree(ts))

    # Compile (the jitted programs are cached: another fit with the same model, loss,
    # optimizer and settings reuses them).
    scale0 = place(jnp.ones((), default_float()))
    steps = n // batch_size if remainder == "drop" else -(-n // batch_size)
    t0 = time.perf_counter()
    programs = _programs(model, loss, optimizer, penalty, mode, batch_size, remainder, dp, record_every)
    if fused:
        x_dev, y_dev = place((x, y)) if dp is not None else (jnp.asarray(x), jnp.asarray(y))
        run_epoch = programs.epoch.lower(ts, x_dev, y_dev, scale0).compile()
    else:
        x_host, y_host = np.asarray(x), np.asarray(y)
        mask_dtype = x_host.dtype
        xb0 = jax.ShapeDtypeStruct((batch_size,) + x_host.shape[1:], x_host.dtype)
        yb0 = jax.ShapeDtypeStruct((batch_size,) + y_host.shape[1:], y_host.dtype)
        mb0 = jax.ShapeDtypeStruct((batch_size,), mask_dtype)
        run_step = programs.step.lower((ts, place(_acc0())), (xb0, yb0, mb0), scale0).compile()
        shuffle = _shuffle.lower(ts.key, n).compile()
        finish = _finish_jit.lower(ts, place(_acc0())).compile()
    history.compile_seconds = time.perf_counter() - t0

    bar = _Progress(progress, total=epochs if fused else epochs * steps, unit="epoch" if fused else "step",
                    initial=start_epoch if fused else start_epoch * steps)
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            scale = float(plateau_state.scale) if plateau_state is not None else 1.0
            scale_arr = (scale0 if plateau_state is None
                         else place(plateau_state.scale.astype(default_float())))
            backup = _copy_tree(ts)
            located = None
            bar.epoch_start(epoch, epochs)
            t_epoch = time.perf_counter()
            per_step = []
            if fused:
                ts, acc, stacked = run_epoch(ts, x_dev, y_dev, scale_arr)
                bar.update(1)
            else:
                k, perm = shuffle(ts.key)
                ts = ts._replace(key=k)
                perm = np.asarray(perm)
                idx = perm[: steps * batch_size] if remainder == "drop" else \
                    np.concatenate([perm, perm[: steps * batch_size - n]])
                idx = idx.reshape(steps, batch_size)
                mask_all = (np.arange(steps * batch_size) < n).astype(mask_dtype).reshape(steps, batch_size)
                carry = (ts, place(_acc0()))
                for i in range(steps):
                    batch = (x_host[idx[i]], y_host[idx[i]], mask_all[i])
                    before = _copy_tree(carry[0]) if debug_nans else None
                    carry, one = run_step(carry, batch if dp is None else dp.put_batch(batch), scale_arr)
                    if record_every is not None:
                        per_step.append(one)
                    bar.update(1)
                    if debug_nans and bool(finish(*carry).bad):
                        located = _locate_nonfinite(programs.raw_step, before, batch, remainder == "pad",
                                                    scale_arr)
                        break
                ts, acc = carry
                acc = finish(ts, acc)
                stacked = jax.tree.map(lambda *a: jnp.stack(a), *per_step) if record_every is not None else None
            acc = jax.device_get(jax.block_until_ready(acc))
            seconds = time.perf_counter() - t_epoch
            if record_every is not None:
                last = int(acc.first_bad) if bool(acc.bad) else None
                history.steps.extend(_step_records(jax.device_get(stacked), epoch, int(backup.step),
                                                   record_every, last, recorded[1]))

            if bool(acc.bad):
                global_step = int(backup.step) + int(acc.first_bad) + 1
                msg = (f"fit: non-finite {_BAD_WHAT.get(int(acc.bad_what), 'value')} (NaN/Inf) at epoch "
                       f"{epoch}, step {int(acc.first_bad) + 1} of {steps} (global step {global_step}); "
                       f"stopped, and kept the state from the end of epoch {epoch - 1} (the last good one). "
                       f"Lower the learning rate, clip gradients, or check the data"
                       + (f". {located or ''}" if debug_nans else
                          " (fit(..., debug_nans=True) finds the operation)") + ".")
                ts = backup
                history.stop_reason = msg
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
                break
            del backup

            count = max(int(acc.count), 1)
            record = {
                "epoch": epoch,
                "train_loss": float(acc.loss) / count,
                "train_accuracy": None if int(acc.correct) < 0 else int(acc.correct) / count,
                "val_loss": None, "val_accuracy": None,
                "lr": _lr(learning_rate, int(ts.step), scale), "lr_scale": scale,
                "grad_norm": float(acc.grad_norm) / max(int(acc.steps), 1),
                "seconds": seconds,
                "images_per_second": int(acc.count) / seconds if seconds > 0 else None,
            }
            if val_data is not None:
                ev = evaluate(model, loss, ts.params, ts.state, x_val, y_val, batch_size=eval_batch_size)
                record["val_loss"], record["val_accuracy"] = _none_if_nan(ev["loss"]), ev["accuracy"]
            monitored = record["val_loss"] if val_data is not None else record["train_loss"]
            monitored = math.inf if monitored is None or not math.isfinite(monitored) else monitored

            if plateau is not None:
                plateau_state = plateau.step(plateau_state, jnp.asarray(monitored, default_float()))
            stop = None
            if early_stopping is not None:
                if monitored < best_metric:
                    best_metric, best_epoch, wait = monitored, epoch, 0
                    best_ts = _copy_tree(ts)
                else:
                    wait += 1
                    if wait >= early_stopping:
                        stop = (f"early stopping: the monitored loss did not improve for {wait} epochs "
                                f"after epoch {best_epoch}; restored the state of epoch {best_epoch}")
            history.append(record)
            history.best_epoch = best_epoch
            bar.epoch_done(record, epochs)
            for cb in callbacks:
                if cb(epoch, ts, dict(record)):
                    stop = stop or f"stopped by callback {getattr(cb, '__name__', cb)!r} after epoch {epoch}"
            if path is not None:
                meta = {"epoch": epoch, "history": history.records, "best_epoch": best_epoch, "wait": wait,
                        "best_metric": None if math.isinf(best_metric) else best_metric,
                        "model": model.name, "grad_mode": mode, "batch_size": batch_size}
                ckpt.save(path, bundle(ts, plateau_state, best_ts), metadata=meta)
            if stop:
                history.stop_reason = stop
                break
    finally:
        bar.close()

    if early_stopping is not None and best_ts is not None:
        ts = best_ts
        history.best_epoch = best_epoch
    return ts, history
