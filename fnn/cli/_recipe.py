"""``fnn train``'s recipe options: the learning-rate schedule (--schedule, --warmup-epochs),
on-device augmentation (--augment, --crop-padding), --label-smoothing, batch mixing (--mixup,
--cutmix) and weight averaging (--ema, --swa, --swa-lr)."""

from __future__ import annotations

import argparse
from typing import Any

from fnn.cli._args import _Exit, _nonnegative_float, _positive_float, _positive_int
from fnn.cli._losses import loss_fn
from fnn.core import Layer, Loss


def add_recipe_arguments(t: argparse.ArgumentParser) -> None:
    """--augment, --crop-padding, --schedule and --warmup-epochs on parser `t`."""
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
    t.add_argument("--label-smoothing", type=_nonnegative_float, default=0.0, metavar="EPS",
                   help="train softmax_cross_entropy or cross_entropy against targets (1 - EPS) one-hot + "
                        "EPS/classes (fnn.losses.label_smoothing); the train and validation losses are the "
                        "smoothed loss, the test loss the plain one, as fnn evaluate reports it "
                        "(default: %(default)s)")
    avg = t.add_mutually_exclusive_group()
    avg.add_argument("--ema", type=_decay, default=None, metavar="DECAY",
                     help="keep an exponential moving average of the weights, updated every step "
                          "(fnn.optim.with_ema; 0.999 averages about the last 1000 steps); the model saved and "
                          "tested is the average, with BatchNorm statistics recomputed")
    avg.add_argument("--swa", type=_positive_int, default=None, metavar="START",
                   help="stochastic weight averaging (fnn.train.SWA): --schedule spans the first START "
                        "epochs, then --swa-lr holds until --epochs; the model saved and tested is the mean of "
                        "the weights after epochs START+1..--epochs, with BatchNorm statistics recomputed")
    t.add_argument("--swa-lr", type=_positive_float, default=None, metavar="LR",
                   help="the constant learning rate of the --swa epochs (default: --lr / 10)")
    mix = t.add_mutually_exclusive_group()
    mix.add_argument("--mixup", type=_positive_float, default=None, metavar="ALPHA",
                     help="mixup: each training image blended with another of its batch, labels likewise, "
                          "weight ~ Beta(ALPHA, ALPHA) (fnn.train.mixing.mixup; 0.2 is common)")
    mix.add_argument("--cutmix", type=_positive_float, default=None, metavar="ALPHA",
                     help="CutMix: a rectangle pasted from another image of the batch, labels mixed by its "
                          "area, Beta(ALPHA, ALPHA) (fnn.train.mixing.cutmix; 1.0 is the paper's)")


def batch_mixer(args: argparse.Namespace, num_classes: int) -> Any:
    """The Mixer of --mixup or --cutmix, or None; both need a loss that takes probability targets."""
    alpha = args.mixup if args.mixup is not None else args.cutmix
    if alpha is None:
        return None
    _needs_probability_targets(args, "--mixup" if args.mixup is not None else "--cutmix")
    from fnn.train import mixing
    make = mixing.mixup if args.mixup is not None else mixing.cutmix
    return make(alpha, num_classes=num_classes)


def _needs_probability_targets(args: argparse.Namespace, flag: str) -> None:
    """Refuse `flag` unless --loss takes probability targets (softmax_cross_entropy, cross_entropy)."""
    if args.loss not in ("softmax_cross_entropy", "cross_entropy"):
        raise _Exit(2, f"fnn train: error: {flag} needs --loss softmax_cross_entropy or cross_entropy, "
                       f"not {args.loss}")


def training_loss(args: argparse.Namespace) -> Loss:
    """The loss of --loss, with --label-smoothing when it is above 0."""
    from fnn import losses
    loss = loss_fn(args.loss)
    if not args.label_smoothing:
        return loss
    _needs_probability_targets(args, "--label-smoothing")
    try:
        return losses.label_smoothing(loss, args.label_smoothing)
    except ValueError as e:
        raise _Exit(2, f"fnn train: error: --label-smoothing: {e}") from None


