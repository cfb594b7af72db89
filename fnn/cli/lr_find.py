"""``fnn lr-find``: the learning-rate range test on Fashion-MNIST or MNIST.

Loads and prepares the training split exactly as ``fnn train`` does (same options, same
validation hold-out and standardization), sweeps the learning rate with
``fnn.diagnostics.lr_find`` and writes ``lr_find.png`` (the loss against the learning rate,
the suggestion marked) and ``lr_find.json`` (the suggestion, both rules and the curve) under
``--out``. Standard output gets the suggestion (with ``--json``: one JSON line at the end).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fnn.cli._args import (
    GRAD_MODES,
    OPTIMIZERS,
    _Exit,
    _fraction,
    _log,
    _positive_float,
    _positive_int,
    add_data_arguments,
)
from fnn.cli._trained import build_model, load_data

RATE_OPTIMIZERS = tuple(o for o in OPTIMIZERS if o != "rprop")  # Rprop adapts its own step sizes


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fnn lr-find`` to the subcommand parsers ``sub``."""
    p = sub.add_parser(
        "lr-find", help="learning-rate range test: sweep the learning rate and suggest one",
        description="Train for a few hundred steps while the learning rate grows exponentially, stop when "
                    "the loss diverges, and suggest a learning rate; writes lr_find.png and lr_find.json "
                    "under --out.")
    add_data_arguments(p)
    p.add_argument("--batch-size", type=_positive_int, default=128, help="examples per step (default: %(default)s)")
    p.add_argument("--optimizer", choices=RATE_OPTIMIZERS, default="adam",
                   help="update rule (fnn.optim) (default: %(default)s)")
    p.add_argument("--min-lr", type=_positive_float, default=1e-7, help="first learning rate (default: %(default)s)")
    p.add_argument("--max-lr", type=_positive_float, default=10.0, help="last learning rate (default: %(default)s)")
    p.add_argument("--steps", type=_positive_int, default=200, help="steps of the sweep (default: %(default)s)")
    p.add_argument("--smoothing", type=_fraction, default=0.9,
                   help="β of the loss's moving average (default: %(default)s)")
    p.add_argument("--rule", choices=("min/10", "steepest"), default="min/10",
                   help="how the suggestion is chosen: a tenth of the rate at the smoothed loss's minimum, "
                        "or the steepest descent of the smoothed loss (default: %(default)s)")
    p.add_argument("--grad-mode", choices=GRAD_MODES, default="auto", help="gradients (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default runs/lr-find-<model>-<timestamp>)")
    p.add_argument("--json", action="store_true", help="end stdout with one JSON line: the suggestion and both rules")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``fnn lr-find``: returns the exit status."""
    from fnn import losses, optim
    from fnn.cli._args import CLASS_NAMES
    from fnn.diagnostics import lr_find

    try:
        ds, (x_train, y_train), _, _, key, _ = load_data(args)
    except _Exit as e:
        _log(str(e))
        return e.code
    out = args.out or Path("runs") / f"lr-find-{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    try:
        model = build_model(args.model, tuple(x_train.shape[1:]), len(CLASS_NAMES[ds.name]), args.model_args)
    except _Exit as e:
        _log(str(e))
        return e.code
    _log(f"fnn lr-find: {args.model} on {ds.name} ({len(x_train)} images), {args.optimizer}, "
         f"lr from {args.min_lr:g} to {args.max_lr:g} in {args.steps} steps of batch {args.batch_size}")
    try:
        result = lr_find(model, losses.softmax_cross_entropy, getattr(optim, args.optimizer), (x_train, y_train),
                         batch_size=args.batch_size, key=key, min_lr=args.min_lr, max_lr=args.max_lr,
                         num_steps=args.steps, smoothing=args.smoothing, rule=args.rule, grad_mode=args.grad_mode)
    except ValueError as e:
        _log(f"fnn lr-find: error: {e}")
        return 2
    info = {k: v for k, v in result.to_dict().items() if k not in ("lrs", "losses", "smoothed")}
    info |= {"model": args.model, "dataset": ds.name, "optimizer": args.optimizer, "batch_size": args.batch_size}
    (out / "lr_find.json").write_text(json.dumps({**info, **result.to_dict()}, indent=2) + "\n")
    written = ["lr_find.json"]
    try:
        from fnn.plot import plot_lr_find
        plot_lr_find(result, out / "lr_find.png", title=f"{args.model}, {args.optimizer}: suggested lr "
                                                        f"{result.suggestion:.2g} ({result.rule})")
        written.append("lr_find.png")
    except ImportError as e:
        _log(f"fnn lr-find: skipping the plot: {e}")
    stopped = f"stopped at lr {result.lrs[-1]:.3g} (the loss diverged)" if result.diverged else "no divergence"
    summary_file = sys.stderr if args.json else sys.stdout
    print(f"suggested learning rate: {result.suggestion:.3g} ({result.rule}); steepest descent at "
          f"{result.lr_steepest:.3g}, smoothed minimum at {result.lr_min:.3g}; {len(result.lrs)} steps, {stopped}",
          file=summary_file, flush=True)
    _log(f"fnn lr-find: wrote {', '.join(str(out / w) for w in written)}")
    if args.json:
        print(json.dumps(info), flush=True)
    return 0
