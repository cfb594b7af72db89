"""`fnn train --augment ... --schedule ... --warmup-epochs ...`."""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import optim
from fnn.cli import main
from fnn.cli._recipe import augmented as _augmented
from fnn.cli._recipe import learning_rate as _learning_rate
from fnn.layers import Dense, Flatten, serial
from fnn.train import History


def _args(**kw):
    base = dict(epochs=4, lr=0.1, schedule="constant", warmup_epochs=0.0, augment="none", crop_padding=2,
                swa=None, swa_lr=None)
    return argparse.Namespace(**{**base, **kw})


def _values(schedule, n):
    return np.asarray(jax.vmap(schedule)(jnp.arange(n, dtype=jnp.int32)))


@pytest.mark.parametrize("kw,expected", [
    (dict(), None),
    (dict(warmup_epochs=1.0), optim.linear_warmup(0.0, 0.1, 10)),
    (dict(schedule="cosine", warmup_epochs=0.5), optim.warmup_cosine_decay(0.0, 0.1, 5, 40)),
    (dict(schedule="onecycle"), optim.one_cycle(40, 0.1, pct_start=0.3)),
    (dict(schedule="onecycle", warmup_epochs=1.0), optim.one_cycle(40, 0.1, pct_start=0.25)),
])
def test_the_schedule_spans_epochs_times_steps(kw, expected):
    lr = _learning_rate(_args(**kw), steps_per_epoch=10)
    if expected is None:
        assert lr == 0.1
    else:
        np.testing.assert_array_equal(_values(lr, 45), _values(expected, 45))


def test_augmented_model_changes_training_inputs_only():
    model = serial(Flatten(), Dense(3))
    x = jax.random.normal(jax.random.key(0), (8, 6, 6, 1))
    aug = _augmented(model, _args(augment="crop,flip,erase"), x)
    _, params, state = model.init(jax.random.key(0), (6, 6, 1))
    y = model.apply(params, state, x)[0]
    np.testing.assert_array_equal(aug.apply(params, state, x, key=jax.random.key(1))[0], y)
    assert not np.array_equal(aug.apply(params, state, x, key=jax.random.key(1), train=True)[0], y)
    assert _augmented(model, _args(augment="none"), x) is model


@pytest.mark.slow  # a training run through the CLI (~13 s); CI's slow stage runs it
def test_train_with_augmentation_and_one_cycle(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "mlp", "--epochs", "2", "--limit", "512", "--batch-size", "64", "--json",
                 "--val-fraction", "0", "--out", str(out), "--no-progress", "--no-download",
                 "--augment", "crop,flip,erase", "--schedule", "onecycle", "--warmup-epochs", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["augment"] == "crop,flip,erase" and result["schedule"] == "onecycle"
    # 512 images, batch 64: 8 steps per epoch, the peak at the last step of the first epoch.
    lrs = History.load_jsonl(out / "history.jsonl")["lr"]
    np.testing.assert_allclose(lrs, _values(optim.one_cycle(16, 1e-3, pct_start=0.5), 16)[[7, 15]], rtol=1e-6)
    assert lrs[0] == pytest.approx(1e-3)


@pytest.mark.parametrize("extra,message", [
    (["--augment", "crop,rotate"], "fnn train: error: --augment: augmentations: each name must be one of "
                                   "['crop', 'flip', 'erase'], got 'rotate'"),
    (["--warmup-epochs", "2", "--epochs", "2"], "fnn train: error: --warmup-epochs 2 (16 steps) must be shorter "
                                                "than the 16 steps of --epochs 2"),
    (["--crop-padding", "28", "--augment", "crop"], "--augment: RandomCrop(28, constant): padding 28 must be "
                                                    "smaller than the image"),
    (["--label-smoothing", "0.1", "--loss", "mse"], "fnn train: error: --label-smoothing needs --loss "
                                                    "softmax_cross_entropy or cross_entropy, not mse"),
    (["--label-smoothing", "1"], "fnn train: error: --label-smoothing: label_smoothing: smoothing must be in "
                                 "[0.0, 1.0), got 1.0"),
])
def test_bad_recipe_arguments(tmp_path, capsys, extra, message):
    code = main(["train", "--model", "mlp", "--limit", "512", "--batch-size", "64", "--val-fraction", "0",
                 "--out", str(tmp_path), "--no-progress", "--no-download", *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_label_smoothing_makes_the_trained_model_less_confident(tmp_path, capsys):
    """Same seed and data, --label-smoothing 0 vs 0.3: the smoothed model's mean top probability on
    the training images is lower (its targets put at most 0.73 on the true class), and the run's
    settings name the smoothed loss."""
    from fnn.cli._trained import load_trained
    from fnn.data import load_sample

    confidence = {}
    for eps in ("0", "0.3"):
        out = tmp_path / f"ls{eps}"
        code = main(["train", "--model", "mlp", "--epochs", "4", "--limit", "512", "--batch-size", "64", "--json",
                     "--val-fraction", "0", "--out", str(out), "--no-progress", "--no-download", "--lr", "3e-3",
                     "--label-smoothing", eps])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert json.loads(captured.out.strip().splitlines()[-1])["label_smoothing"] == float(eps)
        assert ("softmax_cross_entropy(label_smoothing=0.3)" in captured.err) == (eps == "0.3")
        trained = load_trained("test", out)
        x = trained.scaler.apply(load_sample().train[0][:512].astype(np.float32))
        logits, _ = trained.model.apply(trained.params, trained.state, x)
        confidence[eps] = float(jnp.mean(jnp.max(jax.nn.softmax(logits), axis=-1)))
    assert confidence["0.3"] < confidence["0"] - 0.05, confidence
