"""`fnn train --swa START --swa-lr LR` and `--ema DECAY`: the learning rate they train with, the
model they save."""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import checkpoint, optim
from fnn.cli import main
from fnn.cli._recipe import learning_rate


def _args(**kw):
    base = dict(epochs=5, lr=0.1, schedule="onecycle", warmup_epochs=0.0, swa=3, swa_lr=None)
    return argparse.Namespace(**{**base, **kw})


def _values(schedule, n):
    return np.asarray(jax.vmap(schedule)(jnp.arange(n, dtype=jnp.int32)))


@pytest.mark.parametrize("swa_lr,expected", [(None, 0.01), (0.03, 0.03)])
def test_the_schedule_spans_swa_epochs_then_the_swa_lr_holds(swa_lr, expected):
    lr = _values(learning_rate(_args(swa_lr=swa_lr), steps_per_epoch=10), 50)
    # Bit for bit the schedule of a 3-epoch run first: a run resumed from one goes on unchanged.
    np.testing.assert_array_equal(lr[:30], _values(optim.one_cycle(30, 0.1), 30))
    np.testing.assert_allclose(lr[30:], expected, rtol=1e-6)
    constant = _values(learning_rate(_args(schedule="constant"), steps_per_epoch=10), 50)
    np.testing.assert_allclose(constant, [0.1] * 30 + [0.01] * 20, rtol=1e-6)


@pytest.mark.slow  # a bn_cnn training run through the CLI (~13 s quiet); CI's slow stage runs it
def test_swa_trains_on_and_saves_the_averaged_model(tmp_path, capsys):
    from fnn.cli._trained import load_trained

    out = tmp_path / "run"
    code = main(["train", "--model", "bn_cnn", "--epochs", "3", "--limit", "384", "--batch-size", "64", "--json",
                 "--out", str(out), "--no-progress", "--no-download", "--swa", "1", "--swa-lr", "0.003"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert (result["swa"], result["swa_lr"], result["swa_epochs"]) == (1, 0.003, 2)
    assert 0.0 <= result["val_accuracy_swa"] <= 1.0 and result["val_loss_swa"] > 0
    assert "SWA: mean of epochs 2-3: validation accuracy" in captured.err
    # model.fnn holds the mean (and its recomputed statistics); the checkpoint the last epoch's weights.
    trained = load_trained("test", out)
    last_params, last_state = checkpoint.load_params(out / "checkpoint.fnn", trained.model)
    assert np.abs(jax.tree.leaves(trained.params)[-1] - jax.tree.leaves(last_params)[-1]).max() > 1e-4
    assert np.abs(jax.tree.leaves(trained.state)[0] - jax.tree.leaves(last_state)[0]).max() > 1e-4


def test_swa_not_below_epochs_is_refused(tmp_path, capsys):
    code = main(["train", "--model", "mlp", "--epochs", "2", "--swa", "2", "--limit", "256", "--out", str(tmp_path),
                 "--no-progress", "--no-download"])
    assert code == 2
    assert "fnn train: error: --swa 2 must be below --epochs 2" in capsys.readouterr().err


@pytest.mark.slow  # a bn_cnn training run through the CLI (~12 s quiet); CI's slow stage runs it
def test_ema_saves_the_moving_average(tmp_path, capsys):
    from fnn.cli._trained import load_trained

    out = tmp_path / "run"
    code = main(["train", "--model", "bn_cnn", "--epochs", "2", "--limit", "384", "--batch-size", "64", "--json",
                 "--out", str(out), "--no-progress", "--no-download", "--ema", "0.9"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["ema"] == 0.9 and 0.0 <= result["val_accuracy_ema"] <= 1.0
    assert "EMA of the weights (decay 0.9): validation accuracy" in captured.err
    trained = load_trained("test", out)
    last_params, last_state = checkpoint.load_params(out / "checkpoint.fnn", trained.model)
    assert np.abs(jax.tree.leaves(trained.params)[-1] - jax.tree.leaves(last_params)[-1]).max() > 1e-4
    assert np.abs(jax.tree.leaves(trained.state)[0] - jax.tree.leaves(last_state)[0]).max() > 1e-4


@pytest.mark.parametrize("extra,message", [
    (["--ema", "1.0"], "argument --ema: must be in (0, 1), got 1.0"),
    (["--ema", "0.9", "--swa", "1"], "argument --swa: not allowed with argument --ema"),
])
def test_bad_averaging_arguments(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        main(["train", "--model", "mlp", "--epochs", "2", "--limit", "256", "--out", str(tmp_path),
              "--no-progress", "--no-download", *extra])
    assert message in capsys.readouterr().err
