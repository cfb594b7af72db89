"""``fnn train``: the main job.

Loads Fashion-MNIST or MNIST, splits off a validation set, standardizes with statistics of
the training split only, trains with ``fnn.train.fit``, evaluates on the test set and writes
``checkpoint.fnn``, ``history.jsonl``, ``curves.png`` and ``confusion.png`` under ``--out``.

Standard output carries the per-epoch table and the test summary; with ``--json`` the test
summary moves to stderr and stdout ends with one JSON line. Progress bars, data-loading
messages and warnings go to stderr.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from fnn.cli._args import (
    CLASS_NAMES,
    DATASETS,
    GRAD_MODES,
    MODELS,
    OPTIMIZERS,
    _Exit,
    _fraction,
    _log,
    _nonnegative_float,
    _positive_float,
    _positive_int,
    format_confusion,
)


def register(sub) -> None:
    """Add ``fnn train`` to the subcommand parsers ``sub``."""
    t = sub.add_parser(
        "train", help="train a model on Fashion-MNIST or MNIST and evaluate it on the test set",
        description="Train a model on Fashion-MNIST or MNIST, evaluate it on the test set and save "
                    "checkpoint.fnn, history.jsonl, curves.png and confusion.png under --out.")
    t.add_argument("--model", choices=MODELS, default="simple_cnn",
                   help="architecture (fnn.models) (default: %(default)s)")
    t.add_argument("--dataset", choices=DATASETS, default="fashion-mnist",
                   help="data set (default: %(default)s)")
    t.add_argument("--epochs", type=_positive_int, default=10, help="training epochs (default: %(default)s)")
    t.add_argument("--batch-size", type=_positive_int, default=128,
                   help="examples per step (default: %(default)s)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                   help="update rule (fnn.optim) (default: %(default)s)")
    t.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate (default: %(default)s)")
    t.add_argument("--grad-mode", choices=GRAD_MODES, default="auto",
                   help="gradients: 'auto' is custom_vjp (the layers' own backward as VJP) on CPU, "
                        "autodiff on GPU/TPU (default: %(default)s)")
    t.add_argument("--compute-dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="dtype of the forward and backward passes; parameters, optimizer state and loss "
                        "stay float32 (fnn.precision) (default: %(default)s)")
    t.add_argument("--val-fraction", type=_fraction, default=0.1,
                   help="fraction of the training images held out for validation, 0 for none "
                        "(default: %(default)s)")
    t.add_argument("--seed", type=int, default=0,
                   help="PRNG seed (split, init, shuffles, dropout) (default: %(default)s)")
    t.add_argument("--out", type=Path, default=None,
                   help="output directory (default runs/<model>-<timestamp>)")
    t.add_argument("--json", action="store_true", help="end stdout with one JSON line of test results")
    t.add_argument("--limit", type=_positive_int, default=None,
                   help="use only the first N training images (smoke runs)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--per-step", action="store_true",
                   help="one jitted call per step instead of one per epoch (debugging)")
    t.add_argument("--data-dir", type=Path, default=None, help="directory with the four IDX files")
    t.add_argument("--no-download", action="store_true", help="never try to download the data")
    t.add_argument("--standardize", choices=("global", "channel", "pixel"), default="global",
                   help="Standardizer statistics (fit on the training split only) (default: %(default)s)")
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
    t.add_argument("--augment", default="none", metavar="LIST",
                   help="on-device augmentation in training only, a comma-separated list of crop (random "
                        "crop after --crop-padding pixels of black padding), flip (horizontal, p=0.5), erase "
                        "(random erasing, p=0.5) (default: %(default)s)")
    t.add_argument("--crop-padding", type=_positive_int, default=2, metavar="PIXELS",
                   help="padding of --augment crop: images move by up to this many pixels (default: %(default)s)")
    t.add_argument("--schedule", choices=("constant", "cosine", "onecycle"), default="constant",
                   help="learning-rate schedule over all epochs x steps, peaking at --lr: cosine decays to 0 "
                        "after the warmup; onecycle is torch's OneCycleLR (from lr/25 up to lr, then down to "
                        "lr/25e4) (default: %(default)s)")
    t.add_argument("--warmup-epochs", type=_nonnegative_float, default=0.0, metavar="N",
                   help="linear warmup from 0 over the first N epochs (onecycle: its rising phase, "
                        "default 30%% of the steps) (default: %(default)s)")
    t.set_defaults(run=run)


def _learning_rate(args, steps_per_epoch: int):
    """--lr, or the schedule of --schedule/--warmup-epochs over epochs x steps_per_epoch steps."""
    from fnn import optim
    total, warmup = args.epochs * steps_per_epoch, round(args.warmup_epochs * steps_per_epoch)
    if warmup >= total:
        raise _Exit(2, f"fnn train: error: --warmup-epochs {args.warmup_epochs:g} ({warmup} steps) must be "
                       f"shorter than the {total} steps of --epochs {args.epochs}")
    if args.schedule == "onecycle":
        try:
            return optim.one_cycle(total, args.lr, pct_start=warmup / total if warmup else 0.3)
        except ValueError as e:
            raise _Exit(2, f"fnn train: error: {e}") from None
    if args.schedule == "cosine":
        return optim.warmup_cosine_decay(0.0, args.lr, warmup, total)
    return optim.linear_warmup(0.0, args.lr, warmup) if warmup else args.lr


def _build_optimizer(args, learning_rate):
    from fnn import optim
    rule = getattr(optim, args.optimizer)(learning_rate)
    parts = []
    if args.clip_norm is not None:
        parts.append(optim.clip_by_global_norm(args.clip_norm))
    if args.weight_decay:
        parts.append(optim.add_weight_decay(args.weight_decay))
    return optim.chain(*parts, rule) if parts else rule


def _build_model(name: str, input_shape: tuple[int, ...], num_classes: int):
    """The named fnn.models network; mlp gets a Flatten in front and two hidden layers of 256."""
    try:
        from fnn import models
    except ImportError as e:
        raise SystemExit(f"fnn train: error: fnn.models is not available ({e})") from None
    if not hasattr(models, name):
        raise SystemExit(f"fnn train: error: fnn.models has no model {name!r} in this version")
    if name == "mlp":
        from fnn.diagnostics import sublayers
        from fnn.layers.combinators import serial
        from fnn.layers.reshape import Flatten
        # One flat serial, so per-layer diagnostics (--record-every) see each Dense layer.
        return serial(Flatten(), *sublayers(models.mlp((math.prod(input_shape), 256, 256, num_classes))))
    return getattr(models, name)(num_classes=num_classes, input_shape=input_shape)


def _load_data(args):
    """(ds, train, val or None, test, fit_key): split, then standardized with training statistics only."""
    import jax

    from fnn import data

    loader = data.load_fashion_mnist if args.dataset == "fashion-mnist" else data.load_mnist
    try:
        ds = loader(args.data_dir, download=not args.no_download, verbose=True)
    except (FileNotFoundError, ValueError) as e:
        raise _Exit(1, f"fnn train: error: {e}") from None
    (x_train, y_train), (x_test, y_test) = ds.train, ds.test
    if args.limit is not None:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    split_key, fit_key = jax.random.split(jax.random.key(args.seed))
    val = None
    if args.val_fraction > 0:
        try:
            (x_train, y_train), val = data.train_val_split(x_train, y_train, args.val_fraction, key=split_key)
        except ValueError as e:
            raise _Exit(2, f"fnn train: error: {e}") from None
    scaler = data.Standardizer.fit(x_train, per=args.standardize)
    if val is not None:
        val = (scaler.apply(val[0]), val[1])
    if args.batch_size > len(x_train):
        raise _Exit(2, f"fnn train: error: --batch-size {args.batch_size} is larger than the {len(x_train)} "
                       f"training images")
    return ds, (scaler.apply(x_train), y_train), val, (scaler.apply(x_test), y_test), fit_key


def _augmented(model, args, x_train):
    """The model behind the --augment layers (none: the model itself); crops pad with the darkest
    standardized value, black under --standardize global."""
    import jax

    from fnn.layers.augment import augmentations, with_augmentation
    try:
        layers = augmentations(args.augment, crop_padding=args.crop_padding, fill=float(x_train.min()))
        for layer in layers:  # their shape checks, before any output is written
            layer.init(jax.random.key(0), tuple(x_train.shape[1:]))
        return with_augmentation(model, *layers) if layers else model
    except ValueError as e:
        raise _Exit(2, f"fnn train: error: --augment: {e}") from None


def _callbacks(args, out: Path, learning_rate) -> list:
    from fnn.train import (
        Checkpoint,
        EarlyStopping,
        LearningRateLog,
        Progress,
        ReduceLROnPlateau,
        StepRecorder,
        echo,
        table_row,
    )

    def print_row(epoch, ts, record):
        echo(table_row(record))

    progress = False if args.no_progress else None  # None: a bar only when stderr is a terminal
    callbacks = [print_row, LearningRateLog(learning_rate), Progress(progress),
                 Checkpoint(out, resume=args.resume, verbose=not args.no_progress)]
    callbacks += [ReduceLROnPlateau(0.5, patience=args.plateau)] if args.plateau else []
    callbacks += [EarlyStopping(args.early_stopping)] if args.early_stopping else []
    callbacks += [StepRecorder(args.record_every)] if args.record_every else []
    return callbacks


def _write_outputs(args, out: Path, ds, history, result) -> list[str]:
    """history.jsonl (steps.jsonl) and the plots; returns the names of the files written."""
    history.save_jsonl(out / "history.jsonl")
    written = ["history.jsonl"]
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
        plot_history(history, out / "curves.png", title=title)
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
        "model": args.model, "dataset": ds.name, "sample_data": ds.is_sample, "grad_mode": args.grad_mode,
        "compute_dtype": args.compute_dtype, "stop_reason": history.stop_reason, "out": str(out),
        "augment": args.augment, "schedule": args.schedule,
    }


def run(args) -> int:
    """``fnn train``: returns the exit status."""
    from fnn import losses, precision
    from fnn.train import echo, evaluate, fit, table_header

    wall0 = time.perf_counter()
    try:
        ds, (x_train, y_train), val, (x_test, y_test), fit_key = _load_data(args)
        learning_rate = _learning_rate(args, len(x_train) // args.batch_size)
        model = _build_model(args.model, tuple(x_train.shape[1:]), len(CLASS_NAMES[ds.name]))
        # Mixed precision wraps the trained model; the test set is evaluated in float32.
        trained = model if args.compute_dtype == "float32" else precision.apply_policy(model, args.compute_dtype)
        trained = _augmented(trained, args, x_train)
    except _Exit as e:
        _log(str(e))
        return e.code
    out = args.out or Path("runs") / f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    _log(f"fnn train: {args.model} on {ds.name} ({'embedded sample' if ds.is_sample else ds.source}): "
         f"{len(x_train)} train, {0 if val is None else len(val[0])} validation, {len(x_test)} test "
         f"images; {args.optimizer} lr={args.lr} ({args.schedule}), batch {args.batch_size}, {args.epochs} epochs, "
         f"augment {args.augment}; "
         f"output in {out}")
    echo(table_header())
    try:
        ts, history = fit(trained, losses.softmax_cross_entropy, _build_optimizer(args, learning_rate),
                          (x_train, y_train),
                          epochs=args.epochs, batch_size=args.batch_size, key=fit_key, val_data=val,
                          fused=not args.per_step, grad_mode=args.grad_mode,
                          callbacks=_callbacks(args, out, learning_rate))
    except ValueError as e:
        _log(f"fnn train: error: {e}")
        return 2
    if history.stop_reason:
        _log(f"fnn train: {history.stop_reason}")

    result = evaluate(model, losses.softmax_cross_entropy, ts.params, ts.state, x_test, y_test)
    summary_file = sys.stderr if args.json else sys.stdout
    echo(f"test: loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f} "
         f"({len(x_test)} images)", file=summary_file)
    echo(format_confusion(result["confusion"], CLASS_NAMES[ds.name]), file=summary_file)
    written = _write_outputs(args, out, ds, history, result)
    report = _report(args, out, ds, history, result, wall0)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    _log(f"fnn train: wrote {out / 'checkpoint.fnn'}, {', '.join(written)}, results.json")
    if args.json:
        sys.stdout.flush()
        print(json.dumps(report), flush=True)
    return 0
