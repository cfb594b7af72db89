"""``fnn train``: the main job.

Loads Fashion-MNIST or MNIST, splits off a validation set, standardizes with statistics of
the training split only, trains with ``fnn.train.fit``, evaluates on the test set and writes
``model.fnn`` (the trained parameters, for ``fnn predict`` / ``fnn evaluate``), ``checkpoint.fnn``
(the resumable training state), ``history.jsonl``, ``curves.png``, ``confusion.png``,
``results.json`` and ``report.html`` (everything on one self-contained page, ``fnn.report``)
under ``--out``. The model summary (``fnn.summary``) is logged at the start.

Standard output carries the per-epoch table and the test summary; with ``--json`` the test
summary moves to stderr and stdout ends with one JSON line. Progress bars, data-loading
messages and warnings go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fnn.cli._args import (
    CLASS_NAMES,
    GRAD_MODES,
    OPTIMIZERS,
    _Exit,
    _log,
    _positive_float,
    _positive_int,
    add_data_arguments,
    format_confusion,
)
from fnn.cli._losses import DEFAULT, LOSSES, loss_fn, targets, with_output
from fnn.cli._recipe import (
    add_recipe_arguments,
    augmented,
    averaged_figures,
    batch_mixer,
    ema_optimizer,
    ema_state,
    learning_rate,
    swa_callback,
    training_loss,
)
from fnn.cli._trained import (
    HISTORY_FILE,
    MODEL_FILE,
    RESULTS_FILE,
    add_tta_argument,
    build_model,
    load_data,
    run_metadata,
    tta_model,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fnn train`` to the subcommand parsers ``sub``."""
    t = sub.add_parser(
        "train", help="train a model on Fashion-MNIST or MNIST and evaluate it on the test set",
        description="Train a model on Fashion-MNIST or MNIST, evaluate it on the test set and save "
                    "model.fnn (for fnn predict and fnn evaluate), checkpoint.fnn (to --resume), "
                    "history.jsonl, curves.png, confusion.png, results.json and report.html under --out.")
    add_data_arguments(t)
    t.add_argument("--epochs", type=_positive_int, default=10, help="training epochs (default: %(default)s)")
    t.add_argument("--batch-size", type=_positive_int, default=128,
                   help="examples per step (default: %(default)s)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                   help="update rule (fnn.optim) (default: %(default)s)")
    t.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate (default: %(default)s)")
    t.add_argument("--grad-mode", choices=GRAD_MODES, default="auto",
                   help="gradients: 'auto' is custom_vjp (the layers' own backward as VJP) on CPU and "
                        "GPU, autodiff on TPU (default: %(default)s)")
    t.add_argument("--compute-dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="dtype of the forward and backward passes; parameters, optimizer state and loss "
                        "stay float32 (fnn.precision) (default: %(default)s)")
    t.add_argument("--out", type=Path, default=None,
                   help="output directory (default runs/<model>-<timestamp>)")
    t.add_argument("--json", action="store_true", help="end stdout with one JSON line of test results")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--per-step", action="store_true",
                   help="one jitted call per step instead of one per epoch (debugging)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="coupled L2 weight decay (optim chain)")
    t.add_argument("--clip-norm", type=_positive_float, default=None,
                   help="clip gradients to this global norm")
    t.add_argument("--plateau", type=_positive_int, default=None, metavar="PATIENCE",
                   help="halve the learning rate when the validation loss stalls for PATIENCE epochs")
    t.add_argument("--early-stopping", type=_positive_int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without improvement; keep the best epoch")
    t.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.fnn if it exists")
    t.add_argument("--record-every", type=_positive_int, default=None, metavar="N",
                   help="record per-layer gradient norms and update ratios every N steps "
                        "(steps.jsonl and grad_norms.png under --out)")
    t.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                   help="also write TensorBoard event files into DIR: the per-epoch table's scalars, and the "
                        "per-step ones with --record-every (view: pip install 'fnn[tensorboard]'; "
                        "tensorboard --logdir DIR)")
    add_recipe_arguments(t)
    t.add_argument("--loss", choices=tuple(LOSSES), default=DEFAULT,
                   help="the loss (fnn.losses); cross_entropy and binary_cross_entropy append a Softmax or "
                        "Sigmoid layer, the sigmoid, binary and regression losses train on one-hot targets "
                        "(default: %(default)s)")
    add_tta_argument(t)
    t.set_defaults(run=run)


def _build_optimizer(args, learning_rate):
    from fnn import optim
    rule = getattr(optim, args.optimizer)(learning_rate)
    parts = []
    if args.clip_norm is not None:
        parts.append(optim.clip_by_global_norm(args.clip_norm))
    if args.weight_decay:
        parts.append(optim.add_weight_decay(args.weight_decay))
    return optim.chain(*parts, rule) if parts else rule


def _callbacks(args, out: Path, metadata: dict, learning_rate) -> list:
    from fnn.train import (
        Checkpoint,
        EarlyStopping,
        LearningRateLog,
        Progress,
        ReduceLROnPlateau,
        StepRecorder,
        TensorBoard,
        echo,
        table_row,
    )

    def print_row(epoch, ts, record):
        echo(table_row(record))

    progress = False if args.no_progress else None  # None: a bar only when stderr is a terminal
    callbacks = [print_row, LearningRateLog(learning_rate), Progress(progress),
                 Checkpoint(out, resume=args.resume, verbose=not args.no_progress, metadata=metadata)]
    callbacks += [ReduceLROnPlateau(0.5, patience=args.plateau)] if args.plateau else []
    callbacks += [EarlyStopping(args.early_stopping)] if args.early_stopping else []
    callbacks += [StepRecorder(args.record_every)] if args.record_every else []
    callbacks += [TensorBoard(args.tensorboard)] if args.tensorboard is not None else []
    return callbacks


def _write_outputs(args, out: Path, ds, history, result, point) -> list[str]:
    """history.jsonl (steps.jsonl) and the plots; returns the names of the files written."""
    history.save_jsonl(out / HISTORY_FILE)
    written = [HISTORY_FILE]
    if history.steps:
        history.save_steps_jsonl(out / "steps.jsonl")
        written.append("steps.jsonl")
    if len(history):
        try:
            from fnn.plot import plot_confusion, plot_grad_norms, plot_history
        except ImportError as e:
            _log(f"fnn train: skipping plots: {e}")
            return written
        title = f"{args.model} on {ds.name}"
        plot_history(history, out / "curves.png", title=title, points=point)
        plot_confusion(result["confusion"], CLASS_NAMES[ds.name], out / "confusion.png",
                       title=f"{title}: test accuracy {result['accuracy']:.4f}")
        written += ["curves.png", "confusion.png"]
        if history.steps:
            plot_grad_norms(history, out / "grad_norms.png", title=f"{title}: per-layer gradients")
            written.append("grad_norms.png")
    return written


def _report(args, out: Path, ds, history, result, wall0: float) -> dict:
    train_seconds = float(sum(history["seconds"]))
    images = float(sum(r["images_per_second"] * r["seconds"] for r in history.records
                       if r["images_per_second"] is not None))
    return {
        "test_accuracy": result["accuracy"], "test_loss": result["loss"], "train_seconds": train_seconds,
        "images_per_second": images / train_seconds if train_seconds > 0 else None, "epochs": len(history),
        "val_accuracy": history.records[-1]["val_accuracy"] if len(history) else None,
        "compile_seconds": history.compile_seconds, "wall_seconds": time.perf_counter() - wall0,
        "model": args.model, "model_args": args.model_args, "dataset": ds.name, "sample_data": ds.is_sample,
        "grad_mode": args.grad_mode,
        "compute_dtype": args.compute_dtype, "stop_reason": history.stop_reason, "out": str(out),
        "augment": args.augment, "schedule": args.schedule, "label_smoothing": args.label_smoothing,
        "mixup": args.mixup, "cutmix": args.cutmix, "tta": args.tta,
    }


def _tta_figures(tta, args, ts, val, test) -> dict:
    """Validation and test figures of the trained model with --tta's views (``fnn.layers.with_tta``),
    to report beside the plain ones: the validation figure is the one to decide by."""
    from fnn.train import echo, evaluate

    loss = loss_fn(args.loss)
    t = evaluate(tta, loss, ts.params, ts.state, *test)
    v = None if val is None else evaluate(tta, loss, ts.params, ts.state, *val)["accuracy"]
    echo(f"test with test-time augmentation {args.tta}: loss {t['loss']:.4f}, accuracy {t['accuracy']:.4f}"
         + ("" if v is None else f" (validation accuracy {v:.4f})"), file=sys.stderr if args.json else sys.stdout)
    return {"val_accuracy_tta": v, "test_accuracy_tta": t["accuracy"], "test_loss_tta": t["loss"]}


def run(args: argparse.Namespace) -> int:
    """``fnn train``: returns the exit status."""
    from fnn import precision
    from fnn.checkpoint import save_params
    from fnn.diagnostics import summary
    from fnn.report import write_report
    from fnn.train import echo, evaluate, fit, table_header

    wall0 = time.perf_counter()
    try:
        ds, (x_train, y_train), val, (x_test, y_test), fit_key, scaler = load_data(args)
        lr = learning_rate(args, len(x_train) // args.batch_size)
        num_classes = len(CLASS_NAMES[ds.name])
        model = with_output(build_model(args.model, tuple(x_train.shape[1:]), num_classes, args.model_args),
                            args.loss)
        y_train, y_test = targets(args.loss, y_train, num_classes), targets(args.loss, y_test, num_classes)
        val = None if val is None else (val[0], targets(args.loss, val[1], num_classes))
        # Mixed precision wraps the trained model; the test set is evaluated in float32.
        trained = model if args.compute_dtype == "float32" else precision.apply_policy(model, args.compute_dtype)
        trained = augmented(trained, args, x_train)
        loss = training_loss(args)
        mix = batch_mixer(args, num_classes)
        tta = tta_model("fnn train", model, args.tta, scaler, tuple(x_train.shape[1:]))
    except _Exit as e:
        _log(str(e))
        return e.code
    out = args.out or Path("runs") / f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    model_summary = summary(model, tuple(x_train.shape[1:]))
    metadata = run_metadata(args.model, x_train.shape[1:], CLASS_NAMES[ds.name], ds.name, scaler, loss=args.loss,
                            model_args=args.model_args,
                            split={"seed": args.seed, "val_fraction": args.val_fraction, "limit": args.limit})
    mixing = f", {mix.kind} {mix.alpha:g}" if mix else ""
    _log(f"fnn train: {args.model} on {ds.name} ({'embedded sample' if ds.is_sample else ds.source}): "
         f"{len(x_train)} train, {0 if val is None else len(val[0])} validation, {len(x_test)} test "
         f"images; {args.optimizer} lr={args.lr} ({args.schedule}), batch {args.batch_size}, {args.epochs} epochs, "
         f"augment {args.augment}{mixing}, loss {loss.name}; output in {out}")
    _log(str(model_summary))
    echo(table_header())
    try:
        ts, history = fit(trained, loss, ema_optimizer(args, _build_optimizer(args, lr)), (x_train, y_train),
                          epochs=args.epochs, batch_size=args.batch_size, key=fit_key, val_data=val,
                          fused=not args.per_step, grad_mode=args.grad_mode,
                          callbacks=_callbacks(args, out, metadata, lr) + ([mix] if mix else []) + swa_callback(args))
    except ValueError as e:
        _log(f"fnn train: error: {e}")
        return 2
    except KeyboardInterrupt:
        again = "run the same command again" if args.resume else "run the same command with --resume"
        _log(f"fnn train: interrupted; {out / 'checkpoint.fnn'} holds the last finished epoch: {again} to continue")
        return 130
    if history.stop_reason:
        _log(f"fnn train: {history.stop_reason}")

    ts = ema_state(args, trained, ts, x_train)
    averaged, point = averaged_figures(args, model, ts, val, history)
    result = evaluate(model, loss_fn(args.loss), ts.params, ts.state, x_test, y_test)
    summary_file = sys.stderr if args.json else sys.stdout
    echo(f"test: loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f} "
         f"({len(x_test)} images)", file=summary_file)
    echo(format_confusion(result["confusion"], CLASS_NAMES[ds.name]), file=summary_file)
    save_params(out / MODEL_FILE, ts.params, ts.state,
                metadata={**metadata, "test_accuracy": result["accuracy"], "test_loss": result["loss"]})
    written = [MODEL_FILE] + _write_outputs(args, out, ds, history, result, point)
    report = {**_report(args, out, ds, history, result, wall0), **averaged,
              **(_tta_figures(tta, args, ts, val, (x_test, y_test)) if tta is not None else {})}
    (out / RESULTS_FILE).write_text(json.dumps(report, indent=2) + "\n")
    written.append(RESULTS_FILE)
    write_report(out / "report.html", history, {**report, "confusion": result["confusion"]}, summary=model_summary,
                 settings={k: str(v) for k, v in vars(args).items() if k not in ("run", "command")},
                 class_names=CLASS_NAMES[ds.name], title=f"fnn train: {args.model} on {ds.name}")
    written.append("report.html")
    # The checkpoint is written after each finished epoch: a run stopped in its first has none.
    listed = [name for name in ("checkpoint.fnn", *written) if (out / name).exists()]
    _log(f"fnn train: wrote {', '.join(listed)} in {out}")
    if args.tensorboard is not None:
        _log(f"fnn train: TensorBoard event files in {args.tensorboard} "
             f"(view: tensorboard --logdir {args.tensorboard})")
    if args.json:
        sys.stdout.flush()
        print(json.dumps(report), flush=True)
    return 0
