"""What the ``fnn`` subcommands share: argument types, dataset names, logging, the exit signal."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("simple_cnn", "lenet5", "alexnet", "vgg", "resnet", "bn_cnn", "bn_vgg", "bn_vgg_wide", "mlp")
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


def _float(text: str, ok, expected: str, unparsable: str = "a number") -> float:
    """float(text) if ok(value), else an argparse error saying what was `expected`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {unparsable}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
    return value


def _positive_float(text: str) -> float:
    return _float(text, lambda v: v > 0 and math.isfinite(v), "a finite number > 0")


def _nonnegative_float(text: str) -> float:
    return _float(text, lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0")


def _fraction(text: str) -> float:
    return _float(text, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)", unparsable="a number in [0, 1)")


def _log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def _tuples(value: Any) -> Any:
    """JSON arrays as tuples, all the way down (fnn.models takes sequences; tuples hash)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _json_object(text: str) -> dict:
    """--model-args: a JSON object of keyword arguments, arrays as tuples."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of keyword arguments, got {text!r}")
    return _tuples(value)


class _Exit(Exception):
    """Stop `fnn train` with this exit code after logging the message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def add_data_arguments(p) -> None:
    """The options that choose the model and the data and prepare it (``fnn.cli._trained``'s
    ``build_model`` and ``load_data`` read them), on parser `p`."""
    p.add_argument("--model", choices=MODELS, default="simple_cnn",
                   help="architecture (fnn.models) (default: %(default)s)")
    p.add_argument("--model-args", type=_json_object, default=None, metavar="JSON",
                   help="keyword arguments of the fnn.models builder as a JSON object, e.g. "
                        "'{\"stages\": [32, 64, 128], \"blocks_per_stage\": 3}' for resnet; saved with the model "
                        "(default: the builder's defaults)")
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
