"""The features of ``fit`` as callbacks, in the vocabulary of Keras and PyTorch Lightning.

A callback sees one ``Run`` (the loop's shared, mutable state: the TrainState, the History,
the epoch, and the controls ``lr_scale`` and ``stop_reason``) at these events:

- ``on_fit_start(run)``: before the first epoch (``Checkpoint`` resumes here);
- ``on_epoch_start(run)``, ``on_step_end(run)`` (the per-step loop only);
- ``on_nonfinite(run) -> stop?``: the epoch produced NaN/Inf (``run.sums`` says where);
  ``NanGuard`` rolls back to ``run.backup`` and stops;
- ``on_epoch_end(run) -> stop?``: after the epoch's History row (``run.record``) was appended;
  ``ReduceLROnPlateau`` sets ``run.lr_scale`` for the next epoch, ``EarlyStopping`` keeps
  the best state, ``Checkpoint`` saves;
- ``on_fit_end(run)``: ``EarlyStopping`` restores the best state.

Callbacks run in the order of their ``order`` attribute (then as given): NanGuard 0,
StepRecorder 5, LearningRateLog 8, ReduceLROnPlateau 10, EarlyStopping 20, Progress 30, the
user's 50, TensorBoard 85 (``fnn.train.tensorboard``), Checkpoint 90 (it saves what the others
decided). A callback with state that must
survive a resume implements ``checkpoint_state(run) -> (arrays, json)`` and
``restore_state(run, arrays, json)``; one that may meet a checkpoint saved without it (``SWA``)
also implements ``restore_absent(run, epoch)``, which raises if it cannot start from there.
A plain function ``cb(epoch, ts, record) -> stop?`` is accepted too and runs as a user callback.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from fnn import checkpoint as ckpt
from fnn.core import Layer, Loss, Optimizer
from fnn.optim import reduce_on_plateau
from fnn.optim._base import default_float
from fnn.train.epoch import BAD_WHAT
from fnn.train.history import STEP_FIELDS, History
from fnn.train.state import TrainState, copy_tree
from fnn.typing import LearningRate, PyTree

CHECKPOINT_NAME = "checkpoint.fnn"


class Run:
    """What one ``fit`` call and its callbacks share. Callbacks read it and may change
    ``ts``, ``history``, ``lr_scale``, ``stop_reason`` and ``start_epoch``.

    The settings of the call are attributes too: ``model``, ``loss``, ``optimizer``,
    ``grad_mode``, ``batch_size``, ``epochs``, ``steps_per_epoch``, ``fused`` and ``callbacks``.

    Attributes:
      ts: the current TrainState (its buffers are donated to the next epoch: copy what you keep).
      history: the History being written.
      epoch: the epoch just run (1-based; 0 before training); start_epoch: the last epoch
        already done before this call (a resumed run).
      lr_scale: the learning-rate scale of the next epoch (a control).
      stop_reason: why training stops, once a callback decided so.
      record: the epoch's History row; monitored: its validation loss, or its training loss
        without validation data (inf when missing or not finite).
      sums: the epoch's ``EpochSums`` on the host; per_step: the stacked per-step outputs
        (with a StepRecorder) on the host; backup: the TrainState from before the epoch.
      place: puts a pytree where the loop keeps its state (replicated over a mesh).
      train_data: the ``(x, y)`` arrays given to ``fit`` (``SWA`` recomputes BatchNorm statistics on x).
      locate(ts, first_bad) -> str: re-runs the epoch from `ts` up to its first bad step and
        that step eagerly under ``jax.debug_nans``; names the first primitive making NaN/Inf.
    """

    # The loop's state; `record`, `sums`, `per_step`, `backup` and `locate` are None until fit
    # has compiled and run the first epoch, hence Any.
    ts: TrainState
    history: History
    epoch: int
    start_epoch: int
    lr_scale: float
    stop_reason: str | None
    record: Any
    monitored: float
    sums: Any
    per_step: Any
    backup: Any
    place: Callable[[PyTree], PyTree]
    locate: Any
    train_data: Any
    # The settings of the fit call.
    model: Layer
    loss: Loss
    optimizer: Optimizer
    grad_mode: str
    batch_size: int
    epochs: int
    steps_per_epoch: int
    fused: bool
    callbacks: list[Callback]

    def __init__(self, **fields: Any):
        self.epoch, self.start_epoch, self.lr_scale, self.stop_reason = 0, 0, 1.0, None
        self.record, self.monitored, self.sums, self.per_step, self.backup = None, math.inf, None, None, None
        self.place = lambda tree: tree
        self.locate, self.train_data = None, None
        self.__dict__.update(fields)


class Callback:
    """Base class: every event is a no-op. Subclass and override what you need."""

    order = 50

    def on_fit_start(self, run: Run) -> None: ...

    def on_epoch_start(self, run: Run) -> None: ...

    def on_step_end(self, run: Run) -> None: ...

    def on_nonfinite(self, run: Run) -> bool | None: ...

    def on_epoch_end(self, run: Run) -> bool | None: ...

    def on_fit_end(self, run: Run) -> None: ...


class FunctionCallback(Callback):
    """A function ``cb(epoch, train_state, record) -> stop?`` as a callback (a truthy return stops)."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def on_epoch_end(self, run: Run) -> bool | None:
        if self.fn(run.epoch, run.ts, dict(run.record)):
            if run.stop_reason is None:
                who = getattr(self.fn, "__name__", self.fn)
                run.stop_reason = f"stopped by callback {who!r} after epoch {run.epoch}"
            return True
        return None


