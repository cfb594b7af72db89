"""``fnn compare``: several runs of ``fnn train`` side by side, as a table and one PNG.

Each RUN is an ``--out`` directory of ``fnn train`` (its ``history.jsonl`` and ``results.json``
once the run finished; while it runs, the history in its ``checkpoint.fnn``, rewritten after
every epoch) or a ``history.jsonl`` file. The table gives per run the
epochs, the best validation accuracy and its epoch, the last one, the test accuracy and the
training time; the PNG (``fnn.plot.plot_runs``) draws the chosen fields per epoch, one line per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from fnn.cli._args import _Exit, _log
from fnn.cli._trained import CHECKPOINT_FILE, HISTORY_FILE, RESULTS_FILE

if TYPE_CHECKING:
    from fnn.train import History

PROG = "fnn compare"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fnn compare`` to the subcommand parsers ``sub``."""
    p = sub.add_parser(
        "compare", help="compare runs of fnn train: a table and their curves in one PNG",
        description="Compare runs of fnn train (their --out directories, or history.jsonl files): print a "
                    "table of epochs, best and last validation accuracy, test accuracy and training time, "
                    "and draw the chosen per-epoch fields of all runs in one PNG.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="an fnn train --out directory or a history.jsonl")
    p.add_argument("--fields", default="val_accuracy,val_loss", metavar="LIST",
                   help="comma-separated per-epoch fields to plot, e.g. val_accuracy,train_loss,lr "
                        "(default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("compare.png"), help="the PNG to write (default: %(default)s)")
    p.add_argument("--no-plot", action="store_true", help="print the table only")
    p.add_argument("--json", action="store_true", help="print one JSON line (the table's rows) instead of the table")
    p.set_defaults(run=run)


def _load(run: Path):
    """(label, History, results dict or {}) of one RUN argument."""
    from fnn.train import History

    history_file = run / HISTORY_FILE if run.is_dir() else run
    if run.is_dir() and not history_file.is_file() and (run / CHECKPOINT_FILE).is_file():
        return run.name, _running(run / CHECKPOINT_FILE), {}
    if not history_file.is_file():
        raise _Exit(2, f"{PROG}: error: {run} is not a run directory of fnn train (no {HISTORY_FILE}) "
                       f"nor a history file")
    try:
        history = History.load_jsonl(history_file)
    except ValueError as e:
        raise _Exit(2, f"{PROG}: error: {e}") from None
    results_file = history_file.parent / RESULTS_FILE
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    label = history_file.parent.name if history_file.name == HISTORY_FILE else history_file.stem
    return label, history, results


def _running(checkpoint: Path):
    """The History stored in the metadata of a run's checkpoint (a run still in progress)."""
    from fnn.checkpoint import read_metadata
    from fnn.train import History

    try:
        return History(read_metadata(checkpoint).get("history") or [])
    except ValueError as e:
        raise _Exit(2, f"{PROG}: error: {e}") from None


def summarize(label: str, history: History, results: dict) -> dict:
    """One row of the table: what a run reached, from its history and results."""
    val = [(float(r["val_accuracy"]), r.get("epoch")) for r in history.records if r.get("val_accuracy") is not None]
    best: tuple = max(val, key=lambda p: p[0]) if val else (None, None)
    seconds = results.get("train_seconds")
    if seconds is None:
        seconds = sum(r.get("seconds") or 0.0 for r in history.records) or None
    return {"run": label, "epochs": len(history), "best_val_accuracy": best[0], "best_epoch": best[1],
            "last_val_accuracy": val[-1][0] if val else None, "test_accuracy": results.get("test_accuracy"),
            "train_seconds": seconds}


def _table(rows: list[dict]) -> str:
    width = max(len("run"), *(len(r["run"]) for r in rows))
    num = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
    lines = [f"{'run':<{width}}  epochs  best_val (epoch)  last_val  test_acc  train_min"]
    for r in rows:
        best = "-" if r["best_val_accuracy"] is None else f"{r['best_val_accuracy']:.4f} ({r['best_epoch']:>3})"
        minutes = None if r["train_seconds"] is None else r["train_seconds"] / 60
        lines.append(f"{r['run']:<{width}}  {r['epochs']:>6}  {best:>16}  {num(r['last_val_accuracy'], '.4f'):>8}  "
                     f"{num(r['test_accuracy'], '.4f'):>8}  {num(minutes, '.1f'):>9}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``fnn compare``: returns the exit status."""
    try:
        loaded = [_load(r) for r in args.runs]
        labels = [label for label, _, _ in loaded]
        if len(set(labels)) < len(labels):  # two runs with the same directory name: use the paths
            labels = [str(r) for r in args.runs]
        rows = [summarize(label, h, res) for label, (_, h, res) in zip(labels, loaded, strict=True)]
        if not args.no_plot:
            fields = [f.strip() for f in args.fields.split(",") if f.strip()]
            try:
                from fnn.plot import plot_runs
                plot_runs({label: h for label, (_, h, _) in zip(labels, loaded, strict=True)}, args.out,
                          fields=fields, title=f"{len(rows)} runs")
                _log(f"{PROG}: wrote {args.out}")
            except ImportError as e:
                _log(f"{PROG}: skipping the plot: {e}")
            except ValueError as e:
                raise _Exit(2, f"{PROG}: error: {e}") from None
    except _Exit as e:
        _log(str(e))
        return e.code
    print(json.dumps(rows) if args.json else _table(rows), flush=True)
    return 0
