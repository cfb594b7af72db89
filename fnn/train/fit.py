"""``fit``: a short loop over compiled epochs; its features are callbacks (``fnn.train.callbacks``)."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from fnn import parallel, precision
from fnn.core import Layer, Loss, Optimizer, check_choice, check_positive_int, check_tree_match, fmt_shape
from fnn.losses import penalized
from fnn.optim._base import default_float
from fnn.train import epoch as ep
from fnn.train.callbacks import (
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
from fnn.train.checks import check_data, check_labels
from fnn.train.evaluate import evaluate
from fnn.train.history import History
from fnn.train.locate import locator
from fnn.train.mixing import Mixer
from fnn.train.progress import Progress
from fnn.train.state import TrainState, as_key, copy_tree, init_train_state
from fnn.train.step import resolve_grad_mode, split_objective
from fnn.typing import Data, KeyLike


@parallel.with_mesh_context
def fit(model: Layer, loss: Loss, optimizer: Optimizer, train_data: Data, *, epochs: int, batch_size: int,
        key: KeyLike = None, val_data: Data | None = None, callbacks: Sequence[Callback | Callable] = (),
        fused: bool = True, grad_mode: str = "auto", remainder: str = "drop",
        train_state: TrainState | None = None, mesh: Mesh | None = None,
        **deprecated: Any) -> tuple[TrainState, History]:
    """Train `model` on `train_data` for `epochs` epochs: ``(train_state, history)``.

    Each epoch draws a fresh permutation from the TrainState key and runs N // batch_size
    steps (``remainder="drop"``: the last N % batch_size examples of that epoch's permutation
    sit this epoch out; different ones every epoch). ``remainder="pad"`` instead pads the last
    batch with the permutation's first examples, masked out of loss and accuracy through
    per-example losses (BatchNorm statistics still see the padding).

    ``fused=True`` compiles one epoch as one call (``fnn.train.epoch``): permutation and
    batching on the device, ``lax.scan`` over the steps, buffers donated. ``fused=False`` jits
    the same step body and calls it from Python once per batch (host batches, so the data may
    stay in host memory). For the same key both give bitwise-identical parameters on XLA:CPU.

    After each epoch: validation (``evaluate`` on `val_data`), the History row, then the
    callbacks. Features are callbacks (``fnn.train.callbacks``): ``EarlyStopping``,
    ``ReduceLROnPlateau``, ``Checkpoint``, ``Progress``, ``NanGuard``, ``StepRecorder``,
    ``LearningRateLog``, ``TensorBoard``, ``mixup``/``cutmix`` (``fnn.train.mixing``: each
    training batch mixed inside the compiled step; at most one), or a function
    ``cb(epoch, ts, record) -> stop?``. A
    ``Progress`` bar and a ``NanGuard`` are added unless the list has its own (``Progress(False)``
    silences it).

    Args:
      model: the Layer to train (wrap it with ``fnn.precision.apply_policy`` for mixed precision).
      loss: the Loss of (predictions, y), or a ``losses.penalized(loss, losses.l2(5e-4))``
        objective (the penalty is added to the training objective, not to the reported loss).
      optimizer: an Optimizer; clipping and weight decay go in an ``optim.chain``.
      train_data: ``(x, y)``; x: (N, ...) floating (standardize integer images first),
        y: (N,) integer labels in [0, M) for an (N, M) model output, or float targets.
      epochs: the total number of epochs (a resumed run continues up to this number).
      batch_size: examples per step, <= N.
      key: PRNG key (typed, legacy uint32[2] or an int seed): model init, shuffles, dropout.
      val_data: optional ``(x, y)`` evaluated after each epoch.
      callbacks: see above; copy arrays you keep (``np.asarray``): the next epoch donates buffers.
      fused: one compiled call per epoch (True) or one per step (False).
      grad_mode: "auto" (default: "custom_vjp" on CPU and GPU, "autodiff" elsewhere), "autodiff",
        "manual" or "custom_vjp".
      remainder: "drop" (default) or "pad", see above.
      train_state: start from this TrainState instead of initializing from `key`.
      mesh: a ``jax.sharding.Mesh`` for data-parallel training (``fnn.parallel``): each batch
        split along its "data" axis, everything else replicated; batch_size must be a multiple
        of that axis's size. It changes the compiled epoch (shardings), hence a loop argument.
      deprecated: the 0.1 keywords (``penalty``, ``plateau``, ``early_stopping``, ``checkpoint_dir``,
        ``resume``, ``progress``, ``record_every``, ``debug_nans``, ``learning_rate``,
        ``compute_dtype``, ``policy``, ``batch_axis``, ``eval_batch_size``) still work for one
        release with a DeprecationWarning naming their replacement (CHANGELOG.md).

    Raises:
      ValueError: integer x (convert to float first), NaN/Inf in x, x and y of different
        lengths, labels outside the model's classes, batch_size > N, bad arguments, a
        `train_state` or a checkpoint that does not match the model and optimizer.
      TypeError: an unknown keyword.
    """
    name = "fit"
    model, loss, callbacks, batch_axis, eval_batch_size = _legacy(model, loss, list(callbacks), deprecated)
    loss, penalty = split_objective(name, loss, None)
    epochs = check_positive_int(name, "epochs", epochs)
    batch_size = check_positive_int(name, "batch_size", batch_size)
    dp = None if mesh is None else parallel.data_parallel(mesh, batch_axis, batch_size=batch_size, where=name)
    check_choice(name, "remainder", remainder, ("drop", "pad"))
    x, y = check_data(name, "train_data", train_data)
    n = int(x.shape[0])
    if batch_size > n:
        raise ValueError(f"{name}: batch_size={batch_size} is larger than the number of training examples N={n}")
    if val_data is not None:
        x_val, y_val = check_data(name, "val_data", val_data)
        if tuple(x_val.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(f"{name}: val_data x has examples of shape {fmt_shape(x_val.shape[1:])}, "
                             f"train_data x of shape {fmt_shape(x.shape[1:])}")
    resolve_grad_mode(grad_mode, name=name)  # refuses an unknown mode; "auto" goes on to value_and_grad
    if train_state is None:
        ts = init_train_state(model, optimizer, x.shape[1:], key=as_key(name, key))
    else:
        ts = _checked_state(name, model, optimizer, train_state, x.shape[1:])
    out = jax.eval_shape(lambda p, s, xx: model.apply(p, s, xx)[0], ts.params, ts.state,
                         jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype))
    if hasattr(out, "shape"):  # not a tuple of outputs (a triplet net's), whose loss has no labels
        check_labels(name, "train_data", y, out.shape)
        if val_data is not None:
            check_labels(name, "val_data", y_val, out.shape)

    callbacks = _with_defaults(callbacks)
    recorders = [cb for cb in callbacks if isinstance(cb, StepRecorder)]
    if len(recorders) > 1:
        raise ValueError(f"{name}: at most one StepRecorder, got {len(recorders)}")
    record = ep.Probe(recorders[0].every, recorders[0].probe_for(model)[1]) if recorders else None
    mixers = [cb for cb in callbacks if isinstance(cb, Mixer)]
    if len(mixers) > 1:
        raise ValueError(f"{name}: at most one mixer (mixup or cutmix), got {len(mixers)}")
    steps = n // batch_size if remainder == "drop" else -(-n // batch_size)
    run = Run(model=model, loss=loss, optimizer=optimizer, grad_mode=grad_mode, batch_size=batch_size,
              epochs=epochs, steps_per_epoch=steps, fused=fused, ts=ts, history=History(), callbacks=callbacks,
              train_data=(x, y))
    for cb in callbacks:
        cb.on_fit_start(run)

    # Donation needs one buffer per leaf; optimizer states may share them (m and v: the same zeros).
    run.place = (lambda tree: tree) if dp is None else dp.replicate
    run.ts = run.place(copy_tree(run.ts))
    programs = ep.programs(model, loss, optimizer, penalty, grad_mode, batch_size, remainder, dp, record,
                           mixers[0] if mixers else None)
    t0 = time.perf_counter()
    run_epoch: Callable
    if fused:
        data = run.place((x, y)) if dp is not None else (jnp.asarray(x), jnp.asarray(y))
        run_epoch = programs.epoch.lower(run.ts, *data, _scale(run)).compile()
    else:
        data = (np.asarray(x), np.asarray(y))
        run_epoch = _per_step_epoch(programs, run, data, dp, remainder)
    run.history.compile_seconds = time.perf_counter() - t0
    run.locate = locator(programs, data, batch_size, remainder, lambda: _scale(run))

    try:
        for epoch in range(run.start_epoch + 1, epochs + 1):
            run.epoch, run.backup = epoch, copy_tree(run.ts)
            for cb in callbacks:
                cb.on_epoch_start(run)
            t_epoch = time.perf_counter()
            run.ts, sums, per_step = run_epoch(run.ts, *data, _scale(run))
            run.sums = jax.device_get(jax.block_until_ready(sums))
            seconds = time.perf_counter() - t_epoch
            run.per_step = None if per_step is None else jax.device_get(per_step)
            if bool(run.sums.bad) and _any([cb.on_nonfinite(run) for cb in callbacks]):
                break
            run.record = _record(run, seconds)
            if val_data is not None:
                ev = evaluate(model, loss, run.ts.params, run.ts.state, x_val, y_val, batch_size=eval_batch_size)
                run.record["val_loss"], run.record["val_accuracy"] = _finite_or_none(ev["loss"]), ev["accuracy"]
            monitored = run.record["val_loss"] if val_data is not None else run.record["train_loss"]
            run.monitored = math.inf if monitored is None or not math.isfinite(monitored) else monitored
            run.history.append(run.record)
            if _any([cb.on_epoch_end(run) for cb in callbacks]):
                break
    finally:
        for cb in callbacks:
            cb.on_fit_end(run)
    run.history.stop_reason = run.stop_reason
    return run.ts, run.history


def _any(stops: list) -> bool:
    return any(bool(s) for s in stops)


def _scale(run: Run) -> jax.Array:
    return run.place(jnp.asarray(run.lr_scale, default_float()))


def _finite_or_none(v):
    return None if v is None or not math.isfinite(v) else float(v)


def _record(run: Run, seconds: float) -> dict:
    """The epoch's History row from its sums (validation is added by the loop)."""
    s = run.sums
    count = max(int(s.count), 1)
    return {"epoch": run.epoch, "train_loss": float(s.loss) / count,
            "train_accuracy": None if int(s.correct) < 0 else int(s.correct) / count,
            "val_loss": None, "val_accuracy": None, "lr": None, "lr_scale": run.lr_scale,
            "grad_norm": float(s.grad_norm) / max(int(s.steps), 1), "seconds": seconds,
            "images_per_second": int(s.count) / seconds if seconds > 0 else None}


