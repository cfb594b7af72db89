"""Benchmark fnn against stax, Flax NNX, Equinox and PyTorch on fixed Fashion-MNIST workloads.

    python benchmarks/run.py                  # full run: 60,000-image epochs (tens of minutes on 2 CPU cores)
    python benchmarks/run.py --quick          # smoke run: 6,400 images (50 batches), a few minutes
    python benchmarks/run.py --impl stax fnn-fused --workload mlp
    python benchmarks/run.py --workload wide --precision float32 bfloat16   # on a GPU
    python benchmarks/run.py --quick --batches 4 --timed 3 --precision float32 bfloat16  # tiny smoke run

Each (implementation, workload, precision) triple runs in its own child process, one after the
other, so memory, compilation caches and thread pools never leak from one to the next. Every child
trains on the same data: real Fashion-MNIST, standardized with one global mean and standard
deviation (over every pixel of the 60,000 training images), held on the device, shuffled once
per epoch, remainder dropped (468 batches of 128). Figures per pair:

- ``compile_s``: wall time of the first training step (tracing and compilation included);
  for the fused fnn variants, the ahead-of-time compilation of the whole-epoch program.
- ``step_ms``: the median of synchronized steady-state steps (50 after 5 warm-up steps;
  ``--quick``: 20 after 3). Fused variants cannot stop between steps: their step time is the
  median time of a 50-step fused epoch on the 6,400-image subset, divided by 50.
- ``imgs_per_s``: batch / step time. ``tflops``: ``model_flops`` (the nominal flops of one
  training step, the same count for every implementation) divided by the step time;
  ``xla_flops_per_step``: XLA's cost analysis of the compiled step (JAX variants only).
- ``epoch_s``: one epoch in the framework's usual loop (a Python loop over jitted or eager
  steps for the references and ``fnn-autodiff-step``/``fnn-step``, ``fnn.train.fit(fused=True)`` for the fused
  variants), after the step timing.
- ``test_acc``: accuracy on the 10,000 test images (``--quick``: the first 2,000) after the
  whole run (the steps above plus that epoch); a check that every implementation really trains.

``--precision float32 bfloat16`` runs every pair in each precision. ``bfloat16`` is the same
mixed-precision recipe in every framework: float32 master parameters and optimizer state,
the forward and backward pass in bfloat16 (inputs and parameters cast to it), the logits cast
to float32 before the softmax cross-entropy (``fnn.precision.apply_policy`` for fnn; casts in
the loss for stax and Equinox; ``dtype=bfloat16, param_dtype=float32`` layers for Flax NNX;
``torch.autocast`` for PyTorch). Test accuracy is measured with the model in the same precision.
Fnn rows are compared only with reference rows of the same workload and precision.

Smoke runs of the harness itself (e.g. before a GPU run): ``--batches N`` (with ``--quick``
only) makes the quick subset N batches instead of 50, and ``--timed N`` times N steps after
min(warm-up, N) warm-up steps (fused variants: at most N timed fused epochs). ``--batches 4
--timed 3`` passes every implementation's accuracy check (fewer batches may train too little
for the 0.5 check); the figures of such a run are not measurements.

The table, the ratios of every fnn row to the best reference and the target summary go to
stdout with one JSON line per pair; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))          # the impl_* modules
sys.path.insert(1, str(HERE.parent))   # fnn from the checkout, also when it is not installed

from machine import cpu_flags, cpu_model  # noqa: E402


class Workload(NamedTuple):
    """A fixed training job; ``build`` in every impl module knows each name."""

    name: str
    batch: int
    optimizer: str      # "adam" or "momentum"
    lr: float
    momentum: float
    min_acc: float      # test accuracy a full run must exceed (0: no check)
    gpu_only: bool
    description: str


WORKLOADS = {
    "cnn": Workload("cnn", 128, "adam", 1e-3, 0.0, 0.85, False,
                    "Conv32-ReLU-MaxPool2-Conv64-ReLU-MaxPool2-Dense128-ReLU-Dense10 (3x3 SAME), Adam 1e-3"),
    "mlp": Workload("mlp", 128, "momentum", 0.05, 0.9, 0.80, False,
                    "784-256-ReLU-256-ReLU-10, SGD momentum 0.9, lr 0.05"),
    "wide": Workload("wide", 512, "adam", 1e-3, 0.0, 0.0, True,
                     "Conv128-Conv128-MaxPool2-Conv256-Conv256-MaxPool2-Dense512-Dense10 (3x3 SAME, ReLU), "
                     "Adam 1e-3"),
}

# The layers with multiply-adds, per workload, for the nominal flop count (model_flops):
# ("conv", positions, in channels, out channels, kernel taps) or ("dense", in, out).
FLOP_LAYERS = {
    "cnn": (("conv", 28 * 28, 1, 32, 9), ("conv", 14 * 14, 32, 64, 9), ("dense", 3136, 128), ("dense", 128, 10)),
    "mlp": (("dense", 784, 256), ("dense", 256, 256), ("dense", 256, 10)),
    "wide": (("conv", 28 * 28, 1, 128, 9), ("conv", 28 * 28, 128, 128, 9), ("conv", 14 * 14, 128, 256, 9),
             ("conv", 14 * 14, 256, 256, 9), ("dense", 7 * 7 * 256, 512), ("dense", 512, 10)),
}


def model_flops(workload: str, batch: int) -> float:
    """Nominal flops of one training step: the same count for every implementation, PyTorch included.

    2 x the multiply-adds of the convolutions and dense layers, three times over: the forward
    pass, the weight gradient and the input gradient (all layers but the first, whose input
    needs none). Zero padding is counted as if it were data, as PyTorch's and fvcore's flop
    counters do (XLA's cost analysis skips it: about 5% less for 3x3 SAME convolutions at
    14x14-28x28). Biases, activations, pooling, the loss and the optimizer are left out.
    """
    macs = [math.prod(layer[1:]) for layer in FLOP_LAYERS[workload]]
    return 2.0 * batch * (3 * sum(macs) - macs[0])


# impl name -> module. Reference implementations are the ones not starting with "fnn".
IMPLS = {
    "fnn-autodiff-step": "impl_fnn",
    "fnn-step": "impl_fnn",
    "fnn-fused": "impl_fnn",
    "fnn-manual-fused": "impl_fnn",
    "fnn-custom_vjp-fused": "impl_fnn",
    "fnn-autodiff-fused": "impl_fnn",
    "stax": "impl_stax",
    "flax-nnx": "impl_flax",
    "equinox": "impl_equinox",
    "torch-eager": "impl_torch",
    "torch-compile": "impl_torch",
}
QUICK_TEST = 2_000    # --quick: test accuracy on the first 2,000 test images
QUICK_BATCHES = 50       # --quick: 50 batches (6,400 images at batch 128); --batches N changes it
FULL_TRAIN = 60_000
PRECISIONS = ("float32", "bfloat16")


class Settings(NamedTuple):
    quick: bool
    warmup: int          # steps after the first (compiling) one, before timing
    timed: int           # synchronized steps timed for step_ms
    fused_repeats: int   # 50-step fused epochs timed for the fused variants' step_ms
    seed: int
    precision: str = "float32"       # or "bfloat16": mixed precision, float32 master parameters
    quick_batches: int = QUICK_BATCHES  # --quick: the training subset, in batches


class Data(NamedTuple):
    """float32 NHWC images (N, 28, 28, 1), standardized; int32 labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: float
    std: float


