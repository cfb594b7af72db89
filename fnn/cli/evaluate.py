"""``fnn evaluate``: test-set loss, accuracy and confusion matrix of a model trained by ``fnn train``.

With ``--tta flip,shift`` the model's outputs are averaged over views of each image
(``fnn.layers.with_tta``); the figures without it are reported beside them.

Everything the evaluation needs (model, parameters, Standardizer statistics, class names) is
read from the checkpoint; the test split is standardized with the training statistics stored
there, as ``fnn train`` did.
"""

from __future__ import annotations

import argparse
import json

from fnn.cli._args import _Exit, _log, _positive_int, format_confusion
from fnn.cli._losses import loss_fn, targets
from fnn.cli._trained import (
    add_checkpoint_arguments,
    add_tta_argument,
    load_dataset,
    load_trained,
    loss_name,
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
                   help="evaluate only the first N test images (smoke runs)")
    add_tta_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``fnn evaluate``: returns the exit status."""
    from fnn.train import evaluate

    try:
        trained = load_trained(PROG, args.checkpoint)
        tta = tta_model(PROG, trained.model, args.tta, trained.scaler, trained.input_shape)
        ds = load_dataset(PROG, args.dataset or trained.metadata.get("dataset", "fashion-mnist"), args.data_dir,
                          download=not args.no_download)
        x, y = ds.test
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
    report = {"checkpoint": str(trained.path), "dataset": ds.name, "sample_data": ds.is_sample,
              "num_examples": result["num_examples"], "loss": result["loss"], "accuracy": result["accuracy"],
              "confusion": result["confusion"].tolist(), "class_names": list(trained.class_names),
              "tta": args.tta, "loss_without_tta": plain["loss"], "accuracy_without_tta": plain["accuracy"]}
    if args.json:
        print(json.dumps(report), flush=True)
        return 0
    source = "embedded sample" if ds.is_sample else ds.source
    with_tta = "" if tta is None else (f" with test-time augmentation {args.tta} (without: loss "
                                       f"{plain['loss']:.4f}, accuracy {plain['accuracy']:.4f})")
    print(f"{trained.path} on {ds.name} ({source}), {result['num_examples']} test images: "
          f"loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f}{with_tta}", flush=True)
    print(format_confusion(result["confusion"], trained.class_names), flush=True)
    return 0