def _per_step_epoch(programs: ep.Programs, run: Run, data, dp, remainder: str) -> Callable:
    """One epoch of the per-step loop, with the fused epoch's signature: the same shuffle, the
    same scan body called once per host batch."""
    x_host, y_host = data
    n, batch_size = len(x_host), run.batch_size
    mask_dtype = np.dtype(x_host.dtype)
    place = run.place
    xb0 = jax.ShapeDtypeStruct((batch_size,) + x_host.shape[1:], x_host.dtype)
    yb0 = jax.ShapeDtypeStruct((batch_size,) + y_host.shape[1:], y_host.dtype)
    mb0 = jax.ShapeDtypeStruct((batch_size,), mask_dtype)
    step = programs.step.lower((run.ts, place(ep.zero_sums())), (xb0, yb0, mb0), _scale(run)).compile()
    finish = ep.finish_jit.lower(run.ts, place(ep.zero_sums())).compile()
    ep.shuffle(run.ts.key, n, batch_size, remainder, mask_dtype)  # compiled before the first epoch

    def run_epoch(ts, x, y, lr_scale):
        k, idx, mask = ep.shuffle(ts.key, n, batch_size, remainder, mask_dtype)
        idx, mask = np.asarray(idx), np.asarray(mask)
        carry, outs = (ts._replace(key=k), place(ep.zero_sums())), []
        for i in range(len(idx)):
            batch = (x[idx[i]], y[idx[i]], mask[i])
            carry, one = step(carry, batch if dp is None else dp.put_batch(batch), lr_scale)
            outs.append(one)
            for cb in run.callbacks:
                cb.on_step_end(run)
        ts, sums = carry
        per_step = jax.tree.map(lambda *a: jnp.stack(a), *outs) if outs[0] is not None else None
        return ts, finish(ts, sums), per_step

    return run_epoch


