"""``vmap_search``: K configurations of one model trained at once, and its ``VmapResult``.

Built on fit's own programs, not a copy of them: ``fnn.train.init_train_state``, the fused
epoch ``fnn.train.epoch_fn`` of ``fnn.train.train_step``, and the evaluator
``fnn.train.evaluation_sums`` over ``fnn.train.padded_batches``; vmapped over the configs
(``vectorize=True``) or run once per config.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn import optim
from fnn._compile import jit
from fnn.backprop import resolve_grad_mode
from fnn.core import Layer, Loss, Optimizer, check_choice, check_positive_int, fmt_shape
from fnn.search.reserved import scale_params, traced_weight_decay
from fnn.search.spaces import to_python
from fnn.search.trials import SearchResult, Trial, sort_trials
from fnn.train import TrainState, epoch_fn, evaluation_sums, init_train_state, padded_batches, train_step
from fnn.train.checks import check_data
from fnn.typing import Data


def _check_configs(configs) -> tuple[list[dict], list[str]]:
    name = "vmap_search"
    if isinstance(configs, Mapping) or not isinstance(configs, Sequence) or not configs:
        raise ValueError(f"{name}: configs must be a non-empty list of dicts, got {type(configs).__name__}")
    configs = [dict(c) for c in configs]
    keys = list(configs[0])
    for i, c in enumerate(configs):
        if set(c) != set(keys):
            raise ValueError(f"{name}: every config needs the same keys; configs[0] has {sorted(keys)}, "
                             f"configs[{i}] has {sorted(c)}")
        for k, v in c.items():
            if isinstance(v, bool) or not isinstance(to_python(v), (int, float)) or not math.isfinite(float(v)):
                raise ValueError(f"{name}: configs[{i}][{k!r}] = {v!r}: only finite numbers can vary "
                                 f"across vmapped configs (shapes, dropout rates and strings cannot; use "
                                 f"grid_search or random_search for those)")
        if "seed" in c and float(c["seed"]) != int(c["seed"]):
            raise ValueError(f"{name}: configs[{i}]['seed'] must be an int, got {c['seed']!r}")
    return configs, keys


class _Programs(NamedTuple):
    init: Callable
    epoch: jax.stages.Wrapped
    evaluate: Callable | None


def _programs(model, loss, make_optimizer, input_shape, batch_size, mode, vectorize, validate) -> _Programs:
    """fit's programs for one config: ``init_train_state``, ``train.epoch_fn`` of ``train_step``,
    ``train.evaluation_sums``; vmapped over the configs when `vectorize`."""
    def make_opt(hp):
        opt = make_optimizer(dict(hp))
        if "weight_decay" in hp:
            opt = optim.chain(traced_weight_decay(hp["weight_decay"]), opt)
        return opt

    def init_one(key, hp):
        """fnn.train.init_train_state, then init_scale."""
        opt = make_opt(hp)
        ts = init_train_state(model, opt, input_shape, key=key)
        if "init_scale" in hp:
            params = scale_params(ts.params, hp["init_scale"])
            ts = ts._replace(params=params, opt_state=opt.init(params))
        return ts

    def epoch_one(ts, hp, x, y, lr_scale):
        """fit's fused epoch with this config's optimizer -> (ts, mean training loss, NaN if it diverged)."""
        step = train_step(model, loss, make_opt(hp), grad_mode=mode)
        ts, sums, _ = epoch_fn(step, batch_size, "drop")(ts, x, y, lr_scale)
        mean = sums.loss / jnp.maximum(sums.count, 1).astype(sums.loss.dtype)
        return ts, jnp.where(sums.bad, jnp.nan, mean)

    def eval_one(params, state, xb, yb, mb):
        loss_sum, conf = evaluation_sums(model, loss, params, state, xb, yb, mb)
        return loss_sum, (jnp.trace(conf) if conf is not None else jnp.zeros((), jnp.int32))

    evaluate = None
    if validate:
        evaluate = jit(jax.vmap(eval_one, in_axes=(0, 0, None, None, None)) if vectorize else eval_one)
    if vectorize:
        return _Programs(jit(jax.vmap(init_one)),
                         jit(jax.vmap(epoch_one, in_axes=(0, 0, None, None, None)), donate_argnums=0),
                         evaluate)
    return _Programs(jit(init_one), jit(epoch_one, donate_argnums=0), evaluate)


@dataclass
class VmapResult(SearchResult):
    """A ``SearchResult`` (``refit``: the best config's trained TrainState) plus everything trained.

    Attributes:
      configs: the configs, in the order given.
      train_state: the K TrainStates stacked on a leading axis (config i: ``train_state_of(i)``).
      history: dict of (K, epochs) NumPy arrays: ``train_loss`` (mean over the epoch's steps,
        NaN once a config diverged) and, with val_data, ``val_loss`` and ``val_accuracy``.
      seconds: training time (all epochs, all configs; not compilation, not validation).
      compile_seconds: time to compile the init and epoch programs (and run the init); the
        evaluation program compiles at its first call.
    """

    configs: list = field(default_factory=list)
    train_state: Any = None
    history: dict = field(default_factory=dict)
    seconds: float = 0.0
    compile_seconds: float = 0.0

    def train_state_of(self, i: int) -> TrainState:
        """The TrainState of config i (a slice of ``train_state``)."""
        return jax.tree.map(lambda a: a[i], self.train_state)


def vmap_search(model: Layer, loss: Loss, make_optimizer: Callable[[dict], Optimizer], train_data: Data,
                configs: Sequence[Mapping[str, float]], *, epochs: int, batch_size: int,
                val_data: Data | None = None,
                metric: str | None = None, grad_mode: str = "auto", vectorize: bool | None = None,
                eval_batch_size: int = 1000, jsonl: str | os.PathLike | None = None,
                progress: bool = True) -> VmapResult:
    """Train K configs of one model at once: one jitted epoch, vmapped over K TrainStates.

    Each config trains exactly as ``fit(model, loss, opt, train_data, epochs, batch_size,
    key=jax.random.key(config["seed"]))`` would with ``opt = make_optimizer(config)``
    (plus the reserved keys, see the ``fnn.search`` docstring) and ``remainder="drop"``: same init,
    same shuffles, same steps; the parameters agree to rounding. What differs between configs
    must be a number: learning rate and other optimizer numbers (optimizers accept a traced
    learning rate), ``weight_decay``, ``init_scale``, ``seed``. Dropout rates, widths and
    batch sizes cannot vary. A config that diverges gets NaN losses and does not disturb the
    others (no early stop, no rollback, unlike ``fit``).

    Args:
      model: the Layer to train.
      loss: the Loss.
      make_optimizer: ``config -> Optimizer``, called inside the vmapped function with the
        config's numbers as traced scalars (``seed`` left out), e.g.
        ``lambda c: optim.adam(c["learning_rate"])``.
      train_data: ``(x, y)`` on the device: x (N, ...) float, y (N,) labels or targets.
      configs: K dicts with the same keys and number values, e.g. ``sample(space, 16, key=key)``.
        Without a ``seed`` key every config uses seed 0.
      epochs, batch_size: as for ``fit`` (N // batch_size steps per epoch).
      val_data: optional ``(x, y)``, evaluated for all configs after each epoch.
      metric: "val_loss" (default with val_data), "val_accuracy" or "train_loss" (default
        without), from the last epoch.
      grad_mode: as for ``fit`` ("auto": custom_vjp on CPU and GPU, autodiff elsewhere).
      vectorize: True: one vmapped program for all configs. False: the same program
        without vmap, run for one config after another (less memory). None (default):
        True on GPU/TPU, False on XLA:CPU, where the vmapped program was measured slower
        (K=16: 0.67x for an MLP, 0.17x for simple_cnn on 2 cores; XLA:CPU runs batched
        matmuls and grouped convolutions on slower paths than K separate ones).
      eval_batch_size: validation batch size.
      jsonl: write the trials here as JSON lines (best first).
      progress: one line per epoch on stderr.

    Returns:
      A ``VmapResult``: trials sorted by score, ``refit`` (the best TrainState), the stacked
      TrainStates, per-epoch histories and timings.
    """
    name = "vmap_search"
    epochs = check_positive_int(name, "epochs", epochs)
    batch_size = check_positive_int(name, "batch_size", batch_size)
    configs, keys = _check_configs(configs)
    resolve_grad_mode(grad_mode, name=name)  # refuses an unknown mode; "auto" goes on to train_step
    if vectorize is None:
        vectorize = jax.default_backend() != "cpu"
    x, y = _train_data(name, train_data, batch_size)
    metric, score_mode = _metric(name, metric, val_data)
    eval_data = _eval_data(name, val_data, x.shape[1:], eval_batch_size)

    progs = _programs(model, loss, make_optimizer, tuple(int(d) for d in x.shape[1:]), batch_size, grad_mode,
                      vectorize, eval_data is not None)
    hp, rng = _hyperparameters(configs, keys)
    scale = jnp.ones((), _float())
    t0 = time.perf_counter()
    if vectorize:
        states, hps = [progs.init(rng, hp)], [hp]
    else:
        hps = [{k: v[i] for k, v in hp.items()} for i in range(len(configs))]
        states = [progs.init(rng[i], hps[i]) for i in range(len(configs))]
    run_epoch = progs.epoch.lower(states[0], hps[0], x, y, scale).compile()
    compile_seconds = time.perf_counter() - t0

    history = {"train_loss": np.full((len(configs), epochs), np.nan)}
    seconds = 0.0
    for epoch in range(epochs):
        t_epoch = time.perf_counter()
        losses_ = []
        for j in range(len(states)):  # one vmapped call, or one call per config
            states[j], lj = run_epoch(states[j], hps[j], x, y, scale)
            losses_.append(lj)
        history["train_loss"][:, epoch] = _stacked(jax.block_until_ready(losses_))
        seconds += time.perf_counter() - t_epoch
        if eval_data is not None:
            _validate(progs.evaluate, states, eval_data, history, epoch, epochs)
        if progress:
            _report(name, history, metric, score_mode, epoch, epochs, time.perf_counter() - t_epoch)

    ts_all = states[0] if vectorize else jax.tree.map(lambda *a: jnp.stack(a), *states)
    scores = history[metric][:, -1]
    trials = [Trial(i, c, float(scores[i]), {k: float(v[i, -1]) for k, v in history.items()},
                    seconds / len(configs)) for i, c in enumerate(configs)]
    result = VmapResult(sort_trials(trials, score_mode), score_mode, None, configs, ts_all, history,
                        seconds, compile_seconds)
    result.refit = result.train_state_of(result.best.index)
    if jsonl is not None:
        result.save_jsonl(jsonl)
    return result


def _float():
    """float64 when x64 is enabled, else float32 (as ``fnn.optim``'s hyperparameters)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _train_data(name: str, train_data, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Checked ``(x, y)`` as device arrays, with at least `batch_size` examples."""
    x, y = check_data(name, "train_data", train_data)
    if batch_size > len(x):
        raise ValueError(f"{name}: batch_size={batch_size} is larger than the number of training "
                         f"examples N={len(x)}")
    return jnp.asarray(x), jnp.asarray(y)


def _metric(name: str, metric: str | None, val_data) -> tuple[str, str]:
    """(metric, "min" or "max"): the default metric is val_loss with val_data, else train_loss."""
    metric = metric or ("val_loss" if val_data is not None else "train_loss")
    check_choice(name, "metric", metric, ("val_loss", "val_accuracy", "train_loss"))
    if metric.startswith("val") and val_data is None:
        raise ValueError(f"{name}: metric={metric!r} needs val_data")
    return metric, "max" if metric.endswith("accuracy") else "min"


def _hyperparameters(configs: list[dict], keys: list[str]) -> tuple[dict, jax.Array]:
    """(hp, rng): every key but ``seed`` as a (K,) float vector, and the K PRNG keys (seed 0 without one)."""
    names = [k for k in keys if k != "seed"]
    hp = {k: jnp.asarray([float(c[k]) for c in configs], _float()) for k in names}
    rng = jax.vmap(jax.random.key)(jnp.asarray([int(c.get("seed", 0)) for c in configs], jnp.uint32))
    return hp, rng


def _report(name: str, history: dict, metric: str, score_mode: str, epoch: int, epochs: int,
            seconds: float) -> None:
    """One progress line on stderr: the best `metric` over the configs after `epoch`."""
    col = history[metric][:, epoch]
    best = (np.nanmin(col) if score_mode == "min" else np.nanmax(col)) if np.isfinite(col).any() \
        else math.nan
    print(f"{name}: epoch {epoch + 1}/{epochs}, {len(col)} configs, best {metric} {best:.4g} "
          f"({seconds:.1f} s)", file=sys.stderr, flush=True)


def _stacked(values) -> np.ndarray:
    """One float64 vector from per-config scalars or (K,) arrays."""
    return np.concatenate([np.atleast_1d(np.asarray(v, np.float64)) for v in values])


def _eval_data(name: str, val_data, input_shape, eval_batch_size: int):
    """(xb, yb, mb, n) padded validation batches (train.padded_batches), or None."""
    if val_data is None:
        return None
    xv, yv = check_data(name, "val_data", val_data)
    if tuple(xv.shape[1:]) != tuple(input_shape):
        raise ValueError(f"{name}: val_data x has examples of shape {fmt_shape(xv.shape[1:])}, "
                         f"train_data x of shape {fmt_shape(input_shape)}")
    bs = min(check_positive_int(name, "eval_batch_size", eval_batch_size), len(xv))
    return (*padded_batches(xv, yv, bs), len(xv))


def _validate(evaluate, states, eval_data, history: dict, epoch: int, epochs: int) -> None:
    """Validation loss and accuracy of every config after `epoch` (train.evaluation_sums)."""
    xb, yb, mb, nv = eval_data
    sums = [evaluate(s.params, s.state, xb, yb, mb) for s in states]
    k = len(history["train_loss"])
    for name in ("val_loss", "val_accuracy"):
        history.setdefault(name, np.full((k, epochs), np.nan))
    history["val_loss"][:, epoch] = _stacked(s[0] for s in sums) / nv
    if _classify(yb):
        history["val_accuracy"][:, epoch] = _stacked(s[1] for s in sums) / nv


def _classify(yb) -> bool:
    """Integer class labels (S, B): the confusion matrix's trace counts the right predictions."""
    return bool(jnp.issubdtype(yb.dtype, jnp.integer) and yb.ndim == 2)
