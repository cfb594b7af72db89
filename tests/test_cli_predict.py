"""fnn.cli: `fnn predict`, `fnn evaluate`, `fnn export` and `fnn --version`, in-process on the
embedded sample, from what `fnn train` writes."""

import gzip
import json
import re
import struct

import jax
import numpy as np
import pytest
from sample_data import sample_only as hide_real_data
from trees import assert_trees_equal, leaves

import fnn
from fnn import checkpoint
from fnn.cli import main
from fnn.cli._trained import build_model, load_trained
from fnn.data import Standardizer, load_sample, train_val_split


@pytest.fixture(scope="module", autouse=True)
def sample_only(tmp_path_factory):
    """The loaders find no real data, so every command here runs on the embedded sample."""
    with hide_real_data(tmp_path_factory.mktemp("nodata")):
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, sample_only):
    """One epoch of the mlp on 256 images of the embedded sample, with test-time augmentation figures."""
    out = tmp_path_factory.mktemp("predict") / "run"
    code = main(["train", "--model", "mlp", "--epochs", "1", "--limit", "256", "--batch-size", "64", "--out", str(out),
                 "--no-progress", "--no-download", "--standardize", "pixel", "--tta", "flip,shift"])
    assert code == 0
    return out


def _cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _by_hand(run_dir, x, views=("plain",)):
    """Class probabilities the long way, as docs/train-save-predict.md shows: metadata -> model,
    load_params, Standardizer, model.apply; with more `views` ("flip", or "up", "down", "left",
    "right": moved one pixel, black coming in), the softmax of the mean logits over them."""
    meta = checkpoint.read_metadata(run_dir / "model.fnn")
    model = build_model(meta["model"]["name"], tuple(meta["input_shape"]), meta["model"]["num_classes"])
    params, state = checkpoint.load_params(run_dir / "model.fnn", model)
    scaler = Standardizer(np.asarray(meta["standardizer"]["mean"], np.float32),
                          np.asarray(meta["standardizer"]["std"], np.float32))
    z = np.asarray(scaler.apply(x))
    black = np.asarray(scaler.apply(np.zeros((1, 28, 28, 1)))).min()
    p = np.pad(z, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=black)
    seen = {"plain": z, "flip": z[:, :, ::-1], "down": p[:, :28, 1:29], "up": p[:, 2:, 1:29],
            "right": p[:, 1:29, :28], "left": p[:, 1:29, 2:]}
    logits = np.mean([model.apply(params, state, seen[v])[0] for v in views], axis=0)
    return np.asarray(jax.nn.softmax(logits, axis=-1))


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"fnn {fnn.__version__}"


def test_train_writes_model_file_that_rebuilds_the_model(run_dir):
    meta = checkpoint.read_metadata(run_dir / "model.fnn")
    assert meta["model"] == {"builder": "fnn train", "name": "mlp", "input_shape": [28, 28, 1], "num_classes": 10,
                             "loss": "softmax_cross_entropy", "kwargs": {}}
    assert meta["class_names"][0] == "T-shirt/top" and meta["dataset"] == "fashion-mnist"
    assert np.shape(meta["standardizer"]["mean"]) == (28, 28, 1)  # --standardize pixel
    # the resumable checkpoint carries the same description, and (one epoch, no early stopping) the same weights
    full = checkpoint.read_metadata(run_dir / "checkpoint.fnn")
    assert full["model"] == meta["model"] and full["standardizer"] == meta["standardizer"]
    from_model, from_ckpt = load_trained("t", run_dir / "model.fnn"), load_trained("t", run_dir / "checkpoint.fnn")
    assert from_model.model.name == from_ckpt.model.name
    assert_trees_equal((from_model.params, from_model.state), (from_ckpt.params, from_ckpt.state))
    # the Standardizer is fnn train's, fit on its training split only, bit for bit
    x, y = (a[:256] for a in load_sample().train)
    split_key, _ = jax.random.split(jax.random.key(0))  # fnn train --seed 0
    (x_train, _), _ = train_val_split(x, y, 0.1, key=split_key)
    expected = Standardizer.fit(x_train, per="pixel")
    np.testing.assert_array_equal(from_model.scaler.mean, expected.mean)
    np.testing.assert_array_equal(from_model.scaler.std, expected.std)
    assert load_trained("t", run_dir).path.name == "model.fnn"  # a run directory means its model.fnn