def _checked_state(name: str, model: Layer, optimizer: Optimizer, ts: TrainState, input_shape) -> TrainState:
    _, params_like, state_like = jax.eval_shape(lambda k: model.init(k, tuple(input_shape)), jax.random.key(0))
    check_tree_match(name, "train_state.params", params_like, ts.params)
    check_tree_match(name, "train_state.state", state_like, ts.state)
    check_tree_match(name, "train_state.opt_state", jax.eval_shape(optimizer.init, ts.params), ts.opt_state)
    return ts


def _with_defaults(callbacks: Sequence) -> list:
    """Functions wrapped as callbacks, a NanGuard and a Progress bar added unless given, sorted by order."""
    cbs = [cb if isinstance(cb, Callback) or hasattr(cb, "on_epoch_end") else FunctionCallback(cb)
           for cb in callbacks]
    if not any(isinstance(cb, NanGuard) for cb in cbs):
        cbs.append(NanGuard())
    if not any(isinstance(cb, Progress) for cb in cbs):
        cbs.append(Progress())
    return sorted(cbs, key=lambda cb: getattr(cb, "order", 50))


_RENAMED = {
    "penalty": "loss=fnn.losses.penalized(loss, penalty)",
    "plateau": "callbacks=[ReduceLROnPlateau(...)]", "early_stopping": "callbacks=[EarlyStopping(patience)]",
    "checkpoint_dir": "callbacks=[Checkpoint(directory, resume=...)]", "resume": "Checkpoint(directory, resume=...)",
    "progress": "callbacks=[Progress(False)] to silence the bar", "record_every": "callbacks=[StepRecorder(every)]",
    "debug_nans": "callbacks=[NanGuard(locate=True)]", "learning_rate": "callbacks=[LearningRateLog(lr)]",
    "compute_dtype": "model=fnn.precision.apply_policy(model, dtype)",
    "policy": "model=fnn.precision.apply_policy(model, policy)",
    "batch_axis": "a mesh whose batch axis is named 'data'", "eval_batch_size": "the default (1000)",
}


