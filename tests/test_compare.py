"""`fnn compare` and fnn.plot.plot_runs: runs side by side, as a table, JSON and one PNG."""

import json

import numpy as np
import pytest

from fnn import checkpoint
from fnn.cli import main
from fnn.plot import plot_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ORANGE = np.array([1.0, 0.498, 0.055])  # matplotlib's C1, the second run's line


def _records(val_accs, seconds=60.0):
    return [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.0 - a, "val_accuracy": a, "lr": 0.1 / e,
             "seconds": seconds} for e, a in enumerate(val_accs, 1)]


def _finished(path, val_accs, test_accuracy, train_seconds):
    path.mkdir(parents=True)
    (path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(val_accs)))
    (path / "results.json").write_text(json.dumps({"test_accuracy": test_accuracy, "train_seconds": train_seconds}))
    return path


def _orange_pixels(path):
    from matplotlib.image import imread
    rgb = imread(path)[..., :3]
    return int((np.abs(rgb - ORANGE).max(axis=-1) < 0.05).sum())


def test_table_and_json_give_best_last_test_and_time(tmp_path, capsys):
    a = _finished(tmp_path / "a", [0.80, 0.93, 0.91], 0.925, 600.0)
    b = _finished(tmp_path / "b", [0.70, 0.85, 0.88, 0.90], 0.895, 1200.0)
    assert main(["compare", str(a), str(b), "--json", "--out", str(tmp_path / "c.png")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {"run": "a", "epochs": 3, "best_val_accuracy": 0.93, "best_epoch": 2, "last_val_accuracy": 0.91,
         "test_accuracy": 0.925, "train_seconds": 600.0},
        {"run": "b", "epochs": 4, "best_val_accuracy": 0.90, "best_epoch": 4, "last_val_accuracy": 0.90,
         "test_accuracy": 0.895, "train_seconds": 1200.0}]
    assert main(["compare", str(a), str(b), "--no-plot"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "epochs", "best_val", "(epoch)", "last_val", "test_acc", "train_min"]
    assert lines[1].split() == ["a", "3", "0.9300", "(", "2)", "0.9100", "0.9250", "10.0"]
    assert lines[2].split() == ["b", "4", "0.9000", "(", "4)", "0.9000", "0.8950", "20.0"]


def test_png_draws_every_run_in_every_panel(tmp_path, capsys):
    a = _finished(tmp_path / "a", [0.80, 0.93, 0.91], 0.925, 600.0)
    b = _finished(tmp_path / "b", [0.70, 0.85, 0.88, 0.90], 0.895, 1200.0)
    one, two, three = (tmp_path / f"{n}.png" for n in ("one", "two", "three"))
    assert main(["compare", str(a), "--out", str(one), "--fields", "val_accuracy"]) == 0
    assert main(["compare", str(a), str(b), "--out", str(two), "--fields", "val_accuracy"]) == 0
    assert main(["compare", str(a), str(b), "--out", str(three), "--fields", "val_accuracy,train_loss,lr"]) == 0
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in (one, two, three))
    assert _orange_pixels(one) == 0 and _orange_pixels(two) > 50  # the second run is drawn
    assert _orange_pixels(three) > 2.5 * _orange_pixels(two)     # in each of the three panels
    width = lambda p: int.from_bytes(p.read_bytes()[16:20], "big")  # noqa: E731
    assert width(three) > 2 * width(two)


def test_a_run_in_progress_is_read_from_its_checkpoint(tmp_path, capsys):
    run = tmp_path / "running"
    run.mkdir()
    checkpoint.save(run / "checkpoint.fnn", {"w": np.zeros(2, np.float32)},
                    metadata={"history": _records([0.5, 0.75], seconds=30.0), "epoch": 2})
    assert main(["compare", str(run), "--json", "--no-plot"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row == {"run": "running", "epochs": 2, "best_val_accuracy": 0.75, "best_epoch": 2,
                   "last_val_accuracy": 0.75, "test_accuracy": None, "train_seconds": 60.0}


def test_same_names_are_told_apart_by_their_paths(tmp_path, capsys):
    a = _finished(tmp_path / "x" / "run", [0.8], 0.8, 1.0)
    b = _finished(tmp_path / "y" / "run", [0.9], 0.9, 1.0)
    assert main(["compare", str(a), str(b / "history.jsonl"), "--json", "--no-plot"]) == 0
    assert [r["run"] for r in json.loads(capsys.readouterr().out)] == [str(a), str(b / "history.jsonl")]


def test_errors_name_the_run_or_the_field(tmp_path, capsys):
    a = _finished(tmp_path / "a", [0.8, 0.9], 0.9, 1.0)
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert f"fnn compare: error: {tmp_path / 'missing'} is not a run directory" in capsys.readouterr().err
    assert main(["compare", str(a), "--fields", "val_accuracy,grad_norm", "--out", str(tmp_path / "c.png")]) == 2
    assert "no run recorded 'grad_norm'" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert main(["compare", str(tmp_path / "bad.jsonl")]) == 2
    assert "line 1 is not JSON" in capsys.readouterr().err


def test_plot_runs_rejects_empty_input(tmp_path):
    with pytest.raises(ValueError, match="no runs"):
        plot_runs({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no fields"):
        plot_runs({"a": _records([0.5])}, tmp_path / "x.png", fields=())
