"""History: one record per epoch (and, when recorded, per step), saved as JSON lines, shown as a table."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "lr_scale",
          "grad_norm", "seconds", "images_per_second")

STEP_FIELDS = ("loss", "grad_norm", "layer_grad_norms", "layer_update_ratios")
"""What a ``StepRecorder`` keeps of a step (``History.steps``): see ``train_step(layer_stats=True)``."""

ACTIVATION_FIELDS = ("act_mean", "act_std", "dead_fraction", "saturated_fraction")
"""Per-layer activation statistics a ``StepRecorder`` adds to each recorded step (``fnn.train.probe``)."""


class History:
    """Per-epoch records, one dict per epoch with the keys in ``FIELDS``.

    ``history["val_loss"]`` (or ``history.val_loss``) is the list over epochs; missing
    values (no validation data, no base learning rate given) are None. ``lr`` is the
    learning rate in effect at the epoch's last step (base lr or schedule value × plateau
    scale) when ``fit`` knows it, ``lr_scale`` the plateau scale alone. ``seconds`` times the
    training steps only (not compilation, not validation).

    Attributes besides the records: ``stop_reason`` (None, or why training ended early),
    ``best_epoch`` (with early stopping), ``compile_seconds``, and with a ``StepRecorder``
    the per-step records ``steps``: dicts with ``epoch``, ``step``, ``loss``, ``grad_norm``,
    ``layer_grad_norms`` and ``layer_update_ratios`` (lists aligned with ``layer_names``, the
    layers with parameters) and ``act_mean``, ``act_std``, ``dead_fraction``,
    ``saturated_fraction`` (lists aligned with ``activation_names``, every layer; NaN where a
    statistic does not apply); ``save_steps_jsonl`` writes them.
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
                    if k in r:
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
