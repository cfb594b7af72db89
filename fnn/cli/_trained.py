"""What ``fnn train`` writes about a model, and how ``fnn predict`` / ``fnn evaluate`` rebuild it.

``fnn train`` writes two files with the same metadata (``run_metadata``):

- ``model.fnn``: ``fnn.checkpoint.save_params`` of the final parameters and state, the ones
  evaluated on the test set (after early stopping, the best epoch's). Use it for inference.
- ``checkpoint.fnn``: the resumable training state (``fnn.train.Checkpoint``: TrainState with
  the optimizer state, callback states, History), rewritten after every epoch.

Both can be given to ``--checkpoint`` (``load_trained``); a run directory means its ``model.fnn``,
else its ``checkpoint.fnn``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fnn.cli._args import _Exit, _tuples
from fnn.cli._losses import DEFAULT, with_output

MODEL_FILE = "model.fnn"
CHECKPOINT_FILE = "checkpoint.fnn"
HISTORY_FILE = "history.jsonl"
RESULTS_FILE = "results.json"


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, model_args: dict | None = None):
    """The named fnn.models network, built with `model_args` (--model-args) as keyword arguments;
    mlp gets a Flatten in front and two hidden layers of 256 (and takes no model_args)."""
    from fnn import models
    if not hasattr(models, name):
        raise _Exit(2, f"fnn: error: fnn.models has no model {name!r} in this version")
    if name == "mlp":
        if model_args:
            raise _Exit(2, "fnn: error: --model-args: the mlp of fnn train takes none (it is Flatten, "
                           "Dense 256, Dense 256, the output layer)")
        from fnn.diagnostics import sublayers
        from fnn.layers.combinators import serial
        from fnn.layers.reshape import Flatten
        # One flat serial, so per-layer diagnostics (--record-every) see each Dense layer.
        return serial(Flatten(), *sublayers(models.mlp((math.prod(input_shape), 256, 256, num_classes))))  # type: ignore[misc]  # mlp is a serial
    kwargs = dict(model_args or {})
    taken = {"num_classes", "input_shape"} & set(kwargs)
    if taken:
        raise _Exit(2, f"fnn: error: --model-args: {', '.join(sorted(taken))} come from the data, not from "
                       f"--model-args")
    try:
        model = getattr(models, name)(num_classes=num_classes, input_shape=input_shape, **kwargs)
        if kwargs:  # the builder's shape checks run at init: fail here, before any output is written
            import jax
            jax.eval_shape(lambda k: model.init(k, input_shape), jax.random.key(0))
    except (TypeError, ValueError) as e:
        raise _Exit(2, f"fnn: error: --model-args for {name}: {e}") from None
    return model


def run_metadata(model_name: str, input_shape, class_names, dataset: str, scaler, *,
                 loss: str = "softmax_cross_entropy", model_args: dict | None = None,
                 split: dict | None = None) -> dict:
    """The checkpoint metadata that rebuilds the model and its input pipeline (JSON-serializable).

    ``model``: the builder (``build_model``), its arguments (``kwargs``: --model-args) and the loss (which may append an
    output layer, ``fnn.cli._losses``); ``input_shape``: one example,
    e.g. [28, 28, 1]; ``class_names``; ``standardizer``: the training split's statistics, applied
    as ``(x - mean) / (std + eps)`` to raw pixel values (``fnn.data.Standardizer``); ``split``: the
    ``split_training`` arguments (seed, val_fraction, limit), so ``fnn evaluate --split val`` finds
    the validation images again.
    """
    import fnn

    shape = [int(d) for d in input_shape]
    return {"fnn_version": fnn.__version__, "input_shape": shape, "class_names": list(class_names),
            "dataset": dataset,
            "model": {"builder": "fnn train", "name": model_name, "input_shape": shape,
                      "num_classes": len(class_names), "loss": loss, "kwargs": dict(model_args or {})},
            "standardizer": {"mean": np.asarray(scaler.mean).tolist(), "std": np.asarray(scaler.std).tolist()},
            "split": dict(split or {})}


def loss_name(meta: dict) -> str:
    """The loss a model file was trained with (files from before --loss: softmax cross-entropy)."""
    return str((meta.get("model") or {}).get("loss", DEFAULT))


class Trained(NamedTuple):
    """A trained model rebuilt from its file."""

    model: Any
    params: Any
    state: Any
    scaler: Any          # fnn.data.Standardizer
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    metadata: dict
    path: Path


def _no_model_metadata(prog: str, path: Path, meta: dict) -> _Exit:
    return _Exit(1, f"{prog}: error: {path} has no model metadata (model: {meta.get('model')!r}): it was written "
                    f"by an older fnn, or by fit/Checkpoint/save_params without fnn train's metadata, so the "
                    f"model cannot be rebuilt from the file alone. Load its parameters in Python instead: "
                    f"params, state = fnn.checkpoint.load_params(path, model, input_shape) with the model you "
                    f"trained, then model.apply(params, state, x)")


def resolve(prog: str, where: str | Path) -> Path:
    """The checkpoint file `where` names: the file itself, or a run directory's model.fnn / checkpoint.fnn."""
    where = Path(where)
    if where.is_dir():
        for name in (MODEL_FILE, CHECKPOINT_FILE):
            if (where / name).is_file():
                return where / name
        raise _Exit(1, f"{prog}: error: {where} is a directory without {MODEL_FILE} or {CHECKPOINT_FILE} "
                       f"(fnn train --out DIR writes them)")
    if not where.is_file():
        raise _Exit(1, f"{prog}: error: no checkpoint at {where} (file not found)")
    return where


