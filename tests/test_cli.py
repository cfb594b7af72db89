"""fnn.cli: `fnn train`, in-process and as `python -m fnn`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fnn.cli import format_confusion, main
from fnn.data import datasets
from fnn.train import History

KEYS = {"test_accuracy", "test_loss", "train_seconds", "images_per_second", "epochs"}
FULL_DATA = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parents[1]


def _last_json(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert KEYS <= set(result)
    return result


def _listed(err: str) -> tuple[Path, list[str]]:
    """The directory and the file names of the CLI's last "fnn train: wrote A, B in DIR" line."""
    line = [ln for ln in err.splitlines() if ln.startswith("fnn train: wrote ")][-1]
    names, _, where = line.removeprefix("fnn train: wrote ").rpartition(" in ")
    return Path(where), names.split(", ")


def test_train_mlp_in_process(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "mlp", "--epochs", "1", "--limit", "512", "--json", "--out", str(out),
                 "--no-progress", "--no-download", "--batch-size", "64"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = _last_json(captured.out)
    assert result["epochs"] == 1 and 0.3 < result["test_accuracy"] <= 1.0
    assert result["train_seconds"] > 0 and result["images_per_second"] > 0
    stdout = captured.out.strip().splitlines()
    assert stdout[0].split()[:2] == ["epoch", "train_loss"] and len(stdout) == 3  # table + JSON only
    assert "confusion matrix" in captured.err
    for name in ("checkpoint.fnn", "history.jsonl", "curves.png", "confusion.png", "results.json"):
        assert (out / name).stat().st_size > 0, name
    assert History.load_jsonl(out / "history.jsonl")["epoch"] == [1]
    assert not (out / "steps.jsonl").exists() and not (out / "grad_norms.png").exists()
    where, listed = _listed(captured.err)
    assert where == out and sorted(listed) == sorted(p.name for p in out.iterdir())


def test_train_lists_only_the_files_it_wrote(tmp_path, capsys):
    """A run that diverges in its first epoch has no checkpoint and no plots: the CLI must not claim them."""
    out = tmp_path / "run"
    code = main(["train", "--model", "mlp", "--epochs", "1", "--limit", "256", "--lr", "1e30", "--out", str(out),
                 "--no-progress", "--no-download", "--batch-size", "64", "--val-fraction", "0"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert not (out / "checkpoint.fnn").exists() and "non-finite" in err
    where, listed = _listed(err)
    assert where == out and sorted(listed) == sorted(p.name for p in out.iterdir())
    assert {"history.jsonl", "results.json"} <= set(listed) and "checkpoint.fnn" not in listed


def test_interrupted_train_says_how_to_resume(tmp_path, capsys, monkeypatch):
    """Ctrl-C during fit: exit 130 and a line naming checkpoint.fnn and --resume (no traceback);
    the same command with --resume then finishes the run."""
    import fnn.train
    from fnn.train import FunctionCallback

    real_fit = fnn.train.fit

    def interrupt_at_epoch_2(epoch, ts, record):
        if epoch == 2:
            raise KeyboardInterrupt

    def fit_then_interrupt(*args, callbacks=(), **kwargs):
        return real_fit(*args, callbacks=[*callbacks, FunctionCallback(interrupt_at_epoch_2)], **kwargs)

    out = tmp_path / "run"
    argv = ["train", "--model", "mlp", "--epochs", "3", "--limit", "256", "--out", str(out), "--no-progress",
            "--no-download", "--batch-size", "64"]
    monkeypatch.setattr(fnn.train, "fit", fit_then_interrupt)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 130
    assert f"fnn train: interrupted; {out / 'checkpoint.fnn'} holds the last finished epoch: run the same " \
           f"command with --resume to continue" in err
    assert (out / "checkpoint.fnn").exists() and not (out / "results.json").exists()
    monkeypatch.setattr(fnn.train, "fit", real_fit)
    assert main(argv + ["--resume"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[0] == "2"  # it continued after the saved epoch 1, it did not start again
    assert History.load_jsonl(out / "history.jsonl")["epoch"] == [1, 2, 3]


def test_train_record_every(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "mlp", "--epochs", "1", "--limit", "512", "--out", str(out),
                 "--no-progress", "--no-download", "--batch-size", "64", "--record-every", "2",
                 "--val-fraction", "0"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 4, 6, 8]  # 512 images, batch 64: 8 steps
    assert all(len(r["layer_grad_norms"]) == 3 and r["grad_norm"] > 0 for r in rows)  # mlp: 3 Dense layers
    assert (out / "grad_norms.png").stat().st_size > 10_000


def test_train_as_module_subprocess(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "fnn", "train", "--model", "mlp", "--epochs", "1", "--limit", "512", "--json",
         "--out", str(tmp_path / "run"), "--no-download", "--val-fraction", "0", "--seed", "3"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _last_json(proc.stdout)
    assert result["epochs"] == 1 and result["val_accuracy"] is None
    assert "epoch" in proc.stdout.splitlines()[0]


def test_bad_arguments_are_argparse_errors(capsys):
    for argv in (["train", "--model", "transformer"], ["train", "--dataset", "cifar10"],
                 ["train", "--epochs", "0"], ["train", "--val-fraction", "1.5"], ["fit"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert "invalid choice: 'transformer'" in capsys.readouterr().err


def test_missing_mnist_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIR", tmp_path / "none")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("FNN_DATA", raising=False)
    code = main(["train", "--dataset", "mnist", "--no-download", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1
    assert "fnn train: error:" in err and "MNIST not found" in err and "FNN_DATA" in err
    assert str(tmp_path / "none" / "mnist") in err  # the loader searched the patched system directory


def test_format_confusion():
    import numpy as np
    text = format_confusion(np.array([[8, 2], [1, 9]]), ["cat", "dog"])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[2].split() == ["cat", "8", "2", "0.800"]


def _slow_selected(config) -> bool:
    """Slow tests run when asked for: `pytest -m slow` (or any -m naming them) or FNN_SLOW=1."""
    expr = config.getoption("markexpr") or ""
    return os.environ.get("FNN_SLOW") == "1" or ("slow" in expr and "not slow" not in expr)


@pytest.mark.slow
@pytest.mark.skipif(not FULL_DATA.is_dir(), reason="needs the full Fashion-MNIST in /usr/share/datasets")
def test_simple_cnn_one_epoch_full_data(tmp_path, request):
    if not _slow_selected(request.config):
        pytest.skip("slow (about 1-2 min on 2 cores): run with `pytest -m slow` or FNN_SLOW=1")
    # A subprocess, so that XLA optimizes as usual (conftest lowers the optimization level).
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "fnn", "train", "--model", "simple_cnn", "--epochs", "1", "--json",
         "--no-progress", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=1200, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _last_json(proc.stdout)["test_accuracy"] >= 0.85
