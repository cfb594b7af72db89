"""The accelerator run's scripts (benchmarks/gpu_run.sh, gpu_checks.py, gpu_summary.py).

The goal verdicts are pure functions of the records: checked here on made-up figures, so a GPU
run cannot call a missed goal met. The whole script runs on CPU in its ``--quick`` mode in the
slow stage (it is what a GPU session runs, with every stage and implementation).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
_spec = importlib.util.spec_from_file_location("fnn_gpu_summary", BENCH / "gpu_summary.py")
summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summary)


def rec(impl, workload, epoch_s, precision="float32", **kw):
    return {"impl": impl, "workload": workload, "precision": precision, "epoch_s": epoch_s, **kw}


def verdicts(bench, checks=None):
    return {goal: v for goal, _, v in summary.goals(bench, checks or {})}


def test_epoch_goals_compare_with_their_limits():
    v = verdicts([rec("fnn-fused", "cnn", 0.09), rec("fnn-fused", "mlp", 0.021)])
    assert v["cnn: fnn-fused epoch <= 0.1 s"] == "MET"
    assert v["mlp: fnn-fused epoch <= 0.02 s"] == "MISSED"
    v = verdicts([rec("fnn-fused", "cnn", 0.11)])
    assert v["cnn: fnn-fused epoch <= 0.1 s"] == "MISSED"
    assert v["mlp: fnn-fused epoch <= 0.02 s"] == "NOT MEASURED"


def test_missing_rows_name_what_a_cut_stage_left_out():
    full = [rec(i, w, 1.0, p) for w, i, p in summary.EXPECTED]
    assert summary.missing_rows(full) == []
    assert len(summary.EXPECTED) == 9 + 14 + 8   # cnn, wide in two precisions, mlp
    cut = [r for r in full if not (r["workload"] == "wide" and r["precision"] == "bfloat16"
                                   and r["impl"] in ("equinox", "flax-nnx"))]
    assert summary.missing_rows(cut) == ["equinox on wide (bfloat16)", "flax-nnx on wide (bfloat16)"]


def test_a_failed_row_is_not_measured():
    v = verdicts([{"impl": "fnn-fused", "workload": "cnn", "error": "boom"}])
    assert v["cnn: fnn-fused epoch <= 0.1 s"] == "NOT MEASURED"


def test_bf16_goals_use_the_bf16_rows():
    bench = [rec("fnn-fused", "wide", 1.0), rec("fnn-fused", "wide", 0.6, "bfloat16", tflops=410.0)]
    v = verdicts(bench)
    assert v["wide bf16: fnn-fused >= 400 TFLOP/s"] == "MET"
    assert v["wide: bf16 >= 1.5x float32 (fnn-fused epoch)"] == "MET"   # 1.67x
    bench = [rec("fnn-fused", "wide", 1.0, tflops=500.0), rec("fnn-fused", "wide", 0.7, "bfloat16", tflops=390.0)]
    v = verdicts(bench)
    assert v["wide bf16: fnn-fused >= 400 TFLOP/s"] == "MISSED"        # the float32 row's 500 does not count
    assert v["wide: bf16 >= 1.5x float32 (fnn-fused epoch)"] == "MISSED"  # 1.43x


def test_fused_against_per_step_and_auto_against_the_other_modes():
    bench = [rec("fnn-fused", "cnn", 0.10, grad_mode="autodiff"), rec("fnn-step", "cnn", 0.29),
             rec("fnn-manual-fused", "cnn", 0.104), rec("fnn-custom_vjp-fused", "cnn", 0.2)]
    v = verdicts(bench)
    assert v["cnn: fused epoch >= 3x the per-step loop"] == "MISSED"          # 2.9x
    assert v["cnn: grad_mode='auto' picks the fastest mode (within 5%)"] == "MET"   # 0.104 vs 0.10
    bench[1] = rec("fnn-step", "cnn", 0.31)
    bench[2] = rec("fnn-manual-fused", "cnn", 0.09)
    v = verdicts(bench)
    assert v["cnn: fused epoch >= 3x the per-step loop"] == "MET"
    assert v["cnn: grad_mode='auto' picks the fastest mode (within 5%)"] == "MISSED"  # manual 10% faster


def test_vmap_goal_reads_the_check():
    checks = {"vmap_search": {"speedup": 3.9, "sequential_s": 3.9, "vmap_s": 1.0, "wall_speedup": 2.0}}
    key = "vmap_search of 16 configs >= 4x 16 sequential fits (training seconds, vmapped vs vectorize=False)"
    assert verdicts([], checks)[key] == "MISSED"
    checks["vmap_search"]["speedup"] = 4.0
    assert verdicts([], checks)[key] == "MET"


def test_summary_prints_checks_and_goals(tmp_path, capsys):
    (tmp_path / "checks.jsonl").write_text(json.dumps({"check": "mesh", "rel_err": 0.0, "bitwise": True,
                                                      "ok": True}) + "\n")
    (tmp_path / "bench.jsonl").write_text(json.dumps(rec("fnn-fused", "cnn", 0.05)) + "\n")
    assert summary.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| mesh | ok |" in out and "| cnn: fnn-fused epoch <= 0.1 s | 0.050 s | MET |" in out


@pytest.mark.slow
def test_gpu_run_quick_on_cpu(tmp_path):
    """The script a GPU session runs, end to end on CPU: every stage writes what it should."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    data = Path(os.environ.get("FNN_DATA", "/usr/share/datasets/fashion-mnist"))
    if not (data / "train-images-idx3-ubyte.gz").exists() and not (data / "fashion-mnist").exists():
        pytest.skip("needs the full Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(BENCH / "gpu_run.sh"), str(data), str(out), "--quick"],
                          capture_output=True, text=True, env=env, timeout=3000)
    log = (out / "gpu_run.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["bench.jsonl", "checks.jsonl", "env.json", "gpu_run.log",
                                                      "profile.tar.gz", "summary.md"]
    checks = {c["check"]: c for c in map(json.loads, (out / "checks.jsonl").read_text().splitlines())}
    assert set(checks) == {"grads", "fused_modes", "precision", "mesh", "vmap_search", "profile"}
    assert all("error" not in c for c in checks.values()), checks
    assert checks["grads"]["ok"] and checks["mesh"]["ok"]
    bench = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()]
    fnn_rows = {(r["impl"], r["workload"], r["precision"]) for r in bench if "error" not in r}
    for w in ("cnn", "mlp"):
        assert {("fnn-fused", w, "float32"), ("fnn-step", w, "float32")} <= fnn_rows
    assert {("fnn-fused", "wide", "float32"), ("fnn-fused", "wide", "bfloat16")} <= fnn_rows
    text = (out / "summary.md").read_text()
    assert "QUICK smoke run" in text and "| goal | figure | verdict |" in text


