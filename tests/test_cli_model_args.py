"""`fnn train --model-args`: the builder's keyword arguments reach the model, are saved with it,
and rebuild it for `fnn evaluate` (in-process, on the embedded sample)."""

import json

import jax
import pytest
from sample_data import sample_only as hide_real_data

from fnn import models
from fnn.cli import main


@pytest.fixture(scope="module", autouse=True)
def sample_only(tmp_path_factory):
    with hide_real_data(tmp_path_factory.mktemp("nodata")):
        yield


def _count(tree):
    return sum(int(leaf.size) for leaf in jax.tree.leaves(tree))


def test_model_args_build_save_and_reload(tmp_path, capsys):
    out = tmp_path / "run"
    args = '{"stages": [8, 16], "blocks_per_stage": 1}'
    code = main(["train", "--model", "resnet", "--model-args", args, "--epochs", "1", "--limit", "256",
                 "--batch-size", "64", "--out", str(out), "--no-progress", "--no-download", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["model_args"] == {"stages": [8, 16], "blocks_per_stage": 1}
    _, params, _ = models.resnet(stages=(8, 16), blocks_per_stage=1).init(jax.random.key(0), (28, 28, 1))
    assert _count(params) != _count(models.resnet().init(jax.random.key(0), (28, 28, 1))[1])
    assert f"parameters: {_count(params):,} " in captured.err            # the summary of the built model
    assert main(["evaluate", "--checkpoint", str(out), "--json", "--no-download"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] == result["test_accuracy"]


@pytest.mark.parametrize(("model", "args", "message"), [
    ("resnet", '{"widths": [8]}', "--model-args for resnet: resnet() got an unexpected keyword argument 'widths'"),
    ("resnet", '{"blocks_per_stage": 0}', "blocks_per_stage must be a positive int, got 0"),
    ("bn_vgg", '{"num_classes": 3}', "num_classes come from the data"),
    ("mlp", '{"hidden": 3}', "the mlp of fnn train takes none"),
])
def test_bad_model_args_stop_before_any_output(model, args, message, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["train", "--model", model, "--model-args", args, "--epochs", "1", "--out", str(out),
                 "--no-download"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_model_args_must_be_a_json_object(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model-args", "[1, 2]"])
    assert "expected a JSON object of keyword arguments" in capsys.readouterr().err
