"""Determinism on CPU: the same key gives the same bits, in one process and across processes, in
both loops; different keys differ; PRNG keys are not reused inside a step; and a run killed with
SIGKILL after a checkpoint, then resumed, ends bitwise equal to an uninterrupted run.

Related tests elsewhere: fused == per-step for one key (tests/test_train.py,
test_fused_equals_per_step), resume equals uninterrupted in-process with plateau and early
stopping (tests/test_train.py, test_resume_equals_uninterrupted), SIGKILL during a save leaves
the previous checkpoint loadable (tests/test_checkpoint.py).
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import losses, optim
from fnn.checkpoint import read_metadata
from fnn.layers import Dense, Dropout, Relu, serial
from fnn.train import fit, init_train_state, train_step

REPO = Path(__file__).resolve().parent.parent
CE = losses.softmax_cross_entropy


def make_data(n=384, d=8):
    """Three classes from two thresholds on the first features; fixed seed."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)).astype(np.int32)
    return x, y


def make_model():
    """A fresh model object: fit compiles its own programs for it (fit caches them per model,
    loss and optimizer object). The Dropout makes the result depend on every key split, not
    only on the initialization."""
    return serial(Dense(16), Relu(), Dropout(0.25), Dense(3))


MODEL, ADAM = make_model(), optim.adam(1e-2)  # shared where compiling once is enough


def digest(tree) -> str:
    """SHA-256 over every leaf's dtype, shape and bytes (typed keys through their key data)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        a = np.asarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def train(key=0, fused=True, epochs=2, model=None, optimizer=None, **kw):
    """fit on make_data() (a fresh model and adam unless given); returns (TrainState, History)."""
    kw = {"batch_size": 64, **kw}
    return fit(model or make_model(), CE, optimizer or optim.adam(1e-2), make_data(), epochs=epochs,
               key=jax.random.key(key), fused=fused, **kw)


# The same code in a fresh interpreter, with the configuration of tests/conftest.py (XLA_FLAGS
# is inherited), so its bits can be compared with this process's.
SCRIPT = """
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
from test_determinism import digest, train
from fnn.train import Checkpoint

if sys.argv[1] == "digest":
    print(json.dumps({m: digest(train(fused=m == "fused")[0]) for m in ("fused", "per_step")}), flush=True)
else:  # train OUT EPOCHS PAUSE: fit with a checkpoint, pausing after every epoch but the first
    out, epochs, pause = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

    def slow(epoch, ts, record):
        print(f"epoch {epoch}", flush=True)
        if epoch > 1:
            time.sleep(pause)

    ts, history = train(epochs=epochs, callbacks=(slow, Checkpoint(out)))
    print(json.dumps({"digest": digest(ts), "train_loss": history["train_loss"]}), flush=True)
"""


def spawn(tmp_path, *args) -> subprocess.Popen:
    script = tmp_path / "determinism_script.py"
    if not script.exists():
        script.write_text(SCRIPT)
    path = os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path, JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def result(proc: subprocess.Popen) -> tuple[dict, list[str]]:
    """The JSON of the last stdout line, and the lines before it."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    lines = out.strip().splitlines()
    return json.loads(lines[-1]), lines[:-1]


# ----------------------------------------------------------------------------------------
# Same key, same bits


def test_same_key_same_bits_in_process_and_across_processes(tmp_path):
    procs = [spawn(tmp_path, "digest") for _ in range(2)]  # two fresh interpreters, meanwhile:
    modes = ("fused", "per_step")
    here = {mode: [digest(train(fused=mode == "fused", **objs)[0])
                   for objs in ({"model": MODEL, "optimizer": ADAM}, {})] for mode in modes}
    there = [result(p)[0] for p in procs]
    for mode in modes:
        # Twice here (the second run compiles its own programs), and once in each subprocess.
        assert len(set(here[mode] + [t[mode] for t in there])) == 1, mode
    assert here["fused"][0] == here["per_step"][0]  # as fit documents for XLA:CPU


