"""What the ``fnn`` subcommands share: argument types, dataset names, logging, the exit signal."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MODELS = ("simple_cnn", "lenet5", "alexnet", "vgg", "resnet", "bn_cnn", "mlp")
DATASETS = ("fashion-mnist", "mnist")
OPTIMIZERS = ("adam", "sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adamw", "rprop")
GRAD_MODES = ("auto", "autodiff", "manual", "custom_vjp")

CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(d) for d in range(10)),
}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def _log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


class _Exit(Exception):
    """Stop `fnn train` with this exit code after logging the message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def add_data_arguments(p) -> None:
    """The options that choose the model and the data and prepare it (``_build_model`` and
    ``_load_data`` read them), on parser `p`."""
    p.add_argument("--model", choices=MODELS, default="simple_cnn",
                   help="architecture (fnn.models) (default: %(default)s)")
    p.add_argument("--dataset", choices=DATASETS, default="fashion-mnist", help="data set (default: %(default)s)")
    p.add_argument("--val-fraction", type=_fraction, default=0.1,
                   help="fraction of the training images held out for validation, 0 for none "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="PRNG seed (split, init, shuffles, dropout) (default: %(default)s)")
    p.add_argument("--limit", type=_positive_int, default=None,
                   help="use only the first N training images (smoke runs)")
    p.add_argument("--data-dir", type=Path, default=None, help="directory with the four IDX files")
    p.add_argument("--no-download", action="store_true", help="never try to download the data")
    p.add_argument("--standardize", choices=("global", "channel", "pixel"), default="global",
                   help="Standardizer statistics (fit on the training split only) (default: %(default)s)")


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
        return serial(Flatten(), *sublayers(models.mlp((math.prod(input_shape), 256, 256, num_classes))))  # type: ignore[misc]  # mlp is a serial
    return getattr(models, name)(num_classes=num_classes, input_shape=input_shape)


def _load_data(args):
    """(ds, train, val or None, test, fit_key): split, then standardized with training statistics only."""
    import jax

    from fnn import data

    loader = data.load_fashion_mnist if args.dataset == "fashion-mnist" else data.load_mnist
    try:
        ds = loader(args.data_dir, download=not args.no_download, verbose=True)
    except (FileNotFoundError, ValueError) as e:
        raise _Exit(1, f"fnn {args.command}: error: {e}") from None
    (x_train, y_train), (x_test, y_test) = ds.train, ds.test
    if args.limit is not None:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    split_key, fit_key = jax.random.split(jax.random.key(args.seed))
    val = None
    if args.val_fraction > 0:
        try:
            (x_train, y_train), val = data.train_val_split(x_train, y_train, args.val_fraction, key=split_key)
        except ValueError as e:
            raise _Exit(2, f"fnn {args.command}: error: {e}") from None
    scaler = data.Standardizer.fit(x_train, per=args.standardize)
    if val is not None:
        val = (scaler.apply(val[0]), val[1])
    if args.batch_size > len(x_train):
        raise _Exit(2, f"fnn {args.command}: error: --batch-size {args.batch_size} is larger than the {len(x_train)} "
                       f"training images")
    return ds, (scaler.apply(x_train), y_train), val, (scaler.apply(x_test), y_test), fit_key


def format_confusion(conf: np.ndarray, class_names: Sequence[str]) -> str:
    """A compact text confusion matrix: rows = true class, columns = predicted class."""
    short = [c.replace("/", "")[:5] for c in class_names]
    width = max(5, len(str(int(conf.max()))))
    name_w = max(len(c) for c in class_names)
    lines = ["confusion matrix (rows: true class, columns: predicted class)",
             " " * name_w + " " + " ".join(f"{s:>{width}}" for s in short) + f" {'acc':>6}"]
    for i, (name, row) in enumerate(zip(class_names, conf, strict=True)):
        total = int(row.sum())
        acc = row[i] / total if total else float("nan")
        lines.append(f"{name:>{name_w}} " + " ".join(f"{int(v):>{width}}" for v in row) + f" {acc:>6.3f}")
    return "\n".join(lines)