def _legacy(model: Layer, loss, callbacks: list, kw: dict):
    """Translate the 0.1 keywords of fit into callbacks and wrappers, with a DeprecationWarning each."""
    unknown = sorted(set(kw) - set(_RENAMED))
    if unknown:
        raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r}")
    for k in kw:
        warnings.warn(f"fit({k}=...) is deprecated and will be removed in fnn 0.3; use {_RENAMED[k]}",
                      DeprecationWarning, stacklevel=4)
    policy = precision.get_policy(kw.get("policy"), kw.get("compute_dtype"), where="fit")
    if policy is not None:
        model = precision.apply_policy(model, policy)
    if kw.get("penalty") is not None:
        loss = penalized(loss, kw["penalty"])
    if kw.get("plateau") is not None:
        callbacks.append(ReduceLROnPlateau(controller=kw["plateau"]))
    if kw.get("early_stopping") is not None:
        callbacks.append(EarlyStopping(kw["early_stopping"]))
    if kw.get("checkpoint_dir") is not None:
        callbacks.append(Checkpoint(kw["checkpoint_dir"], resume=kw.get("resume", True),
                                    verbose=kw.get("progress", True)))
    if kw.get("record_every") is not None:
        callbacks.append(StepRecorder(kw["record_every"]))
    if kw.get("learning_rate") is not None:
        callbacks.append(LearningRateLog(kw["learning_rate"]))
    if kw.get("debug_nans"):
        callbacks.append(NanGuard(locate=True))
    if "progress" in kw:
        callbacks.append(Progress(kw["progress"]))
    return model, loss, callbacks, kw.get("batch_axis", "data"), kw.get("eval_batch_size", 1000)