def load_trained(prog: str, where: str | Path) -> Trained:
    """Rebuild the model, its parameters and its Standardizer from a file written by ``fnn train``."""
    import jax.numpy as jnp

    from fnn.checkpoint import load_params, read_metadata
    from fnn.data import Standardizer

    path = resolve(prog, where)
    try:
        meta = read_metadata(path)
    except ValueError as e:
        raise _Exit(1, f"{prog}: error: {e}") from None
    spec = meta.get("model")
    if not isinstance(spec, dict) or spec.get("builder") != "fnn train" or "standardizer" not in meta:
        raise _no_model_metadata(prog, path, meta)
    input_shape = tuple(int(d) for d in spec["input_shape"])
    model = with_output(build_model(spec["name"], input_shape, int(spec["num_classes"]), _tuples(spec.get("kwargs"))),
                        loss_name(meta))
    try:
        params, state = load_params(path, model, input_shape)
    except ValueError as e:
        raise _Exit(1, f"{prog}: error: {e}") from None
    stats = meta["standardizer"]
    scaler = Standardizer(jnp.asarray(stats["mean"], jnp.float32), jnp.asarray(stats["std"], jnp.float32))
    class_names = tuple(meta.get("class_names") or (str(i) for i in range(int(spec["num_classes"]))))
    return Trained(model, params, state, scaler, class_names, input_shape, meta, path)


def as_images(prog: str, x: np.ndarray, input_shape: tuple[int, ...], where: str) -> np.ndarray:
    """x as (N, *input_shape): one image or a stack, with or without the channel axis of size 1."""
    shape = tuple(x.shape)
    if shape == input_shape or (input_shape[-1] == 1 and shape == input_shape[:-1]):
        x = x[None]  # one image
    if input_shape[-1] == 1 and tuple(x.shape[1:]) == input_shape[:-1]:
        x = x[..., None]  # (N, H, W) -> (N, H, W, 1)
    if x.ndim < 1 or tuple(x.shape[1:]) != input_shape:
        from fnn.core import fmt_shape
        raise _Exit(2, f"{prog}: error: {where} holds an array of shape {fmt_shape(shape)}; the model expects "
                       f"images of shape {fmt_shape((None, *input_shape))}"
                       + (f" or {fmt_shape((None, *input_shape[:-1]))}" if input_shape[-1] == 1 else ""))
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise _Exit(2, f"{prog}: error: {where} holds {x.dtype} values; expected numeric pixel values")
    return x


def read_array(prog: str, path: Path, key: str | None = None) -> np.ndarray:
    """An array from an IDX file (raw or .gz), a .npy file, or one array of a .npz file (`key`)."""
    from fnn.data import read_idx

    if not path.is_file():
        raise _Exit(1, f"{prog}: error: no file at {path}")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = list(z.keys())
                if key is None and len(names) == 1:
                    key = names[0]
                if key is None or key not in names:
                    raise _Exit(2, f"{prog}: error: {path} holds the arrays {names}; name one with --key")
                return z[key]
        return read_idx(path)
    except (ValueError, OSError) as e:
        raise _Exit(2, f"{prog}: error: cannot read {path} as IDX, .npy or .npz: {e}") from None