class NanGuard(Callback):
    """On NaN/Inf in an epoch: warn, return to the state from before it, and stop.

    The warning and ``History.stop_reason`` name the epoch, the step and the first non-finite
    quantity (loss, gradient or parameters). With ``locate=True`` the epoch is re-run up to
    its first bad step, which then runs eagerly under ``jax.debug_nans``/``jax.debug_infs``:
    the message also names the first primitive that produced a NaN/Inf and its source line.
    """

    order = 0

    def __init__(self, locate: bool = False):
        self.locate = bool(locate)

    def on_nonfinite(self, run: Run) -> bool:
        sums = run.sums
        global_step = int(run.backup.step) + int(sums.first_bad) + 1
        msg = (f"fit: non-finite {BAD_WHAT.get(int(sums.bad_what), 'value')} (NaN/Inf) at epoch "
               f"{run.epoch}, step {int(sums.first_bad) + 1} of {run.steps_per_epoch} (global step "
               f"{global_step}); stopped, and kept the state from the end of epoch {run.epoch - 1} (the last "
               f"good one). Lower the learning rate, clip gradients, or check the data")
        if self.locate:
            msg += f". {run.locate(run.backup, int(sums.first_bad))}."
        else:
            msg += " (fit(..., callbacks=[NanGuard(locate=True)]) finds the operation)."
        run.ts = run.backup
        run.stop_reason = msg
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
        return True


class ReduceLROnPlateau(Callback):
    """Scale the learning rate by ``factor`` when the monitored loss stops improving.

    The monitored loss is the validation loss (the training loss without validation data);
    bad epochs are counted as ``torch.optim.lr_scheduler.ReduceLROnPlateau`` does (see
    ``fnn.optim.reduce_on_plateau``, whose arguments these are). The scale reaches the
    optimizer as ``update(..., lr_scale=scale)`` from the next epoch on.
    """

    order = 10

    def __init__(self, factor: float = 0.1, patience: int = 10, *, threshold: float = 1e-4,
                 threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0, eps: float = 1e-8,
                 base_lr: float = 1.0, controller: Any = None):
        self.controller = controller if controller is not None else reduce_on_plateau(
            factor, patience, threshold, threshold_mode, cooldown, min_lr, "min", eps, base_lr)
        self.state: Any = None

    def on_fit_start(self, run: Run) -> None:
        self.state = self.controller.init()
        run.lr_scale = float(self.state.scale)

    def on_epoch_end(self, run: Run) -> None:
        self.state = self.controller.step(self.state, jnp.asarray(run.monitored, default_float()))
        run.lr_scale = float(self.state.scale)

    def checkpoint_state(self, run: Run) -> tuple[Any, dict]:
        return self.state, {}

    def restore_state(self, run: Run, arrays: Any, meta: dict) -> None:
        self.state = arrays
        run.lr_scale = float(self.state.scale)


