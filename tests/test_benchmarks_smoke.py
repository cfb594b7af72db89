"""Smoke test of benchmarks/run.py: every implementation trains a few steps of each workload on
synthetic data, with the same number of parameters, and the report functions work.

The references (flax, equinox, torch) are optional: their cases skip when the package is absent.
By default CI runs four implementations on the mlp; the rest compile for a while and are marked
slow (``pytest -m slow tests/test_benchmarks_smoke.py`` runs them).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import jax
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
_spec = importlib.util.spec_from_file_location("fnn_benchmarks_run", BENCH / "run.py")
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)

NEEDS = {"flax-nnx": "flax", "equinox": "equinox", "torch-eager": "torch", "torch-compile": "torch"}
SETTINGS = run.Settings(quick=True, warmup=1, timed=2, fused_repeats=1, seed=0)
BATCH, STEPS = 8, 3
FAST = ("fnn-autodiff-step", "fnn-fused", "stax", "torch-eager")  # the cases CI runs by default


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH * STEPS + 5, 28, 28, 1)).astype(np.float32)  # + a remainder to drop
    y = rng.integers(0, 10, len(x)).astype(np.int32)
    return run.Data(x, y, x[:20], y[:20], 0.0, 1.0)


def _cases():
    for workload in ("mlp", "cnn", "wide"):
        for impl in run.IMPLS:
            marks = [pytest.mark.slow] if workload != "mlp" or impl not in FAST else []
            yield pytest.param(impl, workload, marks=marks, id=f"{impl}-{workload}")


@pytest.fixture
def benchmark_config():
    """The benchmarks run with JAX's defaults, not the test suite's float64 and strict promotion."""
    with jax.enable_x64(False), jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        yield


@pytest.mark.usefixtures("benchmark_config")
@pytest.mark.parametrize("impl,workload", list(_cases()))
def test_implementation_trains(impl, workload):
    if impl in NEEDS:
        pytest.importorskip(NEEDS[impl])
    w = run.WORKLOADS[workload]._replace(batch=BATCH, min_acc=0.0)
    rec = run.measure(impl, w, _data(), SETTINGS)
    assert rec["impl"] == impl and rec["steps_per_epoch"] == STEPS
    for key in ("compile_s", "step_ms", "imgs_per_s", "epoch_s"):
        assert math.isfinite(rec[key]) and rec[key] > 0, key
    assert 0.0 <= rec["test_acc"] <= 1.0
    expected = {"mlp": 269_322, "cnn": 421_642, "wide": 7_462_282}[workload]
    assert rec["num_params"] == expected  # the same network in every framework
    assert rec["flops_per_step"] == run.model_flops(workload, BATCH)  # every impl, PyTorch too
    assert rec["tflops"] == pytest.approx(rec["flops_per_step"] / rec["step_ms"] / 1e9)
    if impl.startswith(("fnn", "stax", "flax", "equinox")):
        assert rec["xla_flops_per_step"] > 0


@pytest.mark.usefixtures("benchmark_config")
@pytest.mark.parametrize("workload", ["mlp", "cnn", "wide"])
def test_model_flops_match_xla_cpu_cost_analysis(workload):
    """The nominal count against XLA:CPU's count of the compiled fnn step (which counts convolutions;
    on a GPU it does not). XLA skips zero padding (7% of wide's 3x3 SAME taps) and adds the
    elementwise work, so the two agree within 10%; a count off by one of its three passes is 33% off."""
    if jax.default_backend() != "cpu":
        pytest.skip("XLA's cost analysis counts convolutions only on the CPU backend")
    impl_fnn = importlib.import_module(run.IMPLS["fnn-autodiff-step"])  # run.py put benchmarks/ on sys.path
    w = run.WORKLOADS[workload]  # the workload's own batch: at tiny ones the optimizer's flops weigh in
    loop = impl_fnn.build("fnn-autodiff-step", w, _data(), SETTINGS)
    xla = run.step_flops(loop.lowered_step())
    assert xla == pytest.approx(run.model_flops(workload, w.batch), rel=0.10)


def test_report():
    records = [
        {"impl": "stax", "workload": "cnn", "epoch_s": 60.0, "step_ms": 120.0},
        {"impl": "torch-eager", "workload": "cnn", "epoch_s": 24.0, "step_ms": 50.0},
        {"impl": "fnn-fused", "workload": "cnn", "epoch_s": 20.0, "step_ms": 42.0},
        {"impl": "flax-nnx", "workload": "cnn", "error": "boom"},
    ]
    for r in records:
        r.update(batch=128, steps_per_epoch=468, compile_s=1.0, imgs_per_s=1.0, test_acc=0.9, tflops=None)
    run.add_ratios(records)
    assert records[2]["epoch_vs_best_ref"] == pytest.approx(20 / 24)
    assert records[2]["best_ref_epoch"] == "torch-eager"
    text = run.table(records)
    assert "0.83× (torch-eager)" in text and "failed: boom" in text
    assert any("MET" in line for line in run.targets(records, quick=False))
