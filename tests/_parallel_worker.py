"""Subprocess side of tests/test_parallel.py: training on many fake CPU devices.

The device count of XLA:CPU is fixed when JAX starts, so the multi-device runs happen in fresh
processes that set their own XLA_FLAGS (the test process keeps its single device):

    python tests/_parallel_worker.py single OUT.json
        8 devices in one process: every case trains with a mesh and without one (device 0)
        and writes the largest differences, shardings and compiled shapes as JSON.
    python tests/_parallel_worker.py multi PROCESS_ID PORT OUT.npz
        one of 2 processes x 4 devices joined by jax.distributed over 127.0.0.1:PORT; trains
        on the 8-device mesh and saves the final parameters.

Both mirror tests/conftest.py (float64 on, strict dtype promotion, rank promotion refused,
XLA optimization level 0).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

import numpy as np

N, BATCH, EPOCHS = 100, 32, 2


def configure(devices: int) -> None:
    """Fake `devices` CPU devices; must run before JAX is imported."""
    os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                               f"--xla_backend_optimization_level=0")
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_numpy_rank_promotion", "raise")


def data():
    """N tiny 6x6x1 images with labels in [0, 10), float32."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((N, 6, 6, 1)).astype(np.float32), rng.integers(0, 10, N).astype(np.int32)


def models():
    """An MLP with dropout and a conv net with BatchNorm and max pooling."""
    from fnn.layers.activation import Relu
    from fnn.layers.combinators import serial
    from fnn.layers.conv import Conv2D
    from fnn.layers.dense import Dense
    from fnn.layers.dropout import Dropout
    from fnn.layers.norm import BatchNorm
    from fnn.layers.pool import MaxPool
    from fnn.layers.reshape import Flatten

    mlp = serial(Flatten(), Dense(16), Relu(), Dropout(0.2), Dense(10))
    # No conv bias before BatchNorm: its gradient is zero up to rounding, and adam would turn
    # that rounding noise into full-size steps that differ between runs.
    cnn = serial(Conv2D(4, 3, padding="SAME", use_bias=False), BatchNorm(), Relu(), MaxPool((2, 2)),
                 Flatten(), Dense(10))
    return {"mlp": mlp, "cnn": cnn}


def train(model, *, mesh=None, optimizer="adam", **kw):
    """EPOCHS epochs of adam (or "sgd") on data() from key 0: -> (TrainState, History).
    ``precision="bfloat16"`` trains ``fnn.precision.apply_policy(model, "bfloat16")``."""
    import jax

    from fnn import losses, optim
    from fnn.precision import apply_policy
    from fnn.train import fit

    kw = {"epochs": EPOCHS, "batch_size": BATCH, "key": jax.random.key(0), **kw}
    if "precision" in kw:
        model = apply_policy(model, kw.pop("precision"))
    opt = optim.adam(1e-2) if optimizer == "adam" else optim.sgd(0.1)
    return fit(model, losses.softmax_cross_entropy, opt, data(), mesh=mesh, **kw)


def host_leaves(tree):
    import jax
    import jax.numpy as jnp

    def host(a):
        return np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a)
    return [host(a) for a in jax.tree.leaves(tree)]


def max_errors(a, b):
    """(max |a - b|, max (|a - b| - 1e-6) / |b|) over every leaf of two pytrees.

    The second is <= rtol exactly when np.allclose(a, b, rtol, atol=1e-6) holds.
    """
    pairs = [(u.astype(np.float64), v.astype(np.float64)) for u, v in
             zip(host_leaves(a), host_leaves(b), strict=True)]
    diff = [np.abs(u - v) for u, v in pairs]
    rel = [np.maximum(d - 1e-6, 0.0) / np.maximum(np.abs(v), 1e-30)
           for d, (_, v) in zip(diff, pairs, strict=True)]
    return max((float(d.max()) for d in diff if d.size), default=0.0), \
        max((float(r.max()) for r in rel if r.size), default=0.0)


# Cases: (name, model, mesh kind, fit keywords). "data": fnn.parallel.data_mesh() (Auto axes);
# "make_mesh": jax.make_mesh (Explicit axes in current JAX); "2d set_mesh": a (4, 2) make_mesh mesh,
# batch on "data", that is also the caller's jax.set_mesh context. (Autodiff's conv gradient
# inside lax.scan is slow on XLA:CPU, so the conv net's autodiff case runs per step.) Adam hides a
# gradient scaled by a constant (its step is invariant to it, up to eps): the "sgd" cases would
# show per-device gradients summed instead of averaged, or the padded batch's mask count (4 real
# of 32 in the last step) taken per device instead of over the whole batch.
CASES = [
    ("mlp auto (custom_vjp) fused, 2-D mesh in set_mesh, val", "mlp", "2d set_mesh", {"val_data": "train"}),
    ("mlp autodiff per-step", "mlp", "make_mesh", {"grad_mode": "autodiff", "fused": False}),
    ("mlp manual fused, bfloat16", "mlp", "data", {"grad_mode": "manual", "precision": "bfloat16"}),
    ("cnn manual fused", "cnn", "data", {"grad_mode": "manual"}),
    ("cnn autodiff per-step, pad", "cnn", "make_mesh",
     {"grad_mode": "autodiff", "fused": False, "remainder": "pad"}),
    ("mlp manual fused, pad, sgd", "mlp", "data", {"grad_mode": "manual", "remainder": "pad", "optimizer": "sgd"}),
    ("mlp custom_vjp per-step, pad, sgd", "mlp", "make_mesh",
     {"grad_mode": "custom_vjp", "fused": False, "remainder": "pad", "optimizer": "sgd"}),
    ("cnn manual fused, pad, sgd", "cnn", "data", {"grad_mode": "manual", "remainder": "pad", "optimizer": "sgd"}),
]

