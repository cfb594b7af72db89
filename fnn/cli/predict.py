"""``fnn predict``: class probabilities of images, from a model trained by ``fnn train``.

The model, its parameters and the Standardizer statistics all come from the checkpoint
(``fnn.cli._trained``). Images come from a file (IDX, ``.npy`` or ``.npz``: raw pixel values,
as in the data set files) or from the data set's test split (``--index``, ``--limit``).
``--tta flip,shift`` averages the model's outputs over views of each image (``fnn.layers.with_tta``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fnn.cli._args import _Exit, _log, _positive_int
from fnn.cli._losses import LOSSES, scores
from fnn.cli._trained import (
    Trained,
    add_checkpoint_arguments,
    add_tta_argument,
    as_images,
    load_dataset,
    load_trained,
    loss_name,
    read_array,
    tta_model,
)

PROG = "fnn predict"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fnn predict`` to the subcommand parsers ``sub``."""
    p = sub.add_parser(
        "predict", help="classify images with a model trained by fnn train",
        description="Classify images with a model trained by fnn train: print the top-k classes and their "
                    "probabilities for each image. Images come from --input (IDX, .npy or .npz of raw "
                    "pixel values, (N, 28, 28), (N, 28, 28, 1) or one image) or from the test split of "
                    "--dataset (--index, --limit).")
    add_checkpoint_arguments(p)
    p.add_argument("--input", type=Path, default=None, metavar="FILE",
                   help="images to classify: an IDX file (raw or .gz), a .npy file or a .npz file")
    p.add_argument("--key", default=None, help="the array of a .npz --input that holds the images")
    p.add_argument("--index", type=int, nargs="+", default=None, metavar="I",
                   help="which images (0-based) of the input or of the test split")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="the first N images (default: all of --input, 10 of the test split)")
    p.add_argument("--top-k", type=_positive_int, default=3, metavar="K",
                   help="classes to show per image (default: %(default)s)")
    add_tta_argument(p)
    p.set_defaults(run=run)


def _select(x: np.ndarray, labels, index, limit):
    """The images (and labels) picked by --index, then --limit."""
    n = len(x)
    if index is not None:
        bad = [i for i in index if not -n <= i < n]
        if bad:
            raise _Exit(2, f"{PROG}: error: --index {bad[0]} is out of range for {n} images")
        picked = np.asarray([i % n for i in index])
    else:
        picked = np.arange(n)
    if limit is not None:
        picked = picked[:limit]
    return picked, x[picked], None if labels is None else labels[picked]


def _images(args, trained):
    """(indices, images, labels or None, source) from --input or from the data set's test split."""
    if args.input is not None:
        if args.dataset is not None:
            raise _Exit(2, f"{PROG}: error: give either --input or --dataset, not both")
        x = as_images(PROG, read_array(PROG, args.input, args.key), trained.input_shape, str(args.input))
        return (*_select(x, None, args.index, args.limit), str(args.input))
    name = args.dataset or trained.metadata.get("dataset", "fashion-mnist")
    ds = load_dataset(PROG, name, args.data_dir, download=not args.no_download)
    x, y = ds.test
    limit = args.limit if args.limit is not None or args.index is not None else 10
    source = f"{ds.name} test split" + (" (embedded sample)" if ds.is_sample else "")
    return (*_select(x, y, args.index, limit), source)


def predict_proba(trained: Trained, x: np.ndarray) -> np.ndarray:
    """(N, M) per-class scores of the standardized images x: softmax probabilities for a model
    trained with softmax cross-entropy (the default); for other losses, what ``fnn.cli._losses``
    says (probabilities, sigmoids or raw scores)."""
    import jax

    if np.issubdtype(x.dtype, np.floating) and x.size and float(np.max(x)) <= 1.0:
        _log(f"{PROG}: warning: the pixel values are all <= 1; the model was trained on raw values 0-255 "
             f"(standardized with the training statistics stored in the checkpoint)")
    logits, _ = jax.jit(lambda p, s, xx: trained.model.apply(p, s, xx))(trained.params, trained.state,
                                                                         trained.scaler.apply(x))
    return scores(loss_name(trained.metadata), logits)


def _rows(trained, indices, probs, labels, top_k: int) -> list[dict]:
    names = trained.class_names
    word = LOSSES[loss_name(trained.metadata)].score_name
    rows = []
    for i, (index, p) in enumerate(zip(indices, probs, strict=True)):
        order = np.argsort(-p, kind="stable")[:top_k]
        row = {"index": int(index), "prediction": names[int(order[0])],
               "top": [{"class": names[int(c)], "class_index": int(c), word: float(p[c])} for c in order]}
        if labels is not None:
            row["label"] = names[int(labels[i])]
        rows.append(row)
    return rows


def _text(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        truth = f" (label: {row['label']}, {'right' if row['label'] == row['prediction'] else 'wrong'})" \
            if "label" in row else ""
        tops = ", ".join(f"{t['class']} {t.get('probability', t.get('score')):.3f}" for t in row["top"])
        lines.append(f"image {row['index']}: {row['prediction']}{truth}   top {len(row['top'])}: {tops}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``fnn predict``: returns the exit status."""
    try:
        trained = load_trained(PROG, args.checkpoint)
        tta = tta_model(PROG, trained.model, args.tta, trained.scaler, trained.input_shape)
        if tta is not None:
            trained = trained._replace(model=tta)
        indices, x, labels, source = _images(args, trained)
    except _Exit as e:
        _log(str(e))
        return e.code
    probs = predict_proba(trained, x)
    rows = _rows(trained, indices, probs, labels, min(args.top_k, probs.shape[-1]))
    if args.json:
        print(json.dumps({"checkpoint": str(trained.path), "source": source, "tta": args.tta,
                          "predictions": rows}), flush=True)
    else:
        views = "" if args.tta is None else f", outputs averaged over the views {args.tta} (--tta)"
        print(f"{trained.path}: {len(rows)} images of {source}{views}", flush=True)
        print(_text(rows), flush=True)
    return 0
