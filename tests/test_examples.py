"""The example scripts: each runs with --quick in its own process and must do its job.

Exit status 0 is not enough: each test checks what the script writes (PNG figures that are not
blank, JSONL records with their keys) or the figures it prints (accuracies above chance, the
gradient-mode agreement, the detector verdicts), so a script that runs but does nothing fails.
Quick runs use the embedded Fashion-MNIST sample, so no data set needs to be installed.
The runs are marked slow (about 90 s of CPU together): `pytest -m slow`, and CI's second stage.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MIN_BYTES = 8_000   # a figure with axes, text and data; an empty canvas is ~2 KB
TIMEOUT = 600
FLOAT = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"

# One test per script below; a new example without one fails test_every_example_is_tested.
TESTED = {"data_parallel.py", "diagnose_gradients.py", "hparam_search.py", "init_scales.py",
          "mixed_precision.py", "mlp_two_modes.py", "optimizers_2d.py", "train_fashion_mnist.py"}


def _env(xla_flags: str = "") -> dict:
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    # Compilation dominates these short runs; XLA's cheapest backend optimization halves it.
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0 {xla_flags}".strip()
    env.pop("FNN_EXAMPLE_CHILD", None)
    return env


def _run(script: str, *args: str, cwd: Path, xla_flags: str = "") -> str:
    """Run examples/<script> --quick <args> in cwd; assert it exits 0; return its stdout."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--quick", *args], cwd=cwd,
                          env=_env(xla_flags), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _number(pattern: str, text: str) -> float:
    """The float captured by `pattern` (which holds FLOAT once) in text; fails if absent."""
    m = re.search(pattern, text)
    assert m, f"no line matching {pattern!r} in:\n{text[-3000:]}"
    return float(m.group(1))


def _check_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.is_file(), f"{path.name} not written; the folder holds {sorted(p.name for p in path.parent.glob('*'))}"
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert len(raw) > MIN_BYTES, f"{path.name} is only {len(raw)} bytes"
    pixels = imread(path)
    assert pixels.shape[0] >= 150 and pixels.shape[1] >= 300, f"{path.name} is {pixels.shape[:2]} pixels"
    assert pixels[..., :3].std() > 0.02, f"{path.name} is (almost) one colour"


def _jsonl(path: Path) -> list[dict]:
    assert path.is_file(), f"{path.name} not written"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_example_is_tested():
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert scripts == TESTED, "each examples/*.py needs a --quick test in tests/test_examples.py"
    for name in sorted(scripts):
        text = (EXAMPLES / name).read_text(encoding="utf-8")
        assert '"--quick"' in text, f"{name} has no --quick option"
        assert "--quick" in text.split('"""')[1], f"{name}: the docstring does not show how to run --quick"


@pytest.mark.slow  # a subprocess compiling a whole script: CI's slow stage runs it
def test_data_parallel(tmp_path):
    # Four fake CPU devices: the script then uses them as they are and does not re-execute itself.
    out = _run("data_parallel.py", cwd=tmp_path, xla_flags="--xla_force_host_platform_device_count=4")
    assert "sample: 1024 training images; mesh {'data': 4} over cpu" in out, out
    assert "a batch of 128 is 4 shards of shape (32, 784)" in out, out
    acc_mesh = _number(r"mesh: val accuracy " + FLOAT, out)
    acc_one = _number(r"one device: val accuracy " + FLOAT, out)
    assert 0.5 < acc_mesh <= 1 and 0.5 < acc_one <= 1, out
    assert abs(acc_mesh - acc_one) <= 0.01, out
    assert "params on 4 device(s)" in out and "params on 1 device(s)" in out, out
    largest = _number(r"\|params\(mesh\) - params\(one device\)\|: median \S+, largest " + FLOAT, out)
    assert 0 <= largest < 1e-4, out


@pytest.mark.slow  # a subprocess compiling a whole script: CI's slow stage runs it
def test_diagnose_gradients(tmp_path):
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "out"
    out = _run("diagnose_gradients.py", "--out", str(out_dir), cwd=tmp_path)
    assert "data: sample, 1024 training images" in out, out
    assert "sigmoid/N(0,0.01): vanishing detected = True" in out, out
    assert "ReLU/He:           vanishing detected = False, exploding detected = False" in out, out
    assert "ReLU/He, lr 0.5:   exploding detected = True" in out, out
    assert "all three verdicts as expected" in out, out
    for run in ("vanishing", "healthy", "exploding"):
        _check_png(out_dir / f"grad_norms_{run}.png")
        _check_png(out_dir / f"grad_norms_{run}_steps.png")


