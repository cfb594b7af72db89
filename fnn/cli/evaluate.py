"""``fnn evaluate``: test-set loss, accuracy and confusion matrix of a model trained by ``fnn train``.

``--split val`` scores the validation images ``fnn train`` held out instead (the split is
recorded in the checkpoint). With ``--tta flip,shift`` the model's outputs are averaged over views of each image
(``fnn.layers.with_tta``); the figures without it are reported beside them.

Everything the evaluation needs (model, parameters, Standardizer statistics, class names) is
read from the checkpoint; the test split is standardized with the training statistics stored
there, as ``fnn train`` did.
"""

from __future__ import annotations

import argparse
import json

from fnn.cli._args import _Exit, _fraction, _log, _positive_int, format_confusion
from fnn.cli._losses import loss_fn, targets
from fnn.cli._trained import (
    add_checkpoint_arguments,
    add_tta_argument,
    load_dataset,
    load_trained,
    loss_name,
    split_training,
    tta_model,
)

PROG = "fnn evaluate"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fnn evaluate`` to the subcommand parsers ``sub``."""
    p = sub.add_parser(
        "evaluate", help="test-set loss, accuracy and confusion matrix of a model trained by fnn train",
        description="Evaluate a model trained by fnn train on the test split of its data set (or --dataset): "
                    "loss, accuracy and confusion matrix, from the checkpoint alone.")
    add_checkpoint_arguments(p)
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="evaluate only the first N images of the split (smoke runs)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="the test split, or the validation images fnn train held out (its seed, --val-fraction "
                        "and --limit are read from the checkpoint) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None,
                   help="with --split val: fnn train's --seed, for checkpoints that do not record it")
    p.add_argument("--val-fraction", type=_fraction, default=None,
                   help="with --split val: fnn train's --val-fraction, for checkpoints that do not record it")
    add_tta_argument(p)
    p.set_defaults(run=run)


def _recorded_split(args, trained) -> dict:
    """``split_training``'s arguments for --split val: fnn train's split, from the checkpoint's
    metadata (or --seed / --val-fraction), checked before any data is loaded."""
    recorded = trained.metadata.get("split") or {}
    if args.dataset is not None and args.dataset != trained.metadata.get("dataset"):
        raise _Exit(2, f"{PROG}: error: --split val: the model was trained on {trained.metadata.get('dataset')}, "
                       f"not {args.dataset}")
    seed = args.seed if args.seed is not None else recorded.get("seed")
    fraction = args.val_fraction if args.val_fraction is not None else recorded.get("val_fraction")
    if seed is None or fraction is None:
        raise _Exit(2, f"{PROG}: error: --split val: {trained.path} does not record fnn train's split (older "
                       f"fnn); pass the --seed and --val-fraction it was trained with")
    if not fraction:
        raise _Exit(2, f"{PROG}: error: --split val: the model was trained without a validation split "
                       f"(--val-fraction 0)")
    return {"seed": int(seed), "val_fraction": float(fraction), "limit": recorded.get("limit")}


def run(args: argparse.Namespace) -> int:
    """``fnn evaluate``: returns the exit status."""
    from fnn.train import evaluate

    try:
        trained = load_trained(PROG, args.checkpoint)
        tta = tta_model(PROG, trained.model, args.tta, trained.scaler, trained.input_shape)
        if args.split == "test" and (args.seed is not None or args.val_fraction is not None):
            raise _Exit(2, f"{PROG}: error: --seed and --val-fraction find fnn train's validation split: "
                           f"give them with --split val")
        split = _recorded_split(args, trained) if args.split == "val" else None
        ds = load_dataset(PROG, args.dataset or trained.metadata.get("dataset", "fashion-mnist"), args.data_dir,
                          download=not args.no_download)
        x, y = ds.test if split is None else split_training(PROG, *ds.train, **split)[1]
        if args.limit is not None:
            x, y = x[:args.limit], y[:args.limit]
        if tuple(x.shape[1:]) != trained.input_shape:
            raise _Exit(2, f"{PROG}: error: {ds.name} images have shape {tuple(x.shape[1:])}, the model "
                           f"expects {trained.input_shape}")
        name = loss_name(trained.metadata)
        data = (trained.scaler.apply(x), targets(name, y, len(trained.class_names)))
        result = evaluate(trained.model, loss_fn(name), trained.params, trained.state, *data)
        plain = result
        if tta is not None:
            result = evaluate(tta, loss_fn(name), trained.params, trained.state, *data)
    except _Exit as e:
        _log(str(e))
        return e.code
    except ValueError as e:  # labels outside the model's classes: a data set the model was not trained on
        _log(f"{PROG}: error: {e}")
        return 2
    report = {"checkpoint": str(trained.path), "dataset": ds.name, "split": args.split, "sample_data": ds.is_sample,
              "num_examples": result["num_examples"], "loss": result["loss"], "accuracy": result["accuracy"],
              "confusion": result["confusion"].tolist(), "class_names": list(trained.class_names),
              "tta": args.tta, "loss_without_tta": plain["loss"], "accuracy_without_tta": plain["accuracy"]}
    if args.json:
        print(json.dumps(report), flush=True)
        return 0
    source = "embedded sample" if ds.is_sample else ds.source
    with_tta = "" if tta is None else (f" with test-time augmentation {args.tta} (without: loss "
                                       f"{plain['loss']:.4f}, accuracy {plain['accuracy']:.4f})")
    images = "test images" if args.split == "test" else "validation images (held out by fnn train)"
    print(f"{trained.path} on {ds.name} ({source}), {result['num_examples']} {images}: "
          f"loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f}{with_tta}", flush=True)
    print(format_confusion(result["confusion"], trained.class_names), flush=True)
    return 0
