"""Training curves and confusion matrices as PNG files (optional: needs matplotlib).

matplotlib is imported inside the functions, so ``import fnn`` works without it. Figures are
drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch), which is
safe in scripts, tests and threads alike.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

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


def plot_history(history, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Loss and accuracy per epoch, train and validation, side by side, saved as a PNG.

    Args:
      history: a ``fnn.train.History`` (or its records, or a dict of lists) with ``epoch``,
        ``train_loss``, ``val_loss``, ``train_accuracy``, ``val_accuracy``; missing values
        (None) are skipped.
      path: the PNG file to write (parent directories are created).
      title: an optional title over both panels.

    Returns:
      The path written.

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: the history has no epochs.
    """
    Figure, FigureCanvasAgg, MaxNLocator = _matplotlib()
    epochs = _series(history, "epoch")
    if not epochs:
        raise ValueError("plot_history: the history has no epochs")
    fig = Figure(figsize=(11, 4.2), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (("loss", "Loss", "cross-entropy loss"), ("accuracy", "Accuracy", "accuracy"))
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


def plot_confusion(confusion, class_names: Sequence[str] | None, path: str | os.PathLike, *,
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