def load_data(quick: bool, batch: int, quick_batches: int = QUICK_BATCHES) -> Data:
    """Real Fashion-MNIST, one global mean/std from all 60,000 training images, in NumPy only.

    NumPy only so that a child process never initializes a JAX backend it does not use (on a
    GPU, JAX would reserve most of the memory that PyTorch needs).
    """
    from fnn.data import load_fashion_mnist

    ds = load_fashion_mnist(download=False)
    if ds.is_sample:
        raise SystemExit("benchmarks need the full Fashion-MNIST (apt-get install dataset-fashion-mnist "
                         "or FNN_DATA=...), not the embedded sample")
    (x_train, y_train), (x_test, y_test) = ds.train, ds.test
    mean = float(x_train.mean(dtype=np.float64))
    std = float(x_train.std(dtype=np.float64, ddof=1))
    norm = lambda x: ((x.astype(np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)
    if quick:
        n = quick_batches * batch
        x_train, y_train = x_train[:n], y_train[:n]
        x_test, y_test = x_test[:QUICK_TEST], y_test[:QUICK_TEST]
    return Data(norm(x_train), y_train.astype(np.int32), norm(x_test), y_test.astype(np.int32), mean, std)


# ----------------------------------------------------------------------------------------
# The measurement, shared by every per-step loop


def median_ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


def measure_steps(loop, steps: int, settings: Settings) -> dict:
    """compile_s (first step), step_ms (median of synchronized steps), epoch_s (one full loop)."""
    loop.start_epoch(0)
    t = time.perf_counter()
    loop.sync(loop.step(0))
    compile_s = time.perf_counter() - t
    i = 1
    for _ in range(settings.warmup):
        loop.sync(loop.step(i % steps))
        i += 1
    times = []
    for _ in range(settings.timed):
        t = time.perf_counter()
        loop.sync(loop.step(i % steps))
        times.append(time.perf_counter() - t)
        i += 1
    # The epoch in the usual loop: shuffle, dispatch every step, wait once at the end.
    t = time.perf_counter()
    loop.start_epoch(1)
    handle = None
    for i in range(steps):
        handle = loop.step(i)
    loop.sync(handle)
    epoch_s = time.perf_counter() - t
    return {"compile_s": compile_s, "step_ms": median_ms(times), "epoch_s": epoch_s,
            "timed_steps": settings.timed}


def step_flops(lowered) -> float | None:
    """XLA's flop count of one lowered training step (the JAX loops' ``lowered_step()``; PyTorch has none).

    Reported as ``xla_flops_per_step``, not used for ``tflops``: on a GPU the convolutions are
    cuDNN calls, which XLA's cost analysis counts as zero flops (the H200 run of 2026-12-04
    counted 0.4 of simple_cnn's 3.2 GFLOP per step).
    """
    cost = lowered.compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def run_child(impl: str, workload: Workload, settings: Settings) -> dict:
    """Load the data, then build one implementation on one workload and measure it."""
    return measure(impl, workload, load_data(settings.quick, workload.batch, settings.quick_batches), settings)


def measure(impl: str, workload: Workload, data: Data, settings: Settings) -> dict:
    """Build one implementation on one workload, measure it, and return its record."""
    steps = len(data.x_train) // workload.batch
    module = importlib.import_module(IMPLS[impl])
    t0 = time.perf_counter()
    loop = module.build(impl, workload, data, settings)
    build_s = time.perf_counter() - t0
    if hasattr(loop, "measure"):
        figures = loop.measure(steps)
    else:
        figures = measure_steps(loop, steps, settings)
    test_acc = float(loop.test_accuracy())
    xla_flops = step_flops(loop.lowered_step()) if hasattr(loop, "lowered_step") else None
    flops = model_flops(workload.name, workload.batch)
    step_ms = figures["step_ms"]
    record = {
        "impl": impl,
        "workload": workload.name,
        "precision": settings.precision,
        "device": device_label(loop.device()),
        "compile_s": figures["compile_s"],
        "step_ms": step_ms,
        "imgs_per_s": workload.batch / (step_ms / 1e3),
        "epoch_s": figures["epoch_s"],
        "test_acc": test_acc,
        "tflops": flops / (step_ms / 1e3) / 1e12,
        "flops_per_step": flops,
        "xla_flops_per_step": xla_flops,
        "num_params": loop.num_params(),
        "batch": workload.batch,
        "steps_per_epoch": steps,
        "epoch_images": steps * workload.batch,
        "quick": settings.quick,
        "build_s": build_s,
    }
    record.update(figures.get("extra", {}))
    record.update(loop.info())
    min_acc = workload.min_acc if not settings.quick else min(workload.min_acc, 0.5)
    trained_full = not record.get("epoch_extrapolated", False)
    record["acc_ok"] = (test_acc > min_acc) if (min_acc and trained_full) else None
    return record


# ----------------------------------------------------------------------------------------
# The parent: environment, children, table, ratios, targets


def device_label(device: str) -> str:
    """"cpu" becomes the CPU model and core count; a GPU name stays as it is."""
    return f"{cpu_model()} ({os.cpu_count()} cores)" if device == "cpu" else device


def probe() -> dict:
    """Versions and devices, from a child process so that the parent never holds a device."""
    info = {"python": platform.python_version(), "cpu": cpu_model(), "cores": os.cpu_count()}
    for name in ("jax", "jaxlib", "flax", "equinox", "optax", "torch", "numpy"):
        try:
            info[name] = importlib.import_module(name).__version__
        except ImportError:
            info[name] = None
    import jax

    info["jax_backend"] = jax.default_backend()
    info["jax_device"] = jax.devices()[0].device_kind
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch_threads"] = info["torch_cuda"] = None
    from fnn.train import resolve_grad_mode

    info["fnn_auto_mode"] = resolve_grad_mode("auto")
    from fnn._compile import cpu_options

    info["fnn_cpu_options"] = cpu_options()
    return info


def _child_cmd(extra: list[str]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve())] + extra


def _run_json(cmd: list[str], timeout: float) -> dict:
    """Run a child; its last stdout line starting with RESULT is its JSON record."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"child exited with status {proc.returncode} and no result:\n{proc.stdout[-2000:]}")


def default_impls(env: dict, workload: str, explicit: bool) -> list[str]:
    on_gpu = env["jax_backend"] != "cpu"
    impls = list(IMPLS)
    if env["fnn_auto_mode"] == "custom_vjp" and not explicit:
        impls.remove("fnn-custom_vjp-fused")   # it is what fnn-fused runs
    if env["fnn_auto_mode"] == "autodiff" and not explicit:
        impls.remove("fnn-autodiff-fused")     # idem
    if not on_gpu and workload == "wide":
        return []
    return impls


def fmt(v, spec: str, width: int) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return f"{'-':>{width}}"
    return format(v, f">{width}{spec}")


def _precision(r: dict) -> str:
    return r.get("precision", "float32")


def _refs(records: list[dict], workload: str, precision: str = "float32") -> list[dict]:
    """The reference rows of a workload in one precision that did not fail."""
    return [r for r in records
            if r["workload"] == workload and _precision(r) == precision and not r["impl"].startswith("fnn")
            and "error" not in r]


def add_ratios(records: list[dict]) -> None:
    """fnn rows: epoch_s and step_ms divided by the best reference's on the same workload and precision."""
    for w, p in {(r["workload"], _precision(r)) for r in records}:
        refs = _refs(records, w, p)
        best_epoch = min(refs, key=lambda r: r["epoch_s"], default=None)
        best_step = min(refs, key=lambda r: r["step_ms"], default=None)
        for r in records:
            if r["workload"] != w or _precision(r) != p or not r["impl"].startswith("fnn") or "error" in r:
                continue
            if best_epoch is not None:
                r["epoch_vs_best_ref"] = r["epoch_s"] / best_epoch["epoch_s"]
                r["best_ref_epoch"] = best_epoch["impl"]
            if best_step is not None:
                r["step_vs_best_ref"] = r["step_ms"] / best_step["step_ms"]
                r["best_ref_step"] = best_step["impl"]


def table(records: list[dict]) -> str:
    head = ("| impl | workload | precision | compile_s | step_ms | imgs/s | epoch_s | test_acc | TFLOP/s "
            "| epoch ÷ best ref | step ÷ best ref |")
    lines = [head, "|" + "---|" * 11]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['impl']} | {r['workload']} | {_precision(r)} | failed: {r['error'][:60]} "
                         "||||||||")
            continue
        mark = "*" if r.get("epoch_extrapolated") else ""
        ratio_e = f"{r['epoch_vs_best_ref']:.2f}× ({r['best_ref_epoch']})" if "epoch_vs_best_ref" in r else ""
        ratio_s = f"{r['step_vs_best_ref']:.2f}× ({r['best_ref_step']})" if "step_vs_best_ref" in r else ""
        acc = fmt(r["test_acc"], ".4f", 6) + ("" if r.get("acc_ok") is not False else " LOW")
        lines.append(f"| {r['impl']} | {r['workload']} | {_precision(r)} | {fmt(r['compile_s'], '.2f', 5)} | "
                     f"{fmt(r['step_ms'], '.2f', 6)} | {fmt(r['imgs_per_s'], '.0f', 6)} | "
                     f"{fmt(r['epoch_s'], '.2f', 6)}{mark} | {acc} | {fmt(r.get('tflops'), '.3f', 5)} | "
                     f"{ratio_e} | {ratio_s} |")
    return "\n".join(lines)