class EarlyStopping(Callback):
    """Stop when the monitored loss has not improved for `patience` epochs, and end with the
    TrainState of the best epoch (also when all epochs ran). ``History.best_epoch`` says which."""

    order = 20
    best_ts: Any
    best_epoch: int | None

    def __init__(self, patience: int):
        from fnn.core import check_positive_int

        self.patience = check_positive_int("EarlyStopping", "patience", patience)
        self.on_fit_start(None)

    def on_fit_start(self, run: Run | None) -> None:
        self.best_ts, self.best_metric, self.best_epoch, self.wait = None, math.inf, None, 0

    def on_epoch_end(self, run: Run) -> bool | None:
        if run.monitored < self.best_metric:
            self.best_metric, self.best_epoch, self.wait = run.monitored, run.epoch, 0
            self.best_ts = copy_tree(run.ts)
        else:
            self.wait += 1
        run.history.best_epoch = self.best_epoch
        if self.wait >= self.patience:
            run.stop_reason = run.stop_reason or (
                f"early stopping: the monitored loss did not improve for {self.wait} epochs after epoch "
                f"{self.best_epoch}; restored the state of epoch {self.best_epoch}")
            return True
        return None

    def on_fit_end(self, run: Run) -> None:
        if self.best_ts is not None:
            run.ts = self.best_ts
            run.history.best_epoch = self.best_epoch

    def checkpoint_state(self, run: Run) -> tuple[Any, dict]:
        # Before any improvement there is no best state yet: the current one stands in.
        meta = {"best_epoch": self.best_epoch, "wait": self.wait,
                "best_metric": None if math.isinf(self.best_metric) else self.best_metric}
        return (self.best_ts if self.best_ts is not None else run.ts), meta

    def restore_state(self, run: Run, arrays: Any, meta: dict) -> None:
        self.best_epoch, self.wait = meta.get("best_epoch"), int(meta.get("wait", 0))
        self.best_ts = arrays if self.best_epoch is not None else None
        self.best_metric = math.inf if meta.get("best_metric") is None else float(meta["best_metric"])


class LearningRateLog(Callback):
    """Fill ``History.lr``: the base learning rate (a float or a schedule of the step count)
    times the plateau scale in effect during the epoch."""

    order = 8

    def __init__(self, learning_rate: LearningRate):
        self.learning_rate = learning_rate

    def on_epoch_end(self, run: Run) -> None:
        lr = self.learning_rate
        count = int(run.ts.step)
        base = float(lr(jnp.asarray(max(count - 1, 0), jnp.int32))) if callable(lr) else float(lr)
        run.record["lr"] = base * run.record["lr_scale"]
        run.history.records[-1]["lr"] = run.record["lr"]


class StepRecorder(Callback):
    """Record per-step statistics into ``History.steps`` at global step 1 and every `every`-th.

    Computed inside the fused epoch (its scan returns every step's values, the host keeps
    every N-th): the batch loss, the gradient norm, per top-level layer with parameters the
    gradient norm and the update/parameter norm ratio (``train_step(layer_stats=True)``;
    ``History.layer_names`` labels them), and the fields of `probe`: by default
    ``fnn.train.probe.activation_probe``, per top-level layer the output's mean and std, dead
    ReLU and saturated sigmoid/tanh fractions (an extra forward pass on recorded steps only;
    ``History.activation_names``); ``probe=None`` is that default. To record the gradient
    statistics alone, pass ``probe=lambda model: ((), None)`` (no fields, no extra pass).
    A bad epoch's steps are kept up to the first non-finite one. Not stored in checkpoints.
    """

    order = 5
    _recorded: int | None

    def __init__(self, every: int, probe: Callable | None = None):
        from fnn.core import check_positive_int
        from fnn.train.probe import activation_probe

        self.every = check_positive_int("StepRecorder", "every", every)
        self.make_probe = activation_probe if probe is None else probe

    def probe_for(self, model: Layer) -> tuple[tuple[str, ...], Callable]:
        """``(names, run)`` of the probe for `model` (what the compiled epoch evaluates)."""
        return self.make_probe(model)

    def on_fit_start(self, run: Run) -> None:
        self._recorded = None
        names, _ = self.probe_for(run.model)
        groups = run.ts.params if isinstance(run.ts.params, (tuple, list)) else (run.ts.params,)
        self.keep = [i for i, g in enumerate(groups) if jax.tree.leaves(g)]
        labels = names if len(names) == len(groups) else [f"[{i}]" for i in range(len(groups))]
        run.history.layer_names = [labels[i] for i in self.keep]
        run.history.activation_names = list(names)

    def _record(self, run: Run, last: int | None) -> None:
        if self._recorded == run.epoch:
            return
        self._recorded = run.epoch
        stacked, step0 = run.per_step, int(run.backup.step)
        n = len(stacked["loss"]) if last is None else last + 1
        extra = [k for k in stacked if k not in STEP_FIELDS]
        for j in range(n):
            step = step0 + j + 1
            if step != 1 and step % self.every:
                continue
            row = {"epoch": run.epoch, "step": step, "loss": float(stacked["loss"][j]),
                   "grad_norm": float(stacked["grad_norm"][j]),
                   "layer_grad_norms": [float(stacked["layer_grad_norms"][j][i]) for i in self.keep],
                   "layer_update_ratios": [float(stacked["layer_update_ratios"][j][i]) for i in self.keep]}
            for f in extra:
                row[f] = [float(v) for v in stacked[f][j]]
            run.history.steps.append(row)

    def on_nonfinite(self, run: Run) -> None:
        self._record(run, int(run.sums.first_bad))

    def on_epoch_end(self, run: Run) -> None:
        self._record(run, None)