# The two-process run: the MLP, fused (manual gradient) and per step (autodiff).
MULTI_CASES = (("mlp_fused", {"grad_mode": "manual"}),
               ("mlp_step", {"grad_mode": "autodiff", "fused": False}))


def run_single(out: str) -> None:
    configure(8)
    import contextlib

    import jax
    from jax.sharding import PartitionSpec as P

    from fnn import losses, optim, parallel
    from fnn.train import init_train_state
    from fnn.train.epoch import programs as fit_programs

    nets = models()
    meshes = {"data": parallel.data_mesh(), "make_mesh": jax.make_mesh((8,), ("data",)),
              "2d set_mesh": jax.make_mesh((4, 2), ("data", "model"))}
    start = time.process_time()
    results = {"devices": len(jax.devices()), "cases": [],
               "make_mesh_axis_types": [str(t) for t in getattr(meshes["make_mesh"], "axis_types", ())]}
    for name, model_name, mesh_kind, kw in CASES:
        t0 = time.process_time()
        kw = dict(kw)
        if kw.get("val_data") == "train":
            kw["val_data"] = data()
        ref, ref_hist = train(nets[model_name], **kw)
        scope = jax.set_mesh(meshes[mesh_kind]) if "set_mesh" in mesh_kind else contextlib.nullcontext()
        with scope:
            ts, hist = train(nets[model_name], mesh=meshes[mesh_kind], **kw)
        leaf = jax.tree.leaves(ts.params)[0]
        abs_err, rel_err = max_errors(ts.params, ref.params)
        state_abs, _ = max_errors(ts.state, ref.state)
        results["cases"].append({
            "name": name, "abs_err": abs_err, "rel_err": rel_err, "state_abs_err": state_abs,
            "loss": hist.train_loss, "ref_loss": ref_hist.train_loss,
            "val_accuracy": hist.val_accuracy, "ref_val_accuracy": ref_hist.val_accuracy,
            "spec": str(leaf.sharding.spec), "replicated": leaf.sharding.spec == P(),
            "mesh_axis_types": [str(t) for t in getattr(leaf.sharding.mesh, "axis_types", ())],
            "num_devices": len(leaf.sharding.device_set),
            "shard_shape": list(leaf.addressable_shards[0].data.shape), "shape": list(leaf.shape),
            "param_dtypes": sorted({str(a.dtype) for a in jax.tree.leaves(ts.params)}),
            "cpu_seconds": time.process_time() - t0,
        })

    # Compiled per-device shapes of the fused epoch of the conv net: the conv runs on 32 / 8 = 4
    # examples per device, the (steps, 32) batch indices are split on dim 1 (each device gathers
    # its own 4 rows per step), and an all-reduce sums the gradients.
    dp = parallel.data_parallel(meshes["data"], "data", batch_size=BATCH)
    opt = optim.adam(1e-2)
    programs = fit_programs(nets["cnn"], losses.softmax_cross_entropy, opt, None, "manual", BATCH, "drop", dp)
    ts = dp.replicate(init_train_state(nets["cnn"], opt, (6, 6, 1), key=jax.random.key(0)))
    x, y = data()
    scale = dp.replicate(np.ones((), np.float64))
    hlo = programs.epoch.lower(ts, *dp.replicate((x, y)), scale).compile().as_text()
    results["hlo"] = {
        "per_device_batch": "f32[4,6,6,1]" in hlo, "global_batch": "f32[32,6,6,1]" in hlo,
        "stacked_per_device": bool(re.search(r"s32\[3,4\]", hlo)),
        "all_reduce": len(re.findall(r"all-reduce(-start)?\(", hlo)),
    }
    put = dp.put_batch(x[:BATCH])
    results["put_batch_shards"] = sorted({tuple(s.data.shape) for s in put.addressable_shards})

    try:
        train(nets["mlp"], mesh=meshes["data"], batch_size=20)
        results["indivisible_error"] = None
    except ValueError as e:
        results["indivisible_error"] = str(e)
    results["cpu_seconds"] = time.process_time() - start
    with open(out, "w", encoding="utf-8") as f:
        json.dump(results, f)


def run_multi(process_id: int, port: int, out: str) -> None:
    configure(4)
    import jax

    from fnn import parallel

    parallel.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                        initialization_timeout=60)
    mesh = parallel.data_mesh()
    assert jax.process_count() == 2 and len(jax.devices()) == 8 and len(jax.local_devices()) == 4
    nets = models()
    saved = {}
    for name, kw in MULTI_CASES:
        ts, hist = train(nets["mlp"], mesh=mesh, **kw)
        for i, a in enumerate(host_leaves(ts.params)):
            saved[f"{name}/{i}"] = a
        saved[f"{name}/loss"] = np.asarray(hist.train_loss)
    np.savez(out, **saved)
    jax.distributed.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if sys.argv[1] == "single":
        run_single(sys.argv[2])
    elif sys.argv[1] == "multi":
        run_multi(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
