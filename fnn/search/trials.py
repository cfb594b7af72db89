"""Search results: a ``Trial`` per scored config, a ``SearchResult`` (trials best first, a table,
JSON lines), ``sort_trials``, and ``load_jsonl`` and ``trial_json`` for the JSON-lines files
that the searches write.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from fnn.core import check_choice
from fnn.search.spaces import to_python


class Trial(NamedTuple):
    """One scored config: ``index`` (order of evaluation), ``config``, ``score`` (NaN when the
    run diverged), ``metrics`` (what ``run`` returned besides the score) and ``seconds``."""

    index: int  # type: ignore[assignment]  # a field named like tuple.index
    config: dict
    score: float
    metrics: dict
    seconds: float


def _finite_or_none(v):
    v = to_python(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _jsonable(d: Mapping) -> dict:
    out = {}
    for k, v in d.items():
        v = to_python(v)
        if isinstance(v, (np.ndarray, jax.Array)):
            v = np.asarray(v).tolist()
        elif isinstance(v, tuple):
            v = list(v)
        out[str(k)] = _finite_or_none(v)
    return out


def trial_json(t: Trial) -> str:
    """One trial as one line of JSON (no newline); non-finite numbers as null, arrays and tuples as lists."""
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
                f.write(trial_json(t) + "\n")
        return path
