"""Training curves, confusion matrices and the learning-rate range test as PNG files (optional: needs matplotlib).

matplotlib is imported inside the functions, so ``import fnn`` works without it. Figures are
drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch), which is
safe in scripts, tests and threads alike.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fnn.diagnostics import Record, records_to_series
from fnn.train import History
from fnn.typing import ArrayLike

INSTALL_HINT = "fnn.plot needs matplotlib: pip install 'fnn[plots]'"


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} (import failed: {e})") from e
    return Figure, FigureCanvasAgg, MaxNLocator


def _series(history, field: str) -> list:
    """history: a History, a list of per-epoch dicts, or a dict of lists."""
    if isinstance(history, Mapping):
        return list(history.get(field) or [])
    if hasattr(history, "records"):
        history = history.records
    return [r.get(field) for r in history]


def _save(fig, canvas_cls, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas_cls(fig)
    fig.savefig(path, format="png", dpi=fig.dpi)
    return path


def plot_history(history: History | Mapping[str, Sequence[Any]], path: str | os.PathLike, *,
                 title: str | None = None, points: Mapping[str, Mapping[str, float]] | None = None) -> Path:
    """Loss and accuracy per epoch, train and validation, side by side, saved as a PNG.

    Args:
      history: a ``fnn.train.History`` (or its records, or a dict of lists) with ``epoch``,
        ``train_loss``, ``val_loss``, ``train_accuracy``, ``val_accuracy``; missing values
        (None) are skipped.
      path: the PNG file to write (parent directories are created).
      title: an optional title over both panels.
      points: single results to mark as stars, by label: ``{label: {"epoch": e, "val_loss": l,
        "val_accuracy": a}}`` (either metric may be left out), e.g. the validation figures of
        the SWA mean after the last epoch (``fnn train --swa``).

    Returns:
      The path written.

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: the history has no epochs, or a point has no epoch.
    """
    Figure, FigureCanvasAgg, MaxNLocator = _matplotlib()
    points = dict(points or {})
    for label, point in points.items():
        if "epoch" not in point:
            raise ValueError(f"plot_history: point {label!r} needs an 'epoch', got keys {sorted(point)}")
    epochs = _series(history, "epoch")
    if not epochs:
        raise ValueError("plot_history: the history has no epochs")
    fig = Figure(figsize=(11, 4.2), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (("loss", "Loss", "loss"), ("accuracy", "Accuracy", "accuracy"))  # any loss: mse too
    for ax, (metric, heading, ylabel) in zip(axes, panels, strict=True):
        drawn = False
        for split, style, color in (("train", "-o", "tab:blue"), ("val", "-s", "tab:orange")):
            values = _series(history, f"{split}_{metric}")
            pts = [(e, v) for e, v in zip(epochs, values, strict=False) if v is not None and np.isfinite(v)]
            if pts:
                xs, ys = zip(*pts, strict=True)
                label = "train" if split == "train" else "validation"
                ax.plot(xs, ys, style, color=color, label=label, markersize=4, linewidth=1.6)
                drawn = True
        for label, point in points.items():
            value = point.get(f"val_{metric}")
            if value is not None and np.isfinite(value):
                ax.plot([point["epoch"]], [value], "*", color="tab:red", markersize=13, label=label, zorder=5)
                drawn = True
        ax.set_title(heading)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no {metric} recorded", ha="center", va="center", transform=ax.transAxes)
    if len(epochs) == 1:  # a single point: give the axis some room
        for ax in axes:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    if title:
        fig.suptitle(title)
    return _save(fig, FigureCanvasAgg, path)


def plot_learning_rate(history: History | Mapping[str, Sequence[Any]], path: str | os.PathLike, *,
                       title: str | None = None) -> Path:
    """The learning rate in effect at the end of each epoch (log scale), saved as a PNG.

    Args:
      history: a ``fnn.train.History`` (or its records, or a dict of lists) with ``epoch`` and
        ``lr`` (``fit`` records it given a ``LearningRateLog``); missing values are skipped.
      path: the PNG file to write.
      title: an optional title.

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: no learning rate was recorded.
    """
    Figure, FigureCanvasAgg, MaxNLocator = _matplotlib()
    pts = [(e, v) for e, v in zip(_series(history, "epoch"), _series(history, "lr"), strict=False)
           if v is not None and np.isfinite(v) and v > 0]
    if not pts:
        raise ValueError("plot_learning_rate: no learning rate recorded (fit with callbacks=[LearningRateLog(lr)])")
    xs, ys = zip(*pts, strict=True)
    fig = Figure(figsize=(6.0, 3.4), dpi=110, layout="constrained")
    ax = fig.subplots()
    ax.plot(xs, ys, "-o", color="tab:purple", markersize=4, linewidth=1.6)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate (log scale)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.25)
    if len(xs) == 1:
        ax.set_xlim(xs[0] - 1, xs[0] + 1)
    ax.set_title(title or "Learning rate")
    return _save(fig, FigureCanvasAgg, path)


def plot_confusion(confusion: ArrayLike, class_names: Sequence[str] | None, path: str | os.PathLike, *,
                   title: str | None = None) -> Path:
    """A confusion matrix as a PNG: rows = true class, columns = predicted class.

    Cells show the counts; their colour is the fraction of the true class (row-normalized),
    so classes of different sizes compare fairly. The title gives the overall accuracy.

    Args:
      confusion: (M, M) counts.
      class_names: M names, or None for 0..M-1.
      path: the PNG file to write.
      title: an optional title (default: "Confusion matrix (accuracy ...)").

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: confusion is not square, or class_names has the wrong length.
    """
    Figure, FigureCanvasAgg, _ = _matplotlib()
    conf = np.asarray(confusion)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"plot_confusion: expected a square (M, M) matrix, got shape {conf.shape}")
    m = conf.shape[0]
    names = [str(i) for i in range(m)] if class_names is None else [str(c) for c in class_names]
    if len(names) != m:
        raise ValueError(f"plot_confusion: expected {m} class names for a {m}x{m} matrix, got {len(names)}")
    rows = conf.sum(axis=1, keepdims=True)
    frac = np.divide(conf, rows, out=np.zeros(conf.shape, float), where=rows > 0)
    total = conf.sum()
    accuracy = np.trace(conf) / total if total else float("nan")

    size = max(5.0, 0.62 * m + 2.5)
    fig = Figure(figsize=(size + 1.2, size), dpi=110, layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    cbar = fig.colorbar(im, ax=ax, shrink=0.8)
    cbar.set_label("fraction of the true class")
    ax.set_xticks(range(m), labels=names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(m), labels=names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fontsize = 9 if m <= 12 else 7
    if m <= 30:
        for i in range(m):
            for j in range(m):
                ax.text(j, i, str(int(conf[i, j])), ha="center", va="center", fontsize=fontsize,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_title(title or f"Confusion matrix (accuracy {accuracy:.4f}, N={int(total)})")
    return _save(fig, FigureCanvasAgg, path)


def plot_grad_norms(records: Any, path: str | os.PathLike, *, title: str | None = None,
                    xlabel: str | None = None) -> Path:
    """Per-layer gradient norms over training (log scale, one line per layer with parameters).

    A second panel shows the update/parameter norm ratios when they were recorded (a
    recorder given the optimizer), with the usual ~1e-3 per step marked. Lines are coloured
    from the first layer (dark) to the last (light), so vanishing gradients show as a fan of
    dark lines far below the light ones.

    Args:
      records: a ``fnn.diagnostics.Recorder`` (or its ``records``, or a list of ``Report``s,
        plotted against their index), a ``fnn.train.History`` recorded by a ``StepRecorder``
        (plotted against the global step), or a dict ``{layer label: [norm, ...]}`` (plotted
        against 0, 1, ...).
      path: the PNG file to write.
      title: an optional title over the panels.
      xlabel: the x-axis label (default: "epoch" for a Recorder's records, else "record").

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: nothing to plot.
    """
    Figure, FigureCanvasAgg, MaxNLocator = _matplotlib()
    if isinstance(records, Mapping):
        grads = {str(k): [float(v) for v in vs] for k, vs in records.items()}
        xs = list(range(max((len(v) for v in grads.values()), default=0)))
        ratios: dict = {}
        xlabel_ = "record"
    else:
        if isinstance(records, History):
            if not records.steps:
                raise ValueError("plot_grad_norms: this History has no per-step records; "
                                 "train with fit(..., callbacks=[StepRecorder(N)])")
            xs, grads, ratios = records_to_series(records)
            xlabel_ = "step"
        else:
            if hasattr(records, "records"):
                records = records.records
            records = list(records)
            xs, grads, ratios = records_to_series(records)
            xlabel_ = "epoch" if records and isinstance(records[0], Record) else "record"
    xlabel_ = xlabel or xlabel_
    if not grads or not xs:
        raise ValueError("plot_grad_norms: no gradient norms to plot "
                         "(no records, or no layer with parameters)")

    panels = [("grad", grads, "Gradient norm per layer", "‖∂L/∂θ‖ (log scale)")]
    if ratios:
        panels.append(("ratio", ratios, "Update / parameter norm per layer", "‖Δθ‖ / ‖θ‖ (log scale)"))
    fig = Figure(figsize=(6.2 * len(panels) + 2.6, 4.6), dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    labels = list(grads)
    colors = {lab: cmap(0.85 * i / max(len(labels) - 1, 1)) for i, lab in enumerate(labels)}
    # The first x where some layer's norm is NaN/Inf (training diverged): marked, not drawn.
    bad = [x for values in grads.values() for x, v in zip(xs, values, strict=False)
           if v is None or not np.isfinite(v)]
    first_bad = min(bad) if bad else None
    handles: dict[str, Any] = {}
    for ax, (kind, series, heading, ylabel) in zip(axes, panels, strict=True):
        for lab, values in series.items():
            pts = [(x, v) for x, v in zip(xs, values, strict=False)
                   if v is not None and np.isfinite(v) and v > 0]
            if not pts:
                continue
            px, py = zip(*pts, strict=True)
            style = "-o" if len(xs) <= 60 else "-"  # markers only while they stay apart
            (line,) = ax.plot(px, py, style, color=colors.get(lab), label=lab, markersize=3.5, linewidth=1.6)
            handles.setdefault(lab, line)
        ax.set_yscale("log")
        if kind == "ratio":
            lo, hi = ax.get_ylim()
            if lo <= 1e-3 <= hi:
                ax.axhline(1e-3, color="0.4", linestyle="--", linewidth=1.0)
                ax.text(0.99, 1e-3, "1e-3 rule of thumb ", color="0.3", fontsize=8, va="bottom", ha="right",
                        transform=ax.get_yaxis_transform())
        if first_bad is not None:
            ax.axvline(first_bad, color="tab:red", linestyle=":", linewidth=1.5)
            ax.axvspan(first_bad, max(xs[-1], first_bad + 0.5), color="tab:red", alpha=0.06, linewidth=0)
            ax.text(first_bad, 0.97, " NaN/Inf from here", color="tab:red", fontsize=8, va="top", ha="left",
                    transform=ax.get_xaxis_transform())
        if len(xs) > 1:
            pad = 0.04 * (xs[-1] - xs[0])
            ax.set_xlim(xs[0] - pad, xs[-1] + pad)
        ax.set_title(heading)
        ax.set_xlabel(xlabel_)
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, which="major", alpha=0.3)
        ax.grid(True, which="minor", alpha=0.08)
        if len(xs) == 1:
            ax.set_xlim(xs[0] - 1, xs[0] + 1)
    ordered = [handles[lab] for lab in labels if lab in handles]
    fig.legend(ordered, [h.get_label() for h in ordered], loc="outside right center", title="layer",
               fontsize=8, title_fontsize=9)
    if title:
        fig.suptitle(title)
    return _save(fig, FigureCanvasAgg, path)


def plot_lr_find(result: Any, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """The learning-rate range test: loss against learning rate (log x), the suggestion marked.

    Args:
      result: a ``fnn.diagnostics.LrFindResult`` (``lr_find``'s).
      path: the PNG file to write.
      title: an optional title (default: the suggestion and its rule).

    Raises:
      ImportError: matplotlib is not installed.
    """
    Figure, FigureCanvasAgg, _ = _matplotlib()
    fig = Figure(figsize=(7.5, 4.6), dpi=110, layout="constrained")
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, color="0.7", linewidth=1.0, label="batch loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", linewidth=1.8, label="smoothed loss")
    marks = (("tab:red", result.suggestion, f"suggested {result.suggestion:.2g} ({result.rule})"),
             ("tab:green", result.lr_min, f"minimum at {result.lr_min:.2g}"))
    for color, lr, label in marks:
        ax.axvline(lr, color=color, linestyle="--", linewidth=1.2, label=label)
    ax.set_xscale("log")
    # The diverging tail would flatten the useful part: clip the y range just above the start.
    lo = min(float(np.min(result.smoothed)), float(np.min(result.losses)))
    hi = max(float(result.smoothed[0]), float(result.initial_loss)) if np.isfinite(result.initial_loss) else None
    if hi is not None and hi > lo:
        ax.set_ylim(lo - 0.25 * (hi - lo), hi + 0.35 * (hi - lo))
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
    ax.legend(fontsize=8)
    ax.set_title(title or f"Learning-rate range test: suggested lr {result.suggestion:.2g}")
    return _save(fig, FigureCanvasAgg, path)


def plot_runs(runs: Mapping[str, Any], path: str | os.PathLike, *,
              fields: Sequence[str] = ("val_accuracy", "val_loss"), title: str | None = None) -> Path:
    """Several runs side by side: one panel per field, one line per run, against the epoch.

    For comparing settings or seeds (``fnn compare`` draws it from run directories). A run that
    did not record a field is left out of that panel; missing values (None, NaN) are skipped.

    Args:
      runs: ``{label: history}``, each history a ``fnn.train.History``, its records or a dict of
        lists with ``epoch`` and the fields.
      path: the PNG file to write.
      fields: the per-epoch fields to draw, e.g. ``("val_accuracy", "train_loss", "lr")``; a
        field named ``lr`` is drawn on a log scale.
      title: an optional title over the panels.

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: no runs, no fields, or a field that no run recorded (the message names it).
    """
    Figure, FigureCanvasAgg, MaxNLocator = _matplotlib()
    if not runs:
        raise ValueError("plot_runs: no runs given")
    if not fields:
        raise ValueError("plot_runs: no fields given")
    fig = Figure(figsize=(5.2 * len(fields) + 1.6, 4.2), dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(fields)))
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, field in zip(axes, fields, strict=True):
        drawn = 0
        for color, (label, history) in zip(colors, runs.items(), strict=True):
            pts = [(e, v) for e, v in zip(_series(history, "epoch"), _series(history, field), strict=False)
                   if e is not None and v is not None and np.isfinite(v)]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, "-", marker="o" if len(xs) < 30 else None, markersize=3, linewidth=1.5,
                        color=color, label=str(label))
                drawn += 1
        if not drawn:
            raise ValueError(f"plot_runs: no run recorded {field!r} (runs: {', '.join(map(str, runs))})")
        if field == "lr":
            ax.set_yscale("log")
        ax.set_title(field.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, FigureCanvasAgg, path)