def test_different_keys_differ():
    shared = {"model": MODEL, "optimizer": ADAM}
    a, _ = train(key=0, **shared)
    b, _ = train(key=1, **shared)
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        assert not np.array_equal(np.asarray(u), np.asarray(v))
    # The same initialization with another TrainState key: the shuffles and dropout masks
    # alone change every parameter.
    ts0 = init_train_state(MODEL, ADAM, (8,), key=jax.random.key(0))
    c, _ = train(train_state=ts0, **shared)
    d, _ = train(train_state=ts0._replace(key=jax.random.key(7)), **shared)
    for u, v in zip(jax.tree.leaves(c.params), jax.tree.leaves(d.params), strict=True):
        assert not np.array_equal(np.asarray(u), np.asarray(v))


# ----------------------------------------------------------------------------------------
# PRNG keys are consumed once (jax.debug_key_reuse: jax's static key-reuse checker)


def _reuses(key):
    return jax.random.normal(key, (2,)) + jax.random.normal(key, (2,))


def test_key_reuse_checker_is_active():
    """The control: with the checker on, a function that uses one key twice is refused."""
    with jax.debug_key_reuse(True), pytest.raises(jax.errors.KeyReuseError):
        jax.jit(_reuses)(jax.random.key(0))


def test_no_key_reuse_in_train_steps_and_fit_with_dropout():
    """autodiff: each step splits the TrainState key once (one half for this step's dropout,
    one kept), the fused epoch splits once more for the shuffle, and nothing is used twice."""
    x, y = make_data()
    model, opt = make_model(), optim.sgd(0.1)
    with jax.debug_key_reuse(True):
        ts = init_train_state(model, opt, (8,), key=jax.random.key(0))
        step = jax.jit(train_step(model, CE, opt, grad_mode="autodiff"))
        for i in range(3):
            ts, _ = step(ts, x[64 * i:64 * (i + 1)], y[64 * i:64 * (i + 1)])
        train(grad_mode="autodiff", optimizer=opt)  # the fused epoch: scan over steps, shuffle


@pytest.mark.parametrize("mode", ["manual", "custom_vjp"])
def test_hand_written_backward_under_key_reuse_checker(mode):
    x, y = make_data()
    model, opt = make_model(), optim.sgd(0.1)
    with jax.debug_key_reuse(True):
        ts = init_train_state(model, opt, (8,), key=jax.random.key(0))
        jax.jit(train_step(model, CE, opt, grad_mode=mode))(ts, x[:64], y[:64])


# ----------------------------------------------------------------------------------------
# Killed after a checkpoint, resumed: the same bits as never stopping


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    full = spawn(tmp_path, "train", tmp_path / "full", 3, 0)
    victim = spawn(tmp_path, "train", tmp_path / "killed", 3, 30)
    ckpt = tmp_path / "killed" / "checkpoint.fnn"
    deadline = time.monotonic() + 240
    while not (ckpt.exists() and read_metadata(ckpt)["epoch"] >= 1):
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint after epoch 1"
        time.sleep(0.02)
    # Epoch 1 is on disk; the victim is training epoch 2 or pausing after it, before saving it.
    victim.send_signal(signal.SIGKILL)
    out, _ = victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert out.split() == ["epoch", "1"] or out.split() == ["epoch", "1", "epoch", "2"]
    assert read_metadata(ckpt)["epoch"] == 1  # verified by its checksum: the kill left it intact

    resumed, printed = result(spawn(tmp_path, "train", tmp_path / "killed", 3, 0))
    expected, _ = result(full)
    assert printed == ["epoch 2", "epoch 3"]  # epoch 1 came from the checkpoint
    assert resumed["digest"] == expected["digest"]  # params, optimizer state, key and step
    assert resumed["train_loss"] == expected["train_loss"]  # History restored, then continued