def learning_rate(args: argparse.Namespace, steps_per_epoch: int) -> Any:
    """--lr, or the schedule of --schedule/--warmup-epochs over epochs x steps_per_epoch steps;
    with --swa START, over START epochs, then --swa-lr."""
    from fnn import optim
    if args.swa is None:
        return _schedule(args, args.epochs, steps_per_epoch, f"--epochs {args.epochs}")
    if args.swa >= args.epochs:
        raise _Exit(2, f"fnn train: error: --swa {args.swa} must be below --epochs {args.epochs} "
                       f"(the schedule's epochs, then the averaged ones)")
    first = _schedule(args, args.swa, steps_per_epoch, f"--swa {args.swa}")
    first = first if callable(first) else optim.constant_schedule(first)
    return optim.join([first, optim.constant_schedule(_swa_lr(args))], [args.swa * steps_per_epoch])


def _swa_lr(args: argparse.Namespace) -> float:
    """--swa-lr, by default --lr / 10."""
    return args.lr / 10 if args.swa_lr is None else args.swa_lr


def _decay(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def ema_optimizer(args: argparse.Namespace, optimizer: Any) -> Any:
    """`optimizer` with --ema's moving average of the weights in its state (fnn.optim.with_ema)."""
    if args.ema is None:
        return optimizer
    from fnn import optim
    return optim.with_ema(optimizer, args.ema)


def ema_state(args: argparse.Namespace, trained: Layer, ts: Any, x_train: Any) -> Any:
    """With --ema: the TrainState with the moving average as params and the BatchNorm statistics
    recomputed for it on the training images (through `trained`, augmentation included)."""
    if args.ema is None:
        return ts
    from fnn import optim
    from fnn.train.averaging import averaged_state
    return averaged_state(trained, ts, optim.ema_params(ts.opt_state), x_train, batch_size=args.batch_size)


def averaged_figures(args: argparse.Namespace, model: Layer, ts: Any, val: Any, history: Any) -> tuple[dict, Any]:
    """With --swa or --ema: the averaged model's validation figures for results.json, logged beside
    the last epoch's weights' (the History's rows), and the point that marks them on curves.png."""
    from fnn.cli._args import _log
    from fnn.train import evaluate
    if args.swa is None and args.ema is None:
        return {}, None
    if args.swa is not None:
        what, key = f"SWA: mean of epochs {args.swa + 1}-{len(history)}", "swa"
        out = {"swa": args.swa, "swa_lr": _swa_lr(args),
               "swa_epochs": max(len(history) - args.swa, 0)}
    else:
        what, key, out = f"EMA of the weights (decay {args.ema:g})", "ema", {"ema": args.ema}
    # The training loss (label smoothing included), as the History's validation loss.
    ev = None if val is None else evaluate(model, training_loss(args), ts.params, ts.state, *val)
    out[f"val_accuracy_{key}"] = None if ev is None else ev["accuracy"]
    out[f"val_loss_{key}"] = None if ev is None else ev["loss"]
    last = history.records[-1]["val_accuracy"] if len(history) else None
    if ev is None or last is None:
        return out, None
    _log(f"fnn train: {what}: validation accuracy {ev['accuracy']:.4f} (the last epoch's weights: {last:.4f})")
    return out, {what: {"epoch": len(history), "val_accuracy": ev["accuracy"], "val_loss": ev["loss"]}}


def swa_callback(args: argparse.Namespace) -> list:
    """[fnn.train.SWA(--swa)], or [] without --swa."""
    if args.swa is None:
        return []
    from fnn.train.averaging import SWA
    return [SWA(args.swa)]


def _schedule(args: argparse.Namespace, epochs: int, steps_per_epoch: int, span: str) -> Any:
    from fnn import optim
    total, warmup = epochs * steps_per_epoch, round(args.warmup_epochs * steps_per_epoch)
    if warmup >= total:
        raise _Exit(2, f"fnn train: error: --warmup-epochs {args.warmup_epochs:g} ({warmup} steps) must be "
                       f"shorter than the {total} steps of {span}")
    if args.schedule == "onecycle":
        try:
            return optim.one_cycle(total, args.lr, pct_start=warmup / total if warmup else 0.3)
        except ValueError as e:
            raise _Exit(2, f"fnn train: error: {e}") from None
    if args.schedule == "cosine":
        return optim.warmup_cosine_decay(0.0, args.lr, warmup, total)
    return optim.linear_warmup(0.0, args.lr, warmup) if warmup else args.lr


def augmented(model: Layer, args: argparse.Namespace, x_train: Any) -> Layer:
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
