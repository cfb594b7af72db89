"""Hyperparameter search: grid and random search over a config space, and many configurations
trained at once with ``jax.vmap``.

A **space** is a dict from names to what each name may take:

- a ``list`` (or ``choice([...])``): these values (grid search enumerates them; random
  search picks one uniformly);
- ``loguniform(low, high)``: log-uniform in [low, high] (learning rates, weight decay);
- ``uniform(low, high)``: uniform in [low, high];
- anything else (a number, a string, a tuple): a fixed value.

``grid(space)`` and ``sample(space, num_trials, key=key)`` turn a space into a list of configs
(dicts). ``grid_search`` and ``random_search`` score each config with ``run(config)``, a
function returning a float or a dict with a ``"score"`` key, then sort the trials (a table
via ``SearchResult.table()``), write them as JSON lines, and refit the best config. The usual
``run`` trains with ``fnn.train.fit`` and scores on validation data: ``fit_objective`` builds
one.

``vmap_search`` trains K configurations that differ only in continuous hyperparameters
(learning rate and other optimizer numbers, weight decay, init scale) and in the seed AT
ONCE: one jitted, vmapped fused epoch over the K stacked TrainStates. Dropout rates cannot
vary (``Dropout`` takes its rate as a Python float at construction); neither can anything
that changes shapes (widths, batch size). The vmapped program pays off on accelerators; on
XLA:CPU it was measured slower than the same program run once per config (batched matmuls
and grouped convolutions take slower paths there), so ``vectorize=None`` picks the
sequential loop on CPU and the vmapped program elsewhere.

Config keys with a meaning of their own, the same in ``fit_objective`` and ``vmap_search``
(so one config gives the same model either way):

- ``seed``: the PRNG seed of the run (``fit(key=jax.random.key(seed))``: init, shuffles, dropout);
- ``init_scale``: every initial parameter is multiplied by it;
- ``weight_decay``: coupled L2 decay, g ← g + λ·θ before the optimizer, as
  ``optim.chain(optim.add_weight_decay(λ), make_optimizer(config))``;
- ``epochs``, ``batch_size`` (``fit_objective`` only): override the defaults.

All other keys are for ``make_model(config)`` and ``make_optimizer(config)``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn import optim
from fnn._deprecation import key_keyword_only
from fnn.backprop import resolve_grad_mode
from fnn.core import Layer, Loss, Optimizer, check_choice, check_positive_int, fmt_shape
from fnn.optim._base import default_float
from fnn.train import (
    Progress,
    as_key,
    epoch_fn,
    evaluation_sums,
    fit,
    init_train_state,
    padded_batches,
    train_step,
)
from fnn.train.checks import check_data

RESERVED = ("seed", "init_scale", "weight_decay")

# ----------------------------------------------------------------------------------------
# Spaces


class LogUniform(NamedTuple):
    """Log-uniform on [low, high]: log x is uniform on [log low, log high]."""

    low: float
    high: float


class Uniform(NamedTuple):
    """Uniform on [low, high]."""

    low: float
    high: float


class Choice(NamedTuple):
    """One of `values`, each equally likely."""

    values: tuple


def _bounds(name: str, low, high, *, positive: bool) -> tuple[float, float]:
    try:
        lo, hi = float(low), float(high)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: low and high must be numbers, got {low!r} and {high!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name}: expected finite low < high, got low={low!r}, high={high!r}")
    if positive and lo <= 0:
        raise ValueError(f"{name}: low must be > 0 (a log scale), got {low!r}")
    return lo, hi


def loguniform(low: float, high: float) -> LogUniform:
    """A log-uniform range, e.g. ``loguniform(1e-4, 1e-1)`` for a learning rate (0 < low < high)."""
    return LogUniform(*_bounds("loguniform", low, high, positive=True))


def uniform(low: float, high: float) -> Uniform:
    """A uniform range [low, high] (low < high)."""
    return Uniform(*_bounds("uniform", low, high, positive=False))


def choice(values: Sequence) -> Choice:
    """One of `values` (a non-empty sequence), e.g. ``choice([64, 128, 256])``."""
    values = tuple(values)
    if not values:
        raise ValueError("choice: needs at least one value")
    return Choice(values)


def _check_space(name: str, space) -> dict:
    if not isinstance(space, Mapping) or not space:
        raise ValueError(f"{name}: space must be a non-empty dict from names to values, lists or ranges, "
                         f"got {space!r}")
    for k, v in space.items():
        if not isinstance(k, str):
            raise ValueError(f"{name}: space keys must be strings, got {k!r}")
        if isinstance(v, list) and not v:
            raise ValueError(f"{name}: space[{k!r}] is an empty list")
    return dict(space)


def grid(space: Mapping[str, Any]) -> list[dict]:
    """Every combination of the listed values, in order (the last key varies fastest).

    Raises:
      ValueError: a ``uniform``/``loguniform`` range (a grid needs finite values: list them).
    """
    space = _check_space("grid", space)
    axes = []
    for k, v in space.items():
        if isinstance(v, (Uniform, LogUniform)):
            raise ValueError(f"grid: space[{k!r}] is a continuous range {v!r}; a grid needs a list of "
                             f"values (or use random_search)")
        axes.append(list(v.values) if isinstance(v, Choice) else v if isinstance(v, list) else [v])
    return [dict(zip(space, combo, strict=True)) for combo in itertools.product(*axes)]


@partial(jax.jit, static_argnums=(1, 2))
def _uniforms(key, num_trials: int, num_dims: int) -> jax.Array:
    """(num_trials, num_dims) U[0, 1): trial t, dimension j from fold_in(fold_in(key, t), j).

    Folding in the trial number makes trial t's config independent of num_trials.
    """
    def one(t, j):
        return jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, t), j), (), jnp.float32)

    t = jnp.arange(num_trials, dtype=jnp.uint32)
    j = jnp.arange(num_dims, dtype=jnp.uint32)
    return jax.vmap(lambda tt: jax.vmap(lambda jj: one(tt, jj))(j))(t)


def _python(v):
    """NumPy scalars to Python ones (JSON and dict printing)."""
    return v.item() if isinstance(v, np.generic) else v


@key_keyword_only(2)
def sample(space: Mapping[str, Any], num_trials: int, *, key: jax.Array) -> list[dict]:
    """`num_trials` random configs from `space`, deterministic for a given `key` (keyword-only).

    Lists and ``choice`` pick uniformly; ``loguniform``/``uniform`` draw in their range
    (inclusive bounds); fixed values are copied. The first n configs do not depend on
    `num_trials` (each trial folds its index into the key). ``sample(space, num_trials, key)``
    with a positional key still works until 0.3 with a ``DeprecationWarning``.
    """
    space = _check_space("sample", space)
    num_trials = check_positive_int("sample", "num_trials", num_trials)
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key))
    u = np.asarray(_uniforms(key, num_trials, len(space)), np.float64)
    configs = []
    for t in range(num_trials):
        config = {}
        for j, (k, v) in enumerate(space.items()):
            if isinstance(v, LogUniform):
                lo, hi = math.log(v.low), math.log(v.high)
                config[k] = min(max(math.exp(lo + u[t, j] * (hi - lo)), v.low), v.high)
            elif isinstance(v, Uniform):
                config[k] = min(max(v.low + u[t, j] * (v.high - v.low), v.low), v.high)
            elif isinstance(v, (Choice, list)):
                values = list(v.values) if isinstance(v, Choice) else v
                config[k] = _python(values[min(int(u[t, j] * len(values)), len(values) - 1)])
            else:
                config[k] = v
        configs.append(config)
    return configs


# ----------------------------------------------------------------------------------------
# Results


class Trial(NamedTuple):
    """One scored config: ``index`` (order of evaluation), ``config``, ``score`` (NaN when the
    run diverged), ``metrics`` (what ``run`` returned besides the score) and ``seconds``."""

    index: int
    config: dict
    score: float
    metrics: dict
    seconds: float


def _finite_or_none(v):
    v = _python(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _jsonable(d: Mapping) -> dict:
    out = {}
    for k, v in d.items():
        v = _python(v)
        if isinstance(v, (np.ndarray, jax.Array)):
            v = np.asarray(v).tolist()
        elif isinstance(v, tuple):
            v = list(v)
        out[str(k)] = _finite_or_none(v)
    return out


def _trial_json(t: Trial) -> str:
    return json.dumps({"index": t.index, "config": _jsonable(t.config),
                       "score": _finite_or_none(float(t.score)), "metrics": _jsonable(t.metrics),
                       "seconds": t.seconds}, allow_nan=False)


def _sort_key(mode: str):
    def key(t: Trial):
        s = float(t.score)
        return (not math.isfinite(s), (s if mode == "min" else -s) if math.isfinite(s) else 0.0, t.index)
    return key


def sort_trials(trials: Sequence[Trial], mode: str = "min") -> list[Trial]:
    """Best first (lowest score for mode "min", highest for "max"); NaN scores last."""
    check_choice("sort_trials", "mode", mode, ("min", "max"))
    return sorted(trials, key=_sort_key(mode))


def load_jsonl(path: str | os.PathLike) -> list[Trial]:
    """The trials a search wrote with ``jsonl=path`` (in the order they ran; null scores -> NaN)."""
    trials = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"load_jsonl: {path} line {i} is not JSON: {e}") from None
            score = math.nan if r.get("score") is None else float(r["score"])
            trials.append(Trial(int(r["index"]), dict(r["config"]), score, dict(r.get("metrics", {})),
                                float(r.get("seconds", 0.0))))
    return trials


@dataclass
class SearchResult:
    """The trials of a search, best first.

    Attributes:
      trials: the trials sorted by score (best first, NaN last).
      mode: "min" or "max".
      refit: what the refit returned for the best config (for ``fit_objective``: the
        ``(train_state, history)`` of a new training run; for ``vmap_search``: the best
        config's trained TrainState), or None when there was no refit.
    """

    trials: list[Trial]
    mode: str
    refit: Any = None

    @property
    def best(self) -> Trial:
        return self.trials[0]

    @property
    def best_config(self) -> dict:
        return dict(self.trials[0].config)

    def table(self, max_rows: int | None = None) -> str:
        """A fixed-width table, best first: rank, score, then each config key."""
        keys = list(dict.fromkeys(k for t in self.trials for k in t.config))
        rows = self.trials if max_rows is None else self.trials[:max_rows]

        def fmt(v):
            if isinstance(v, float):
                return f"{v:.4g}"
            return str(v)

        cells = [[str(i + 1), fmt(t.score)] + [fmt(t.config.get(k, "")) for k in keys] + [f"{t.seconds:.1f}"]
                 for i, t in enumerate(rows)]
        header = ["rank", f"score ({self.mode})"] + keys + ["seconds"]
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
        return "\n".join(lines)

    def save_jsonl(self, path: str | os.PathLike) -> Path:
        """One JSON object per trial and line, best first (non-finite numbers as null)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for t in self.trials:
                f.write(_trial_json(t) + "\n")
        return path


def _score_of(name: str, out) -> tuple[float, dict]:
    if isinstance(out, Mapping):
        if "score" not in out:
            raise ValueError(f"{name}: run(config) returned a dict without a 'score' key: {sorted(out)}")
        metrics = {k: v for k, v in out.items() if k != "score"}
        out = out["score"]
    else:
        metrics = {}
    try:
        return float(out), metrics
    except (TypeError, ValueError):
        raise ValueError(f"{name}: run(config) must return a number or a dict with a 'score', "
                         f"got {type(out).__name__}") from None


def _search(name: str, run: Callable, configs: list[dict], *, mode, jsonl, refit, progress) -> SearchResult:
    if not callable(run):
        raise ValueError(f"{name}: run must be a function config -> score, got {type(run).__name__}")
    mode = mode if mode is not None else getattr(run, "mode", "min")
    check_choice(name, "mode", mode, ("min", "max"))
    if refit is None:
        refit = getattr(run, "refit", None)
    path = Path(jsonl) if jsonl is not None else None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")
    trials = []
    for i, config in enumerate(configs):
        t0 = time.perf_counter()
        score, metrics = _score_of(name, run(dict(config)))
        trial = Trial(i, dict(config), score, metrics, time.perf_counter() - t0)
        trials.append(trial)
        if path is not None:  # line by line, so an interrupted search keeps what it did
            with open(path, "a", encoding="utf-8") as f:
                f.write(_trial_json(trial) + "\n")
        if progress:
            print(f"{name}: trial {i + 1}/{len(configs)} score {score:.4g} {config} "
                  f"({trial.seconds:.1f} s)", file=sys.stderr, flush=True)
    result = SearchResult(sort_trials(trials, mode), mode)
    if callable(refit) and math.isfinite(result.best.score):
        result.refit = refit(result.best_config)
    return result


def grid_search(run: Callable[[dict], Any], space: Mapping[str, Any], *, mode: str | None = None,
                jsonl: str | os.PathLike | None = None, refit: Callable[[dict], Any] | None = None,
                progress: bool = True) -> SearchResult:
    """Score every config of the grid over `space` with `run`, best first.

    Args:
      run: ``run(config) -> score`` or ``-> {"score": ..., other metrics}``; e.g. a
        ``fit_objective``. Diverged runs should return NaN (sorted last).
      space: names to lists of values (or fixed values), see the module docstring.
      mode: "min" (default; e.g. a validation loss) or "max" (an accuracy); default: ``run.mode``
        when it has one.
      jsonl: write each trial as one JSON line here as it finishes (``load_jsonl`` reads it).
      refit: ``refit(best_config)``, called once at the end; its result is ``SearchResult.refit``.
        Default: ``run.refit`` when `run` has one (``fit_objective`` does).
      progress: one line per trial on stderr.
    """
    return _search("grid_search", run, grid(space), mode=mode, jsonl=jsonl, refit=refit, progress=progress)


def random_search(run: Callable[[dict], Any], space: Mapping[str, Any], *, num_trials: int, key: jax.Array,
                  mode: str | None = None, jsonl: str | os.PathLike | None = None,
                  refit: Callable[[dict], Any] | None = None, progress: bool = True) -> SearchResult:
    """Score `num_trials` configs drawn from `space` with `key` (``sample``), best first.

    Same arguments as ``grid_search``, plus `num_trials` and the PRNG `key` (the same key
    gives the same configs).
    """
    configs = sample(space, num_trials, key=key)
    return _search("random_search", run, configs, mode=mode, jsonl=jsonl, refit=refit, progress=progress)


# ----------------------------------------------------------------------------------------
# Reserved keys, shared by fit_objective and vmap_search


def _decay_step(u, p, *, weight_decay):
    """u + λ·θ in u's dtype (as optim.add_weight_decay)."""
    return u + weight_decay.astype(u.dtype) * p.astype(u.dtype)


def _traced_weight_decay(weight_decay: jax.Array) -> Optimizer:
    """``optim.add_weight_decay`` for a traced λ (one per vmapped configuration)."""
    def init(params):
        return optim.EmptyState()

    def update(grads, state, params=None, *, lr_scale=1.0):
        decay = partial(_decay_step, weight_decay=jnp.asarray(weight_decay))
        return jax.tree.map(decay, grads, params), state

    return Optimizer(init, update)


def _scale_param(p, *, scale):
    return p * jnp.asarray(scale).astype(p.dtype)


def _seed_key(config: Mapping, default_key):
    return jax.random.key(int(config["seed"])) if "seed" in config else default_key


class _FitObjective:
    """``run(config)``: train with ``fnn.train.fit``, score on validation data (see ``fit_objective``)."""

    def __init__(self, make_model, loss, make_optimizer, train_data, val_data, *, epochs, batch_size, key,
                 metric, fit_kwargs):
        self.make_model, self.loss, self.make_optimizer = make_model, loss, make_optimizer
        self.train_data, self.val_data = train_data, val_data
        self.epochs = check_positive_int("fit_objective", "epochs", epochs)
        self.batch_size = check_positive_int("fit_objective", "batch_size", batch_size)
        self.key = as_key("fit_objective", key)
        metrics = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
        self.metric = check_choice("fit_objective", "metric", metric, metrics)
        if metric.startswith("val") and val_data is None:
            raise ValueError(f"fit_objective: metric={metric!r} needs val_data")
        self.mode = "max" if metric.endswith("accuracy") else "min"
        callbacks = list(fit_kwargs.get("callbacks", ()))
        if not any(isinstance(cb, Progress) for cb in callbacks):
            callbacks.append(Progress(False))
        self.fit_kwargs = {**fit_kwargs, "callbacks": callbacks}

    def train(self, config: Mapping, train_data=None):
        """Train with `config`: -> (train_state, history)."""
        config = dict(config)
        model = self.make_model(config)
        opt = self.make_optimizer(config)
        if "weight_decay" in config:
            opt = optim.chain(optim.add_weight_decay(float(config["weight_decay"])), opt)
        key = _seed_key(config, self.key)
        data = self.train_data if train_data is None else train_data
        kwargs = dict(self.fit_kwargs)
        if "init_scale" in config:
            ts = init_train_state(model, opt, np.shape(data[0])[1:], key=key)
            scale = float(config["init_scale"])
            params = jax.tree.map(partial(_scale_param, scale=scale), ts.params)
            kwargs["train_state"] = ts._replace(params=params)
        return fit(model, self.loss, opt, data, epochs=int(config.get("epochs", self.epochs)),
                   batch_size=int(config.get("batch_size", self.batch_size)), key=key,
                   val_data=self.val_data, **kwargs)

    def __call__(self, config: Mapping) -> dict:
        _, history = self.train(config)
        last = history.records[-1] if history.records else {}
        score = last.get(self.metric)
        diverged = history.stop_reason is not None and "NaN" in history.stop_reason
        out = {"score": math.nan if score is None or diverged else float(score)}
        for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            out[k] = last.get(k)
        out["epochs_run"] = len(history)
        if history.stop_reason:
            out["stop_reason"] = history.stop_reason
        return out

    def refit(self, config: Mapping):
        """Train the (best) config again: -> (train_state, history)."""
        return self.train(config)


def fit_objective(make_model: Callable[[dict], Layer], loss: Loss,
                  make_optimizer: Callable[[dict], Optimizer], train_data, val_data=None, *, epochs: int,
                  batch_size: int, key: jax.Array,
                  metric: str = "val_loss", **fit_kwargs) -> Callable[[dict], dict]:
    """A ``run(config)`` for the searches: train with ``fit`` and score the last epoch.

    Args:
      make_model: ``config -> Layer`` (e.g. ``lambda c: models.mlp((784, c["hidden"], 10))``).
      loss: the Loss.
      make_optimizer: ``config -> Optimizer`` (e.g. ``lambda c: optim.adam(c["learning_rate"])``);
        a ``weight_decay`` key is added in front of it (module docstring).
      train_data, val_data: ``(x, y)`` as for ``fit``.
      epochs, batch_size: defaults, which ``epochs``/``batch_size`` config keys override.
      key: the PRNG key of runs whose config has no ``seed``.
      metric: "val_loss" (default, minimized), "val_accuracy" (maximized), "train_loss" or
        "train_accuracy", taken from the last epoch's History row. A run that stopped on
        NaN/Inf scores NaN.
      fit_kwargs: passed to ``fit`` (no progress bar unless its callbacks have a ``Progress``).

    Returns:
      ``run(config) -> {"score", "train_loss", "val_loss", "val_accuracy", ...}`` with
      ``run.mode`` ("min"/"max") and ``run.refit(config) -> (train_state, history)``, which
      the searches call for the best config.
    """
    return _FitObjective(make_model, loss, make_optimizer, train_data, val_data, epochs=epochs,
                         batch_size=batch_size, key=key, metric=metric, fit_kwargs=fit_kwargs)


# ----------------------------------------------------------------------------------------
# vmap_search


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
            if isinstance(v, bool) or not isinstance(_python(v), (int, float)) or not math.isfinite(float(v)):
                raise ValueError(f"{name}: configs[{i}][{k!r}] = {v!r}: only finite numbers can vary "
                                 f"across vmapped configs (shapes, dropout rates and strings cannot; use "
                                 f"grid_search or random_search for those)")
        if "seed" in c and float(c["seed"]) != int(c["seed"]):
            raise ValueError(f"{name}: configs[{i}]['seed'] must be an int, got {c['seed']!r}")
    return configs, keys


class _Programs(NamedTuple):
    init: Callable
    epoch: Callable
    evaluate: Callable | None


def _programs(model, loss, make_optimizer, input_shape, batch_size, mode, vectorize, validate) -> _Programs:
    """fit's programs for one config: ``init_train_state``, ``train.epoch_fn`` of ``train_step``,
    ``train.evaluation_sums``; vmapped over the configs when `vectorize`."""
    def make_opt(hp):
        opt = make_optimizer(dict(hp))
        if "weight_decay" in hp:
            opt = optim.chain(_traced_weight_decay(hp["weight_decay"]), opt)
        return opt

    def init_one(key, hp):
        """fnn.train.init_train_state, then init_scale."""
        opt = make_opt(hp)
        ts = init_train_state(model, opt, input_shape, key=key)
        if "init_scale" in hp:
            params = jax.tree.map(partial(_scale_param, scale=hp["init_scale"]), ts.params)
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
        evaluate = jax.jit(jax.vmap(eval_one, in_axes=(0, 0, None, None, None)) if vectorize else eval_one)
    if vectorize:
        return _Programs(jax.jit(jax.vmap(init_one)),
                         jax.jit(jax.vmap(epoch_one, in_axes=(0, 0, None, None, None)), donate_argnums=0),
                         evaluate)
    return _Programs(jax.jit(init_one), jax.jit(epoch_one, donate_argnums=0), evaluate)


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

    def train_state_of(self, i: int):
        """The TrainState of config i (a slice of ``train_state``)."""
        return jax.tree.map(lambda a: a[i], self.train_state)


def vmap_search(model: Layer, loss: Loss, make_optimizer: Callable[[dict], Optimizer], train_data,
                configs: Sequence[Mapping[str, float]], *, epochs: int, batch_size: int, val_data=None,
                metric: str | None = None, grad_mode: str = "auto", vectorize: bool | None = None,
                eval_batch_size: int = 1000, jsonl: str | os.PathLike | None = None,
                progress: bool = True) -> VmapResult:
    """Train K configs of one model at once: one jitted epoch, vmapped over K TrainStates.

    Each config trains exactly as ``fit(model, loss, opt, train_data, epochs, batch_size,
    key=jax.random.key(config["seed"]))`` would with ``opt = make_optimizer(config)``
    (plus the reserved keys, see the module docstring) and ``remainder="drop"``: same init,
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
      grad_mode: as for ``fit`` ("auto": custom_vjp on CPU, autodiff elsewhere).
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
    mode = resolve_grad_mode(grad_mode, name=name)
    if vectorize is None:
        vectorize = jax.default_backend() != "cpu"
    x, y = check_data(name, "train_data", train_data)
    if batch_size > len(x):
        raise ValueError(f"{name}: batch_size={batch_size} is larger than the number of training "
                         f"examples N={len(x)}")
    metric = metric or ("val_loss" if val_data is not None else "train_loss")
    check_choice(name, "metric", metric, ("val_loss", "val_accuracy", "train_loss"))
    if metric.startswith("val") and val_data is None:
        raise ValueError(f"{name}: metric={metric!r} needs val_data")
    score_mode = "max" if metric.endswith("accuracy") else "min"
    x, y = jnp.asarray(x), jnp.asarray(y)
    eval_data = _eval_data(name, val_data, x.shape[1:], eval_batch_size)

    progs = _programs(model, loss, make_optimizer, tuple(int(d) for d in x.shape[1:]), batch_size, mode,
                      vectorize, eval_data is not None)
    names = [k for k in keys if k != "seed"]
    hp = {k: jnp.asarray([float(c[k]) for c in configs], default_float()) for k in names}
    rng = jax.vmap(jax.random.key)(jnp.asarray([int(c.get("seed", 0)) for c in configs], jnp.uint32))
    scale = jnp.ones((), default_float())
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
            col = history[metric][:, epoch]
            best = (np.nanmin(col) if score_mode == "min" else np.nanmax(col)) if np.isfinite(col).any() \
                else math.nan
            print(f"{name}: epoch {epoch + 1}/{epochs}, {len(configs)} configs, best {metric} {best:.4g} "
                  f"({time.perf_counter() - t_epoch:.1f} s)", file=sys.stderr, flush=True)

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


__all__ = [
    "LogUniform", "Uniform", "Choice", "loguniform", "uniform", "choice", "grid", "sample",
    "Trial", "SearchResult", "VmapResult", "sort_trials", "load_jsonl",
    "grid_search", "random_search", "fit_objective", "vmap_search", "RESERVED",
]
