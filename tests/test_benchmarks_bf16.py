"""benchmarks/run.py --precision bfloat16 really trains in bfloat16 in every implementation.

For each JAX implementation, the lowered training step of the ``cnn`` workload (the program
whose flops the harness reports) must run every convolution and matmul in bfloat16 in the
bfloat16 build, and hold no bfloat16 at all in the float32 build; the parameters the optimizer
updates stay float32 in both. PyTorch has no program text to read: a forward hook checks that
its layers compute in bfloat16 under the loop's autocast. Lowering only (no compilation) keeps
this cheap; what remains is each framework's eager parameter initialization, a second or more
per framework on 2 cores, so by default CI checks fnn-fused, and the other variants are
marked slow (``pytest -m slow tests/test_benchmarks_bf16.py`` runs them).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import jax
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
_spec = importlib.util.spec_from_file_location("fnn_benchmarks_run_bf16", BENCH / "run.py")
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)

JAX_IMPLS = {"fnn-step": None, "fnn-fused": None, "fnn-manual-fused": None, "stax": None,
             "flax-nnx": "flax", "equinox": "equinox"}
FAST = {"fnn-fused"}   # the rest in the slow stage (each lowers a cnn step twice)
BATCH = 8
# `%y = stablehlo.convolution(...) ... -> tensor<8x28x28x32xbf16>` (also the generic "op"(...) form)
OP = re.compile(r"stablehlo\.(convolution|dot_general)\b.*->\s*tensor<([^>]*)>")


@pytest.fixture
def benchmark_config():
    """The benchmarks run with JAX's defaults, not the test suite's float64 and strict promotion."""
    with jax.enable_x64(False), jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        yield


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2 * BATCH, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, len(x)).astype(np.int32)
    return run.Data(x, y, x[:BATCH], y[:BATCH], 0.0, 1.0)


def _build(impl, precision, workload="cnn"):
    settings = run.Settings(quick=True, warmup=1, timed=1, fused_repeats=1, seed=0, precision=precision)
    w = run.WORKLOADS[workload]._replace(batch=BATCH, min_acc=0.0)
    return importlib.import_module(run.IMPLS[impl]).build(impl, w, _data(), settings)


def _ops(text: str) -> list[tuple[str, str]]:
    """(op, result element type) of every convolution and dot_general in a lowered program."""
    return [(m.group(1), m.group(2).rsplit("x", 1)[-1]) for m in map(OP.search, text.splitlines()) if m]


@pytest.mark.usefixtures("benchmark_config")
@pytest.mark.parametrize("impl", [pytest.param(i, marks=[] if i in FAST else [pytest.mark.slow])
                                  for i in JAX_IMPLS])
def test_jax_step_computes_in_bfloat16(impl):
    if JAX_IMPLS[impl]:
        pytest.importorskip(JAX_IMPLS[impl])
    for precision in ("float32", "bfloat16"):
        lowered = _build(impl, precision).lowered_step()
        text = lowered.as_text()
        ops = _ops(text)
        assert {op for op, _ in ops} == {"convolution", "dot_general"}, (precision, ops)
        if precision == "float32":
            assert "bf16" not in text
        else:
            assert all(dtype == "bf16" for _, dtype in ops), ops
        # float32 master parameters: every floating leaf of the step's state argument (the
        # parameters and the optimizer state) is float32 in both builds.
        state = lowered.args_info[0]
        dtypes = {str(a.dtype) for a in jax.tree.leaves(state) if "float" in str(a.dtype)}
        assert dtypes == {"float32"}, (precision, dtypes)


@pytest.mark.slow
@pytest.mark.usefixtures("benchmark_config")
def test_torch_autocast_computes_in_bfloat16():
    torch = pytest.importorskip("torch")
    for precision, expected in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        loop = _build("torch-eager", precision, workload="mlp")
        seen = []
        for layer in loop.module:
            if isinstance(layer, torch.nn.Linear):
                layer.register_forward_hook(lambda mod, inp, out, seen=seen: seen.append(out.dtype))
        loop.start_epoch(0)
        loss = loop.step(0)
        assert seen and set(seen) == {expected}, (precision, seen)
        assert loss.dtype == torch.float32   # autocast computes the cross-entropy in float32
        assert {p.dtype for p in loop.module.parameters()} == {torch.float32}
        assert {v.dtype for s in loop.opt.state.values() for v in s.values() if v.is_floating_point()} \
            == {torch.float32}


def test_report_per_precision():
    """Ratios compare within one workload and precision; targets read float32, plus the bf16 speed-up."""
    records = [
        {"impl": "stax", "precision": "float32", "epoch_s": 60.0, "step_ms": 120.0},
        {"impl": "fnn-fused", "precision": "float32", "epoch_s": 30.0, "step_ms": 60.0},
        {"impl": "stax", "precision": "bfloat16", "epoch_s": 10.0, "step_ms": 20.0},
        {"impl": "fnn-fused", "precision": "bfloat16", "epoch_s": 15.0, "step_ms": 30.0},
        {"impl": "torch-eager", "precision": "bfloat16", "error": "boom"},
    ]
    for r in records:
        r.update(workload="cnn", batch=128, steps_per_epoch=468, compile_s=1.0, imgs_per_s=1.0, test_acc=0.9,
                 tflops=None)
    run.add_ratios(records)
    assert records[1]["epoch_vs_best_ref"] == pytest.approx(0.5)   # float32 fnn vs float32 stax only
    assert records[3]["epoch_vs_best_ref"] == pytest.approx(1.5)   # bfloat16 fnn vs bfloat16 stax only
    text = run.table(records)
    assert "| fnn-fused | cnn | bfloat16 |" in text and "| torch-eager | cnn | bfloat16 | failed: boom" in text
    lines = run.targets(records, quick=False)
    assert any("best reference stax 60.00 s" in line and "MET" in line for line in lines)
    assert "cnn: fnn-fused bf16 15.00 s vs float32 30.00 s: 2.00× speed-up -> MET (target >= 1.5×)" in lines