@pytest.mark.slow
def test_gpu_recipe_quick_on_cpu(tmp_path):
    """benchmarks/gpu_recipe.sh end to end on CPU: the probe sizes the epochs, per-run flags reach
    their run alone, and each run's JSON line and history come back."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    data = Path(os.environ.get("FNN_DATA", "/usr/share/datasets/fashion-mnist"))
    if not (data / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("needs the full Fashion-MNIST's .gz files (apt-get install dataset-fashion-mnist)")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "RUNS_SPEC": "bn_vgg 0;bn_vgg 1 --label-smoothing 0.2"}
    proc = subprocess.run(["bash", str(BENCH / "gpu_recipe.sh"), str(data), str(out), "400", "--quick"],
                          capture_output=True, text=True, env=env, timeout=900)
    log = (out / "recipe.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert "## probe: 2 epochs, 2 runs side by side" in log and "## main: 2 epochs" in log
    assert sorted(p.name for p in out.iterdir()) == ["recipe.log", "results.jsonl", "runs.tar.gz"]
    results = {r["run"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert set(results) == {"bn_vgg_seed0", "bn_vgg_seed1_--label-smoothing_0.2"}
    assert results["bn_vgg_seed0"]["label_smoothing"] == 0.1   # the recipe's
    assert results["bn_vgg_seed1_--label-smoothing_0.2"]["label_smoothing"] == 0.2
    assert all(r["epochs"] == 2 and r["model"] == "bn_vgg" for r in results.values())
    assert all(r["tta"] == "flip,shift" and 0 < r["test_accuracy_tta"] <= 1 for r in results.values())
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = tar.getnames()
    assert "main/bn_vgg_seed0/history.jsonl" in names and "main/bn_vgg_seed0/model.fnn" in names
    assert not any(n.endswith("checkpoint.fnn") for n in names)
