"""fnn.parallel: data-parallel fit over a Mesh equals one-device training.

The multi-device runs happen in subprocesses (tests/_parallel_worker.py) with 8 fake CPU
devices, so the device count never leaks into this process: one process with 8 devices, and
two processes with 4 devices each joined by jax.distributed over 127.0.0.1.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import _parallel_worker as worker
import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from fnn import losses, optim, parallel
from fnn.train import fit

WORKER = Path(__file__).with_name("_parallel_worker.py")
ROOT = WORKER.parent.parent
TIMEOUT = 240  # seconds per subprocess; a hung collective must fail the test, not CI
RTOL = 1e-5    # params vs one device: allclose(rtol=RTOL, atol=1e-6); measured ~0 beyond atol


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    paths = [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------
# In this process (one device)


def test_data_mesh_is_auto_and_checks_num_devices():
    mesh = parallel.data_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == len(jax.devices())
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert parallel.data_mesh(1, axis="batch").axis_names == ("batch",)
    for bad in (0, len(jax.devices()) + 1, 1.5, True):
        with pytest.raises(ValueError, match="num_devices"):
            parallel.data_mesh(bad)


def test_as_auto_mesh_converts_explicit_axes():
    explicit = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    auto = parallel.as_auto_mesh(explicit)
    assert auto.axis_names == explicit.axis_names and list(auto.devices.flat) == list(explicit.devices.flat)
    assert auto.axis_types == (jax.sharding.AxisType.Auto,)
    assert parallel.as_auto_mesh(auto) is auto


def test_data_parallel_errors():
    mesh = parallel.data_mesh(1)
    with pytest.raises(ValueError, match="must be a jax.sharding.Mesh"):
        parallel.data_parallel("data")
    with pytest.raises(ValueError, match=r"batch_axis 'batch' is not an axis of the mesh, whose axes are \["):
        parallel.data_parallel(mesh, "batch")
    dp = parallel.data_parallel(mesh, "data", batch_size=7)
    assert dp.size == 1 and isinstance(dp.mesh, Mesh)


def test_fit_rejects_bad_mesh_arguments():
    x = np.zeros((8, 3), np.float32)
    y = np.zeros((8,), np.int32)
    model = worker.models()["mlp"]
    with pytest.raises(ValueError, match="fit: mesh must be a jax.sharding.Mesh"):
        fit(model, losses.softmax_cross_entropy, optim.sgd(0.1), (x, y), epochs=1, batch_size=4, key=0,
            mesh="data")
    # The deprecated fit(batch_axis=...) kept on purpose: only it can name a batch axis other than
    # "data", so only it reaches this check (removed with it in 0.3).
    with pytest.warns(DeprecationWarning, match=r"fit\(batch_axis=\.\.\.\) is deprecated"), \
            pytest.raises(ValueError, match="fit: batch_axis 'model'"):
        fit(model, losses.softmax_cross_entropy, optim.sgd(0.1), (x, y), epochs=1, batch_size=4, key=0,
            mesh=parallel.data_mesh(1), batch_axis="model")


# ----------------------------------------------------------------------------------------
# One process, 8 devices


@pytest.mark.slow  # a subprocess with 8 fake devices, ~40 s: CI's slow stage runs it
def test_eight_devices_in_one_process(tmp_path):
    """One subprocess (one test, so that pytest-xdist never runs it twice) for every case of
    _parallel_worker.CASES: params and BatchNorm state equal one-device training to float
    tolerance, and come back replicated over all 8 devices of an Auto mesh, in float32."""
    out = tmp_path / "single.json"
    proc = subprocess.run([sys.executable, str(WORKER), "single", str(out)], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    result = json.loads(out.read_text())
    assert result["devices"] == 8
    assert result["make_mesh_axis_types"] == ["AxisType.Explicit"]  # fit converts it
    assert [c["name"] for c in result["cases"]] == [c[0] for c in worker.CASES]
    for case in result["cases"]:
        bf16 = "bfloat16" in case["name"]
        if bf16:  # per-device partial gradients are rounded to bfloat16 before the all-reduce
            assert case["abs_err"] <= 1e-3, case
        else:
            assert case["rel_err"] <= RTOL, case
        assert case["state_abs_err"] <= 1e-5, case
        np.testing.assert_allclose(case["loss"], case["ref_loss"], rtol=1e-3 if bf16 else 1e-6,
                                   err_msg=case["name"])
        assert case["val_accuracy"] == case["ref_val_accuracy"], case
        assert case["replicated"] and case["num_devices"] == 8, case
        assert case["shard_shape"] == case["shape"], case
        assert set(case["mesh_axis_types"]) == {"AxisType.Auto"}, case
        assert case["param_dtypes"] == ["float32"], case

    # Compiled fused epoch of the conv net: the conv sees 32 / 8 = 4 examples per device, the
    # batch indices (3 steps, 32) are split on dim 1 into (3, 4), so no device gathers the
    # global batch, and an all-reduce sums the gradients.
    hlo = result["hlo"]
    assert hlo["per_device_batch"] and not hlo["global_batch"] and hlo["stacked_per_device"], hlo
    assert hlo["all_reduce"] >= 1, hlo
    assert result["put_batch_shards"] == [[4, 6, 6, 1]]

    msg = result["indivisible_error"]
    assert msg is not None and "batch_size=20 must be a multiple of the mesh axis 'data' of size 8" in msg


# ----------------------------------------------------------------------------------------
# Two processes, 4 devices each


@pytest.mark.slow  # ~15 s of CPU (two JAX processes and a reference run): 35-50 s on the shared 2-core box
def test_two_processes_equal_one_process(tmp_path):
    """jax.distributed over 127.0.0.1: 2 processes x 4 CPU devices (gloo collectives) train on
    one 8-device mesh, fused and per step; both end with identical params, equal to one process."""
    port = _free_port()
    outs = [tmp_path / f"p{i}.npz" for i in range(2)]
    logs = [open(tmp_path / f"p{i}.log", "w+") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), "multi", str(i), str(port), str(outs[i])],
                              env=_env(), cwd=ROOT, stdout=logs[i], stderr=subprocess.STDOUT)
             for i in range(2)]
    try:
        codes = [p.wait(timeout=TIMEOUT) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = []
    for f in logs:
        f.seek(0)
        text.append(f.read()[-4000:])
        f.close()
    assert codes == [0, 0], f"processes: {codes} (None: timed out after {TIMEOUT}s)\n" + "\n---\n".join(text)

    got = [dict(np.load(o)) for o in outs]
    assert got[0].keys() == got[1].keys()
    for k in got[0]:
        np.testing.assert_array_equal(got[0][k], got[1][k], err_msg=f"processes disagree on {k}")

    nets = worker.models()
    for name, kw in worker.MULTI_CASES:
        ts, hist = worker.train(nets["mlp"], **kw)
        for i, ref in enumerate(worker.host_leaves(ts.params)):
            np.testing.assert_allclose(got[0][f"{name}/{i}"], ref, rtol=RTOL, atol=1e-6,
                                       err_msg=f"{name} leaf {i}")
        np.testing.assert_allclose(got[0][f"{name}/loss"], hist.train_loss, rtol=1e-6)
