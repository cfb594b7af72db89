"""The run report: one self-contained HTML page per training run, to open in any browser.

``write_report(path, history, results, ...)`` puts the results, the run's settings, the
training curves, the learning rate, the per-epoch table, the confusion matrix, the per-layer
gradient norms (when a ``StepRecorder`` recorded them) and the model summary on one page.
Plots are PNGs drawn by ``fnn.plot`` and embedded as ``data:image/png;base64`` images; the page
has no script and loads nothing from anywhere, so it can be mailed or archived as one file.
Without matplotlib the page is written with its tables only, and says so.
"""

from __future__ import annotations

import base64
import datetime
import html
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fnn import plot
from fnn.train import FIELDS, History

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; } th, td { padding: 0.2em 0.7em; text-align: right; }
th { background: #f2f2f5; } tr:nth-child(even) td { background: #fafafa; }
table.kv th { text-align: left; } pre { background: #f7f7f9; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; } .note { color: #777; font-style: italic; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    """A table cell: floats to 4 significant digits, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def _png(draw: Callable[[Path], Any]) -> bytes:
    """The bytes of the PNG that ``draw(path)`` writes (into a temporary directory)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "plot.png"
        draw(path)
        return path.read_bytes()


def _figure(heading: str, draw: Callable[[Path], Any], alt: str) -> str:
    """A section with the embedded plot, or a note saying why it is missing."""
    try:
        data = base64.b64encode(_png(draw)).decode("ascii")
    except ImportError as e:
        return f'<h2>{_esc(heading)}</h2>\n<p class="note">no plot: {_esc(e)}</p>'
    return f'<h2>{_esc(heading)}</h2>\n<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _kv_table(table_id: str, items: Mapping[str, Any]) -> str:
    rows = "".join(f'<tr><th>{_esc(k)}</th><td data-key="{_esc(k)}" data-value="{_esc(v)}">{_esc(_fmt(v))}</td></tr>'
                   for k, v in items.items())
    return f'<table class="kv" id="{_esc(table_id)}">{rows}</table>'


def _epochs_table(history: History) -> str:
    head = "".join(f"<th>{_esc(f)}</th>" for f in FIELDS)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(r.get(f)))}</td>" for f in FIELDS) + "</tr>\n"
                   for r in history.records)
    return f'<table id="epochs"><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>'


def html_report(history: History, results: Mapping[str, Any], *, summary: Any = None,
                settings: Mapping[str, Any] | None = None, class_names: Sequence[str] | None = None,
                title: str = "fnn run") -> str:
    """The report as an HTML string (see ``write_report``)."""
    if not isinstance(history, History):
        history = History(history)
    scalars = {k: v for k, v in results.items() if k != "confusion" and not isinstance(v, (list, dict, np.ndarray))}
    confusion = results.get("confusion")
    parts = [f"<h1>{_esc(title)}</h1>",
             f'<p class="note">written {_esc(datetime.datetime.now().isoformat(timespec="seconds"))}; '
             f"{len(history)} epochs{'; ' + _esc(history.stop_reason) if history.stop_reason else ''}</p>",
             "<h2>Results</h2>", _kv_table("results", scalars)]
    if settings:
        parts += ["<h2>Settings</h2>", _kv_table("settings", settings)]
    if len(history):
        parts.append(_figure("Training curves", lambda p: plot.plot_history(history, p), "loss and accuracy curves"))
        if any(v is not None for v in history["lr"]):
            parts.append(_figure("Learning rate", lambda p: plot.plot_learning_rate(history, p), "learning rate"))
    parts += ["<h2>Epochs</h2>", _epochs_table(history)]
    if confusion is not None:
        parts.append(_figure("Confusion matrix", lambda p: plot.plot_confusion(confusion, class_names, p),
                             "confusion matrix"))
    if history.steps:
        parts.append(_figure("Per-layer gradient norms", lambda p: plot.plot_grad_norms(history, p),
                             "per-layer gradient norms"))
    if summary is not None:
        parts += ["<h2>Model</h2>", f'<pre id="summary">{_esc(summary)}</pre>']
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(parts) + "\n</body>\n</html>\n")


def write_report(path: str | os.PathLike, history: History, results: Mapping[str, Any], *, summary: Any = None,
                 settings: Mapping[str, Any] | None = None, class_names: Sequence[str] | None = None,
                 title: str = "fnn run") -> Path:
    """Write the run's self-contained HTML report.

    Args:
      path: the HTML file to write (parent directories are created).
      history: the ``History`` of ``fit`` (or its records): the curves, the learning rate, the
        per-epoch table, and the per-layer gradient norms when it has ``steps``.
      results: the run's results, e.g. ``fnn train``'s results.json or ``evaluate``'s output:
        the scalars are tabulated, and a ``"confusion"`` (M, M) matrix is drawn.
      summary: the model summary (``fnn.summary(model, input_shape)``), shown as its table.
      settings: the run's settings (hyperparameters, data), tabulated.
      class_names: the M class names of the confusion matrix.
      title: the page title.

    Returns:
      The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = html_report(history, results, summary=summary, settings=settings, class_names=class_names, title=title)
    path.write_text(text, encoding="utf-8")
    return path


__all__ = ["html_report", "write_report"]
