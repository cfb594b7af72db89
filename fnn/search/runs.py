"""Grid and random search, one config after another: ``grid_search`` and ``random_search`` score
each config with ``run(config)``, sort the trials, write them as JSON lines and refit the best;
``fit_objective`` builds the usual ``run``, which trains with ``fnn.train.fit``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fnn import optim
from fnn.core import Layer, Loss, Optimizer, check_choice, check_positive_int
from fnn.search.reserved import scale_params, seed_key
from fnn.search.spaces import grid, sample
from fnn.search.trials import SearchResult, Trial, sort_trials, trial_json
from fnn.train import Progress, as_key, fit, init_train_state
from fnn.typing import Data


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
                f.write(trial_json(trial) + "\n")
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
      space: names to lists of values (or fixed values), see the ``fnn.search`` docstring.
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
        key = seed_key(config, self.key)
        data = self.train_data if train_data is None else train_data
        kwargs = dict(self.fit_kwargs)
        if "init_scale" in config:
            ts = init_train_state(model, opt, np.shape(data[0])[1:], key=key)
            scale = float(config["init_scale"])
            params = scale_params(ts.params, scale)
            kwargs["train_state"] = ts._replace(params=params)
        return fit(model, self.loss, opt, data, epochs=int(config.get("epochs", self.epochs)),
                   batch_size=int(config.get("batch_size", self.batch_size)), key=key,
                   val_data=self.val_data, **kwargs)

    def __call__(self, config: Mapping) -> dict:
        _, history = self.train(config)
        last = history.records[-1] if history.records else {}
        score = last.get(self.metric)
        diverged = history.stop_reason is not None and "NaN" in history.stop_reason
        out: dict[str, Any] = {"score": math.nan if score is None or diverged else float(score)}
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
                  make_optimizer: Callable[[dict], Optimizer], train_data: Data, val_data: Data | None = None, *,
                  epochs: int,
                  batch_size: int, key: jax.Array,
                  metric: str = "val_loss", **fit_kwargs: Any) -> Callable[[dict], dict]:
    """A ``run(config)`` for the searches: train with ``fit`` and score the last epoch.

    Args:
      make_model: ``config -> Layer`` (e.g. ``lambda c: models.mlp((784, c["hidden"], 10))``).
      loss: the Loss.
      make_optimizer: ``config -> Optimizer`` (e.g. ``lambda c: optim.adam(c["learning_rate"])``);
        a ``weight_decay`` key is added in front of it (``fnn.search`` docstring).
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
