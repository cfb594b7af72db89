"""`fnn train --loss`: every classifier loss of fnn.losses trains, evaluates and predicts through
the command line (in-process, on the embedded sample)."""

import json

import numpy as np
import pytest
from sample_data import sample_only as hide_real_data

from fnn import losses
from fnn.cli import main
from fnn.cli._losses import LOSSES, scores, targets

# Two runs in the default suite (labels, one-hot); the other four in CI's slow stage.
FAST = ("softmax_cross_entropy", "mse")
CASES = [name if name in FAST else pytest.param(name, marks=pytest.mark.slow) for name in LOSSES]


@pytest.fixture(scope="module", autouse=True)
def sample_only(tmp_path_factory):
    """The loaders find no real data, so every command here runs on the embedded sample."""
    with hide_real_data(tmp_path_factory.mktemp("nodata")):
        yield


def test_every_classifier_loss_is_offered():
    """The CLI offers each loss of fnn.losses that trains a classifier; only the triplet loss
    (embeddings of triples) is left to fit."""
    classifier_losses = {n for n in dir(losses) if isinstance(getattr(losses, n), losses.Loss)}
    assert set(LOSSES) == classifier_losses
    assert callable(losses.triplet_margin)


def test_targets_and_scores():
    y = np.array([2, 0, 1])
    assert targets("softmax_cross_entropy", y, 3) is not None and targets("cross_entropy", y, 3).shape == (3,)
    np.testing.assert_array_equal(targets("mse", y, 3), np.eye(3, dtype=np.float32)[y])
    logits = np.array([[0.0, 1.0, -1.0]])
    np.testing.assert_allclose(scores("softmax_cross_entropy", logits).sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(scores("sigmoid_binary_cross_entropy", logits), 1 / (1 + np.exp(-logits)), rtol=1e-6)
    np.testing.assert_array_equal(scores("mae", logits), logits)


@pytest.mark.parametrize("name", CASES)
def test_loss_trains_evaluates_and_predicts(name, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "mlp", "--epochs", "2", "--limit", "512", "--batch-size", "64", "--loss", name,
                 "--lr", "3e-3", "--out", str(out), "--no-progress", "--no-download", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert history[-1]["train_loss"] < history[0]["train_loss"]          # it learns
    assert 0.3 < result["test_accuracy"] <= 1.0                          # accuracy means something: 10 classes
    assert json.loads((out / "results.json").read_text())["test_accuracy"] == result["test_accuracy"]

    assert main(["evaluate", "--checkpoint", str(out), "--json", "--no-download"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["accuracy"] == result["test_accuracy"]
    np.testing.assert_allclose(evaluated["loss"], result["test_loss"], rtol=1e-5)

    assert main(["predict", "--checkpoint", str(out), "--limit", "4", "--top-k", "10", "--json", "--no-download"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]
    word = LOSSES[name].score_name
    values = np.array([[t[word] for t in row["top"]] for row in rows])
    assert values.shape == (4, 10) and np.all(np.diff(values, axis=1) <= 0)   # ranked
    if word == "probability":
        np.testing.assert_allclose(values.sum(axis=1), 1.0, rtol=1e-5)
    if LOSSES[name].output == "sigmoid" or LOSSES[name].score == "sigmoid":
        assert np.all((values >= 0) & (values <= 1))