def load_dataset(prog: str, name: str, data_dir: Path | None, download: bool):
    """``fnn.data.load_fashion_mnist`` or ``load_mnist``; a missing data set is an ``_Exit``."""
    from fnn import data

    loader = data.load_fashion_mnist if name == "fashion-mnist" else data.load_mnist
    try:
        return loader(data_dir, download=download, verbose=True)
    except (FileNotFoundError, ValueError) as e:
        raise _Exit(1, f"{prog}: error: {e}") from None


def split_training(prog: str, x, y, *, seed: int, val_fraction: float, limit: int | None):
    """``fnn train``'s split of the training images: the first `limit` of them (all when None),
    then `val_fraction` held out with the first key of ``split(key(seed))``.

    Returns ``((x_train, y_train), (x_val, y_val) or None, fit_key)``; fit_key is the second key.
    """
    import jax

    from fnn import data

    if limit is not None:
        x, y = x[:limit], y[:limit]
    split_key, fit_key = jax.random.split(jax.random.key(seed))
    if val_fraction <= 0:
        return (x, y), None, fit_key
    try:
        train, val = data.train_val_split(x, y, val_fraction, key=split_key)
    except ValueError as e:
        raise _Exit(2, f"{prog}: error: {e}") from None
    return train, val, fit_key


def load_data(args):
    """(ds, train, val or None, test, fit_key, scaler) for ``fnn train`` and ``fnn lr-find``: the
    split, then standardized with the training split's statistics only (the Standardizer `scaler`)."""
    from fnn import data

    prog = f"fnn {args.command}"
    ds = load_dataset(prog, args.dataset, args.data_dir, download=not args.no_download)
    (x_train, y_train), val, fit_key = split_training(prog, *ds.train, seed=args.seed,
                                                      val_fraction=args.val_fraction, limit=args.limit)
    x_test, y_test = ds.test
    scaler = data.Standardizer.fit(x_train, per=args.standardize)
    if val is not None:
        val = (scaler.apply(val[0]), val[1])
    if args.batch_size > len(x_train):
        raise _Exit(2, f"{prog}: error: --batch-size {args.batch_size} is larger than the {len(x_train)} "
                       f"training images")
    return ds, (scaler.apply(x_train), y_train), val, (scaler.apply(x_test), y_test), fit_key, scaler


def add_checkpoint_arguments(p) -> None:
    """--checkpoint and the data-set options that ``fnn predict`` and ``fnn evaluate`` share."""
    from fnn.cli._args import DATASETS

    p.add_argument("--checkpoint", type=Path, required=True, metavar="PATH",
                   help=f"a file written by fnn train ({MODEL_FILE} or {CHECKPOINT_FILE}) or its --out directory")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="data set (default: the one the checkpoint was trained on)")
    p.add_argument("--data-dir", type=Path, default=None, help="directory with the four IDX files")
    p.add_argument("--no-download", action="store_true", help="never try to download the data")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def add_tta_argument(p) -> None:
    """--tta, shared by fnn train, evaluate and predict."""
    p.add_argument("--tta", default=None, metavar="VIEWS",
                   help="test-time augmentation: average the model's outputs over views of each image, "
                        "'flip' (2 views), 'shift' (moved one pixel up, down, left, right: 5) or 'flip,shift' "
                        "(6); uncovered pixels are black")


def tta_model(prog: str, model, spec: str | None, scaler, input_shape: tuple[int, ...]):
    """`model` with --tta's views (``fnn.layers.with_tta``), or None without --tta. The shifts
    uncover black pixels: 0 standardized with the training statistics, as --augment crop pads."""
    if spec is None:
        return None
    from fnn.layers.tta import tta_views, with_tta

    black = float(np.min(np.asarray(scaler.apply(np.zeros((1, *input_shape), np.float32)))))
    try:
        return with_tta(model, tta_views(spec, fill=black))
    except ValueError as e:
        raise _Exit(2, f"{prog}: error: --tta: {e}") from None