def test_evaluate_reproduces_the_test_accuracy_of_train(run_dir, capsys):
    results = json.loads((run_dir / "results.json").read_text())
    assert results["sample_data"] is True
    code, out, err = _cli(capsys, "evaluate", "--checkpoint", str(run_dir), "--json", "--no-download")
    assert code == 0, err
    report = json.loads(out)
    assert report["accuracy"] == results["test_accuracy"]
    assert report["loss"] == pytest.approx(results["test_loss"], rel=1e-6)
    conf = np.asarray(report["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == report["num_examples"] == 1000
    code, out, _ = _cli(capsys, "evaluate", "--checkpoint", str(run_dir / "checkpoint.fnn"), "--limit", "50",
                        "--no-download")
    assert code == 0 and "50 test images" in out and "confusion matrix" in out


def test_predict_agrees_with_the_model_and_with_evaluate(run_dir, capsys):
    code, out, err = _cli(capsys, "predict", "--checkpoint", str(run_dir), "--limit", "1000", "--top-k", "10", "--json",
                          "--no-download")
    assert code == 0, err
    rows = json.loads(out)["predictions"]
    x, y = load_sample().test
    probs = _by_hand(run_dir, x)
    got = np.asarray([[t["probability"] for t in sorted(r["top"], key=lambda t: t["class_index"])] for r in rows])
    np.testing.assert_allclose(got, probs, rtol=1e-5, atol=1e-7)
    names = checkpoint.read_metadata(run_dir / "model.fnn")["class_names"]
    assert [r["prediction"] for r in rows] == [names[i] for i in probs.argmax(-1)]
    assert [r["label"] for r in rows] == [names[i] for i in y]
    right = sum(r["prediction"] == r["label"] for r in rows)
    accuracy = json.loads((run_dir / "results.json").read_text())["test_accuracy"]
    assert right == round(accuracy * 1000)  # predict and evaluate agree image for image


def test_test_time_augmentation_in_train_evaluate_and_predict(run_dir, capsys):
    """--tta: the mean logits over the image, its mirror image and four one-pixel moves, by hand."""
    x, y = load_sample().test
    right = _by_hand(run_dir, x, ("plain", "flip", "up", "down", "left", "right")).argmax(-1) == y
    results = json.loads((run_dir / "results.json").read_text())
    assert results["tta"] == "flip,shift" and results["test_accuracy_tta"] == right.mean()
    assert results["test_accuracy_tta"] != results["test_accuracy"] and 0 < results["val_accuracy_tta"] < 1
    code, out, err = _cli(capsys, "evaluate", "--checkpoint", str(run_dir), "--tta", "flip,shift", "--json",
                          "--no-download")
    assert code == 0, err
    report = json.loads(out)
    assert report["accuracy"] == results["test_accuracy_tta"] and report["tta"] == "flip,shift"
    assert report["loss"] == pytest.approx(results["test_loss_tta"], rel=1e-6)
    assert report["accuracy_without_tta"] == results["test_accuracy"]
    code, out, err = _cli(capsys, "evaluate", "--checkpoint", str(run_dir), "--split", "val", "--tta", "flip,shift",
                          "--json", "--no-download")
    assert code == 0, err
    report = json.loads(out)
    assert report["split"] == "val" and report["num_examples"] == 26  # 10% of --limit 256
    assert report["accuracy"] == results["val_accuracy_tta"]
    assert report["accuracy_without_tta"] == results["val_accuracy"]  # fit's last validation figure
    code, out, err = _cli(capsys, "predict", "--checkpoint", str(run_dir), "--tta", "flip", "--limit", "20",
                          "--top-k", "10", "--json", "--no-download")
    assert code == 0, err
    rows = json.loads(out)["predictions"]
    got = np.asarray([[t["probability"] for t in sorted(r["top"], key=lambda t: t["class_index"])] for r in rows])
    np.testing.assert_allclose(got, _by_hand(run_dir, x[:20], ("plain", "flip")), rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, _by_hand(run_dir, x[:20]), rtol=1e-3)


def test_predict_input_files_equal_dataset_images(run_dir, capsys, tmp_path):
    x = load_sample().test[0][[3, 7, 9]]  # (3, 28, 28, 1) uint8
    np.save(tmp_path / "three.npy", x[..., 0])  # without the channel axis
    np.savez(tmp_path / "three.npz", images=x, other=np.zeros(2))
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 3, 28, 28)
    (tmp_path / "three-idx3-ubyte.gz").write_bytes(gzip.compress(header + x.tobytes()))
    code, out, err = _cli(capsys, "predict", "--checkpoint", str(run_dir), "--index", "3", "7", "9", "--json",
                          "--no-download")
    assert code == 0, err
    expected = [{k: v for k, v in r.items() if k != "label"} for r in json.loads(out)["predictions"]]
    for i, r in enumerate(expected):
        r["index"] = i
    for source, extra in (("three.npy", []), ("three.npz", ["--key", "images"]), ("three-idx3-ubyte.gz", [])):
        code, out, err = _cli(capsys, "predict", "--checkpoint", str(run_dir), "--input", str(tmp_path / source),
                              "--json", *extra)
        assert code == 0, (source, err)
        assert json.loads(out)["predictions"] == expected, source
    code, out, _ = _cli(capsys, "predict", "--checkpoint", str(run_dir), "--input", str(tmp_path / "three.npy"),
                        "--index", "1", "--top-k", "2")
    assert code == 0 and out.splitlines()[1].startswith(f"image 1: {expected[1]['prediction']}   top 2: ")


def test_predict_and_evaluate_errors(run_dir, capsys, tmp_path):
    np.save(tmp_path / "rgb.npy", np.zeros((2, 32, 32, 3), np.uint8))
    np.savez(tmp_path / "two.npz", a=np.zeros((1, 28, 28)), b=np.zeros((1, 28, 28)))
    model = fnn.serial(fnn.Flatten(), fnn.Dense(3))
    _, params, state = model.init(jax.random.key(0), (28, 28, 1))
    checkpoint.save_params(tmp_path / "bare.fnn", params, state)  # fit-style: no fnn train metadata
    checkpoint.save(tmp_path / "old.fnn", {"train_state": params}, metadata={"model": "serial", "epoch": 1})
    meta = checkpoint.read_metadata(run_dir / "model.fnn")
    del meta["split"]  # as fnn train wrote before it recorded the split
    trained = load_trained("test", run_dir)
    checkpoint.save_params(tmp_path / "nosplit.fnn", trained.params, trained.state, metadata=meta)
    cases = [
        (["predict", "--checkpoint", str(tmp_path / "missing.fnn")], 1, "no checkpoint at .*missing.fnn"),
        (["evaluate", "--checkpoint", str(tmp_path)], 1, "directory without model.fnn or checkpoint.fnn"),
        (["predict", "--checkpoint", str(tmp_path / "bare.fnn")], 1, "has no model metadata .*load_params"),
        (["evaluate", "--checkpoint", str(tmp_path / "old.fnn")], 1, "model: 'serial'.*older fnn"),
        (["predict", "--checkpoint", str(run_dir), "--input", str(tmp_path / "rgb.npy")], 2,
         r"shape \(2, 32, 32, 3\); the model expects images of shape \(N, 28, 28, 1\) or \(N, 28, 28\)"),
        (["predict", "--checkpoint", str(run_dir), "--input", str(tmp_path / "two.npz")], 2,
         r"holds the arrays \['a', 'b'\]; name one with --key"),
        (["predict", "--checkpoint", str(run_dir), "--input", str(tmp_path / "nothing.npy")], 1, "no file at"),
        (["predict", "--checkpoint", str(run_dir), "--index", "5000", "--no-download"], 2,
         "--index 5000 is out of range for 1000 images"),
        (["evaluate", "--checkpoint", str(tmp_path / "nosplit.fnn"), "--split", "val", "--no-download"], 2,
         "does not record fnn train's split .*pass the --seed and --val-fraction"),
        (["evaluate", "--checkpoint", str(run_dir), "--seed", "3"], 2, "give them with --split val"),
        (["evaluate", "--checkpoint", str(run_dir), "--split", "val", "--dataset", "mnist"], 2,
         "--split val: the model was trained on fashion-mnist, not mnist"),
        (["evaluate", "--checkpoint", str(run_dir), "--tta", "flip,rotate"], 2,
         r"--tta: tta_views: each name must be one of \['flip', 'shift'\], got 'rotate'"),
        (["train", "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "never"), "--tta", "flip,flip"], 2,
         "--tta: tta_views: a name appears twice"),
    ]
    for argv, want_code, pattern in cases:
        code, _, err = _cli(capsys, *argv)
        assert code == want_code, (argv, err)
        assert re.search(pattern, err), (pattern, err)
    (tmp_path / "junk.fnn").write_bytes(b"not a checkpoint at all, really" * 4)
    code, _, err = _cli(capsys, "predict", "--checkpoint", str(tmp_path / "junk.fnn"))
    assert code == 1 and "is not an fnn checkpoint" in err


def test_export_npz(run_dir, capsys, tmp_path):
    code, _, err = _cli(capsys, "export", "--checkpoint", str(run_dir), "--out", str(tmp_path / "mlp.npz"))
    assert code == 0, err
    trained = load_trained("t", run_dir)
    with np.load(tmp_path / "mlp.npz") as z:
        assert sorted(z.keys()) == ["params/1/b", "params/1/w", "params/3/b", "params/3/w", "params/5/b", "params/5/w"]
        np.testing.assert_array_equal(z["params/3/w"], trained.params[3]["w"])
        assert len(leaves(trained.params)) == len(z.keys())
    meta = json.loads((tmp_path / "mlp.npz.json").read_text())
    assert meta["model"]["name"] == "mlp" and "standardizer" in meta