def _get(records, impl, workload, precision="float32"):
    for r in records:
        if r["impl"] == impl and r["workload"] == workload and _precision(r) == precision and "error" not in r:
            return r
    return None


def targets(records: list[dict], quick: bool) -> list[str]:
    """The issue's targets, measured against this run's float32 rows (and fnn-fused's bfloat16
    speed-up over float32). Quick runs scale epochs to full-data batches (468 at batch 128)."""
    out = []
    scale = lambda r: (FULL_TRAIN // r["batch"]) / r["steps_per_epoch"]
    # --quick: every epoch is the same number of batches (50, or --batches N)
    steps = next((r["steps_per_epoch"] for r in records if "steps_per_epoch" in r), QUICK_BATCHES)
    note = f" (quick: epoch scaled ×468/{steps})" if quick else ""

    def epoch(r):
        return r["epoch_s"] * (scale(r) if quick else 1.0)

    def verdict(ok):
        return "MET" if ok else "MISSED"

    fused = _get(records, "fnn-fused", "cnn")
    if fused:
        refs = _refs(records, "cnn")
        if refs:
            best = min(refs, key=lambda r: r["epoch_s"])
            out.append(f"cnn: fnn-fused epoch {epoch(fused):.2f} s vs best reference {best['impl']} "
                       f"{epoch(best):.2f} s{note}: {fused['epoch_s'] / best['epoch_s']:.2f}× -> "
                       f"{verdict(fused['epoch_s'] < best['epoch_s'])} (target: faster than every reference)")
        out.append(f"cnn: fnn-fused epoch {epoch(fused):.2f} s vs the reference harness's PyTorch 24 s"
                   f"{note} -> {verdict(epoch(fused) < 24.0)} (target < 24 s)")
    fused = _get(records, "fnn-fused", "mlp")
    if fused:
        out.append(f"mlp: fnn-fused epoch {epoch(fused):.3f} s{note} -> {verdict(epoch(fused) <= 0.7)} "
                   f"(target <= 0.7 s)")
    for w in ("cnn", "mlp", "wide"):
        stax = _get(records, "stax", w)
        for name in ("fnn-autodiff-step", "fnn-step"):
            step = _get(records, name, w)
            if step and stax:
                ratio = step["step_ms"] / stax["step_ms"]
                out.append(f"{w}: {name} ({step.get('grad_mode')}) {step['step_ms']:.2f} ms vs stax "
                           f"{stax['step_ms']:.2f} ms per step: {ratio:.3f}× -> {verdict(ratio <= 1.05)} "
                           f"(target within 5%)")
        manual = _get(records, "fnn-manual-fused", w)
        for base_name in ("fnn-autodiff-fused", "fnn-fused"):
            base = _get(records, base_name, w)
            if manual and base:
                ratio = manual["epoch_s"] / base["epoch_s"]
                est = (f" (autodiff epoch extrapolated from {base.get('fused_epoch_steps')} steps)"
                       if base.get("epoch_extrapolated") else "")
                out.append(f"{w}: fnn-manual-fused epoch {manual['epoch_s']:.2f} s vs {base_name} "
                           f"({base.get('grad_mode')}) {base['epoch_s']:.2f} s{est}: {ratio:.2f}× -> "
                           f"{verdict(ratio <= 1.25)} (target within 1.25×)")
    for w in dict.fromkeys(r["workload"] for r in records):
        f32, bf16 = _get(records, "fnn-fused", w), _get(records, "fnn-fused", w, "bfloat16")
        if f32 and bf16:
            speedup = f32["epoch_s"] / bf16["epoch_s"]
            out.append(f"{w}: fnn-fused bf16 {bf16['epoch_s']:.2f} s vs float32 {f32['epoch_s']:.2f} s: "
                       f"{speedup:.2f}× speed-up -> {verdict(speedup >= 1.5)} (target >= 1.5×)")
    return out


def parent(args) -> int:
    t_start = time.perf_counter()
    env = _run_json(_child_cmd(["--probe"]), timeout=600)
    on_gpu = env["jax_backend"] != "cpu"
    device = env["torch_cuda"] or env["jax_device"] if on_gpu else f"{env['cpu']} ({env['cores']} cores)"
    kind = "quick" if args.quick else "full"
    print(f"# fnn benchmarks, {datetime.date.today().isoformat()}, {kind} run", flush=True)
    print(f"# device: {device}; jax backend {env['jax_backend']}; torch threads {env['torch_threads']}; "
          f"fnn auto grad mode: {env['fnn_auto_mode']}")
    if not on_gpu:
        print(f"# cpu vector flags: {' '.join(cpu_flags()) or 'none found'}; fnn's XLA:CPU compiler options: "
              f"{env['fnn_cpu_options'] or 'none (XLA defaults)'}")
    names = ("python", "jax", "jaxlib", "flax", "equinox", "optax", "torch", "numpy")
    print("# versions: " + ", ".join(f"{k} {env[k]}" for k in names))
    try:
        load = os.getloadavg()
        print(f"# load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    except OSError:
        load = None
    print("# command: python benchmarks/run.py " + " ".join(sys.argv[1:]), flush=True)

    workloads = args.workload or [w for w in WORKLOADS if on_gpu or not WORKLOADS[w].gpu_only]
    precisions = list(dict.fromkeys(args.precision))
    smoke = (["--batches", str(args.batches)] if args.batches else []) + \
        (["--timed", str(args.timed)] if args.timed else [])
    records = []
    for w in workloads:
        if WORKLOADS[w].gpu_only and not on_gpu:
            print(f"note: workload {w!r} is meant for a GPU; running it on CPU because it was asked for",
                  file=sys.stderr)
        impls = args.impl or default_impls(env, w, explicit=False)
        for precision in precisions:
            for impl in impls:
                cmd = _child_cmd(["--child", impl, "--workload", w, "--precision", precision,
                                  "--seed", str(args.seed)] + (["--quick"] if args.quick else []) + smoke)
                print(f"[{time.perf_counter() - t_start:7.1f} s] {impl} on {w} in {precision} ...",
                      file=sys.stderr, flush=True)
                try:
                    rec = _run_json(cmd, timeout=args.timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    rec = {"impl": impl, "workload": w, "precision": precision,
                           "error": str(e).splitlines()[0] if str(e) else repr(e)}
                print(f"           -> {json.dumps(rec)}", file=sys.stderr, flush=True)
                records.append(rec)

    add_ratios(records)
    print()
    print(table(records))
    print()
    if any(r.get("epoch_extrapolated") for r in records):
        print("'*' epoch extrapolated from one short fused epoch (step_ms × batches per epoch; 50 batches, "
              "--quick: 10): autodiff's conv weight gradient inside lax.scan is XLA:CPU's slow path.")
    if args.quick:
        print(f"--quick: every epoch is the {args.batches or QUICK_BATCHES}-batch subset, not 60,000 images; "
              "test_acc is checked against 0.5 only.")
    print()
    print("Targets:")
    for line in targets(records, args.quick):
        print("  " + line)
    print()
    for rec in records:
        print(json.dumps(rec))
    if load is not None:
        end = os.getloadavg()
        print(f"# load average at end: {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}; "
              f"total {time.perf_counter() - t_start:.0f} s")
    failed = [r for r in records if "error" in r or r.get("acc_ok") is False]
    return 1 if failed else 0


def positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"smoke run on a {QUICK_BATCHES}-batch subset")
    ap.add_argument("--impl", nargs="+", choices=list(IMPLS), help="only these implementations")
    ap.add_argument("--workload", nargs="+", choices=list(WORKLOADS), help="only these workloads "
                    "(default: cnn and mlp, plus wide on a GPU)")
    ap.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["float32"],
                    help="run every pair in each of these precisions; bfloat16: mixed precision "
                         "(float32 master parameters, bfloat16 forward and backward)")
    ap.add_argument("--batches", type=positive_int, help="with --quick: the subset is this many batches "
                    f"instead of {QUICK_BATCHES} (a smoke test of the harness)")
    ap.add_argument("--timed", type=positive_int, help="timed steps (default 50, --quick: 20); the warm-up "
                    "becomes min(warm-up, N) and the fused variants time at most N epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per child process")
    ap.add_argument("--child", choices=list(IMPLS), help=argparse.SUPPRESS)
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.batches and not args.quick:
        ap.error("--batches needs --quick (a full run trains on all 60,000 images)")

    if args.probe:
        print("RESULT " + json.dumps(probe()), flush=True)
        return 0
    if args.child:
        timed = args.timed or (20 if args.quick else 50)
        settings = Settings(quick=args.quick, warmup=min(3 if args.quick else 5, timed), timed=timed,
                            fused_repeats=min(1 if args.quick else 3, timed), seed=args.seed,
                            precision=args.precision[0], quick_batches=args.batches or QUICK_BATCHES)
        rec = run_child(args.child, WORKLOADS[args.workload[0]], settings)
        print("RESULT " + json.dumps(rec), flush=True)
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