@pytest.mark.slow  # a subprocess compiling a whole script: CI's slow stage runs it
def test_hparam_search(tmp_path):
    out_dir = tmp_path / "out"
    out = _run("hparam_search.py", "--out", str(out_dir), cwd=tmp_path)
    trials = _jsonl(out_dir / "random_search.jsonl")
    assert len(trials) == 3
    assert sorted(t["index"] for t in trials) == [0, 1, 2]
    for t in trials:
        assert set(t["config"]) == {"learning_rate", "hidden", "batch_size"}, t
        assert 1e-3 <= t["config"]["learning_rate"] <= 3e-1, t
        assert t["score"] == t["metrics"]["val_accuracy"] and 0 <= t["score"] <= 1, t
    assert max(t["score"] for t in trials) > 0.5, trials
    configs = _jsonl(out_dir / "vmap_search.jsonl")
    assert len(configs) == 4
    assert sorted(c["index"] for c in configs) == [0, 1, 2, 3]
    for c in configs:
        assert set(c["config"]) == {"learning_rate", "weight_decay", "init_scale", "seed"}, c
        assert math.isfinite(c["metrics"]["train_loss"]) and 0 <= c["score"] <= 1, c
    assert max(c["score"] for c in configs) > 0.5, configs
    assert 0.5 < _number(r"refit: test accuracy " + FLOAT, out) <= 1, out


def _init_rows(out: str) -> dict[tuple[str, str], list[float]]:
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 12 and parts[1] in ("Tanh", "Relu"):
            rows[(parts[0], parts[1])] = [float(v) for v in parts[2:]]
    return rows


@pytest.mark.slow  # a subprocess compiling a whole script: CI's slow stage runs it
def test_init_scales(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "out" / "init_scales.png"
    png.parent.mkdir()
    out = _run("init_scales.py", "--plot", str(png), cwd=tmp_path)
    rows = _init_rows(out)
    assert len(rows) == 10, out
    assert max(rows[("N(0,1)·0.001", "Tanh")][-4:]) < 1e-10, out          # vanishes
    assert min(rows[("N(0,1)·1", "Tanh")]) > 0.9, out                       # saturates
    assert rows[("N(0,1)·1", "Relu")][-1] > 1e6, out                        # explodes
    assert all(0.3 < s < 3 for s in rows[("N(0,1)·√(2/n)", "Relu")]), out  # He keeps ReLU's spread
    # Square layers: fan_in and fan_avg scaling coincide.
    assert rows[("N(0,1)·1/√n", "Tanh")] == rows[("N(0,1)·√(2/(n_in+n_out))", "Tanh")], out
    _check_png(png)


@pytest.mark.slow  # a subprocess compiling a whole script: CI's slow stage runs it
def test_mixed_precision(tmp_path):
    out = _run("mixed_precision.py", cwd=tmp_path)
    assert "sample: 3000 training images, mlp(784, 256, 10), 1 epoch(s)" in out, out
    acc32 = _number(r" float32: test accuracy " + FLOAT, out)
    acc16 = _number(r"bfloat16: test accuracy " + FLOAT, out)
    assert 0.6 < acc32 <= 1 and 0.6 < acc16 <= 1, out
    assert abs(acc32 - acc16) < 0.05, out
    dtypes = re.findall(r"params \+ optimizer state: (.*); forward: (.*); output (\w+)", out)
    assert dtypes == [("['float32', 'int32']", "['dot_general: float32']", "float32"),
                      ("['float32', 'int32']", "['dot_general: bfloat16']", "float32")], out


@pytest.mark.slow  # a subprocess compiling a whole script: CI's slow stage runs it
def test_mlp_two_modes(tmp_path):
    out = _run("mlp_two_modes.py", cwd=tmp_path)
    worst = _number(r"step\s+599\s+loss \S+\s+worst grad rel\. difference so far " + FLOAT, out)
    assert 0 <= worst < 1e-3, out
    assert 0.7 < _number(r"train accuracy after 600 steps \(manual backward\): " + FLOAT, out) <= 1, out
    drift = _number(r"float64, 100 steps: params\(manual\) vs params\(autodiff\) relative difference " + FLOAT, out)
    assert 0 <= drift < 1e-8, out
    assert "the two gradient modes agree" in out, out


@pytest.mark.slow  # a subprocess compiling a whole script: CI's slow stage runs it
def test_optimizers_2d(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "out" / "optimizers_2d.png"
    png.parent.mkdir()
    out = _run("optimizers_2d.py", "--out", str(png), cwd=tmp_path)
    finals = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+) \(.*\)\s+final point .*loss " + FLOAT,
                                                                  out, re.M)}
    assert set(finals) == {"SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "Rprop"}, out
    start_loss = 12.5   # rosenbrock(-1.5, 2)
    assert all(0 <= v < start_loss for v in finals.values()), finals
    assert max(finals["Momentum"], finals["Nesterov"], finals["Adam"]) < 0.05, finals
    _check_png(png)


@pytest.mark.slow  # a subprocess compiling a whole script: CI's slow stage runs it
def test_train_fashion_mnist(tmp_path):
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "out"
    out = _run("train_fashion_mnist.py", "--out", str(out_dir), cwd=tmp_path)
    assert 0.5 < _number(r"test accuracy " + FLOAT, out) <= 1, out
    (record,) = _jsonl(out_dir / "history.jsonl")
    assert record["epoch"] == 1, record
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(record), record
    assert math.isfinite(record["train_loss"]) and 0.5 < record["val_accuracy"] <= 1, record
    assert (out_dir / "checkpoint.fnn").stat().st_size > 100_000   # simple_cnn's params and Adam state
    _check_png(out_dir / "curves.png")
    _check_png(out_dir / "confusion.png")