class Checkpoint(Callback):
    """Rewrite ``directory/checkpoint.fnn`` after every epoch; with ``resume=True``, continue from it.

    The file holds the TrainState, the state of every callback that has one (plateau scale,
    early-stopping best state) and, as metadata, the epoch and the History. A resumed run
    equals an uninterrupted one, bit for bit. ``resume=False`` starts afresh and overwrites it.
    ``metadata`` (a JSON-serializable dict, e.g. ``{"input_shape": [28, 28, 1]}``) is stored
    with it, so ``fnn.checkpoint.load_params`` can read the model's parameters out of the file.
    """

    order = 90

    def __init__(self, directory: str | os.PathLike, resume: bool = True, verbose: bool = True,
                 metadata: dict | None = None):
        self.path = Path(directory) / CHECKPOINT_NAME
        self.resume, self.verbose = bool(resume), bool(verbose)
        self.metadata = dict(metadata or {})

    @staticmethod
    def _stateful(run: Run) -> dict:
        counts: dict[str, int] = {}
        out = {}
        for cb in run.callbacks:
            if hasattr(cb, "checkpoint_state"):
                name = type(cb).__name__
                counts[name] = counts.get(name, -1) + 1
                out[name if not counts[name] else f"{name}{counts[name]}"] = cb
        return out

    def on_fit_start(self, run: Run) -> None:
        if not (self.resume and self.path.exists()):
            return
        stateful = self._stateful(run)
        meta = ckpt.read_metadata(self.path)
        saved = meta.get("callbacks", {})
        extra = sorted(set(saved) - set(stateful))
        if extra:
            raise ValueError(f"fit: {self.path} holds the state of callbacks {extra} that this run does not "
                             f"have; resume with the same callbacks, or start afresh (resume=False)")
        for k, cb in stateful.items():  # saved by a run without this callback: it decides whether that is fine
            if k not in saved and hasattr(cb, "restore_absent"):
                cb.restore_absent(run, int(meta["epoch"]))
        stateful = {k: cb for k, cb in stateful.items() if k in saved or not hasattr(cb, "restore_absent")}
        like = {"train_state": run.ts, "callbacks": {k: cb.checkpoint_state(run)[0] for k, cb in stateful.items()}}
        restored = ckpt.restore(self.path, like)
        run.ts = restored["train_state"]
        for k, cb in stateful.items():
            cb.restore_state(run, restored["callbacks"][k], saved.get(k, {}))
        history = History(meta.get("history", []))
        history.layer_names, history.activation_names = run.history.layer_names, run.history.activation_names
        run.history, run.start_epoch = history, int(meta["epoch"])
        if self.verbose:
            print(f"fit: resuming from {self.path} after epoch {run.start_epoch}", file=sys.stderr)

    def on_epoch_end(self, run: Run) -> None:
        stateful = self._stateful(run)
        states = {k: cb.checkpoint_state(run) for k, cb in stateful.items()}
        # The caller's metadata may describe the model (fnn train: how to rebuild it); the rest is resume's.
        meta = {"model": run.model.name, **self.metadata, "epoch": run.epoch, "history": run.history.records,
                "callbacks": {k: m for k, (_, m) in states.items()},
                "grad_mode": run.grad_mode, "batch_size": run.batch_size}
        ckpt.save(self.path, {"train_state": run.ts, "callbacks": {k: a for k, (a, _) in states.items()}},
                  metadata=meta)

