"""`fnn lr-find`: the sweep from the command line, its files and its JSON line."""

import json

from fnn.cli import main


def test_lr_find_mlp(tmp_path, capsys):
    out = tmp_path / "lrf"
    code = main(["lr-find", "--model", "mlp", "--limit", "512", "--steps", "40", "--batch-size", "32",
                 "--min-lr", "1e-5", "--max-lr", "10", "--json", "--out", str(out), "--no-download"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    info = json.loads(captured.out.strip().splitlines()[-1])
    saved = json.loads((out / "lr_find.json").read_text())
    assert info["suggestion"] == saved["suggestion"] == saved["lr_min"] / 10 and info["rule"] == "min/10"
    assert 1e-5 <= info["suggestion"] <= 10 and info["model"] == "mlp" and info["optimizer"] == "adam"
    assert len(saved["lrs"]) == len(saved["losses"]) == saved["steps"] <= 40
    assert saved["lrs"] == sorted(saved["lrs"])
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "suggested learning rate" in captured.err  # with --json the summary goes to stderr


def test_lr_find_bad_arguments(tmp_path, capsys):
    code = main(["lr-find", "--model", "mlp", "--limit", "64", "--batch-size", "16", "--min-lr", "1", "--max-lr", "0.1",
                 "--out", str(tmp_path / "x"), "--no-download"])
    assert code == 2 and "fnn lr-find: error: lr_find: max_lr must be in" in capsys.readouterr().err
