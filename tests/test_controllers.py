"""fit's controllers tested by their effect on the TrainState, not by what History logs.

Reduce-on-plateau must scale the optimizer's steps (a fit that logs the scale but hands the
optimizer lr_scale=1 passes every History-only test); early stopping must return the best
epoch's whole TrainState; a resumed run must restore the plateau and early-stopping state.
All comparisons are bitwise: on XLA:CPU fit's fused and per-step loops and a hand-driven
jitted train_step run the same step program on the same batches.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from trees import assert_trees_equal, leaves

from fnn import losses, optim
from fnn.data import epoch_indices
from fnn.layers.activation import Relu
from fnn.layers.combinators import serial
from fnn.layers.dense import Dense
from fnn.layers.dropout import Dropout
from fnn.optim._base import default_float
from fnn.train import (
    Checkpoint,
    EarlyStopping,
    ReduceLROnPlateau,
    fit,
    init_train_state,
    resolve_grad_mode,
    train_step,
)

CE = losses.softmax_cross_entropy
N, N_VAL, FEATURES, CLASSES, BATCH = 256, 128, 20, 4, 64


def _data():
    """A noisy linear teacher; validation labels 30% right and 70% shifted by one class, so the
    validation loss falls while the model is unsure, then rises as it grows confident: early
    stopping's best epoch lies in the middle of the run (epoch 3 of 5 with these seeds)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(FEATURES, CLASSES))

    def make(n):
        x = rng.normal(size=(n, FEATURES)).astype(np.float32)
        return x, np.argmax(x @ w + 0.5 * rng.normal(size=(n, CLASSES)), -1).astype(np.int32)

    (x, y), (xv, yv) = make(N), make(N_VAL)
    yv = np.where(np.arange(N_VAL) < 0.3 * N_VAL, yv, (yv + 1) % CLASSES).astype(np.int32)
    return (x, y), (xv, yv)


TRAIN, VAL = _data()
# Shared objects: fit caches its compiled programs per (model, loss, optimizer, settings).
# Dropout makes the parameters depend on every step's key, so a wrong key shows in them.
MLP = serial(Dense(16), Relu(), Dropout(0.2), Dense(CLASSES))
SGD, ADAM = optim.sgd(0.1), optim.adam(1e-2)


def forced_plateau(factor=0.1):
    """threshold 10 ("rel"): no epoch is an improvement, so with patience 0 the scale is
    multiplied by `factor` after every epoch."""
    return ReduceLROnPlateau(factor, patience=0, threshold=10.0)




def trees_equal(a, b):
    return all(np.array_equal(u, v) for u, v in zip(leaves(a), leaves(b), strict=True))


def run(epochs, optimizer=ADAM, **kw):
    kw = {"batch_size": BATCH, "key": jax.random.key(0), **kw}
    return fit(MLP, CE, optimizer, TRAIN, epochs=epochs, **kw)


@functools.cache
def jitted_step(optimizer):
    return jax.jit(train_step(MLP, CE, optimizer, grad_mode=resolve_grad_mode("auto")))


def by_hand(optimizer, scales, key=None):
    """fit's epochs re-done by hand: epoch e splits the key, draws its batches from
    epoch_indices, and runs train_step on each with lr_scale=scales[e]."""
    x, y = TRAIN
    ts = init_train_state(MLP, optimizer, x.shape[1:], key=jax.random.key(0) if key is None else key)
    step = jitted_step(optimizer)
    for s in scales:
        k, perm_key = jax.random.split(ts.key)
        ts = ts._replace(key=k)
        idx, _ = epoch_indices(N, BATCH, key=perm_key, remainder="drop")
        for i in np.asarray(idx):
            ts, _ = step(ts, x[i], y[i], None, jnp.asarray(s, default_float()))
    return ts


# ----------------------------------------------------------------------------------------
# Reduce-on-plateau


@pytest.mark.parametrize("optimizer", [SGD, ADAM], ids=["sgd", "adam"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "per_step"])
def test_plateau_scales_the_steps(optimizer, fused):
    scales = [1.0, 0.1, 0.1 * 0.1]
    ts, h = run(3, optimizer, callbacks=[forced_plateau()], fused=fused)
    assert h["lr_scale"] == scales
    assert_trees_equal(ts, by_hand(optimizer, scales))   # bitwise: the same step program, batches, scales
    plain, _ = run(3, optimizer, fused=fused)
    assert_trees_equal(plain, by_hand(optimizer, [1.0] * 3))
    assert not all(np.allclose(u, v, rtol=1e-3, atol=1e-5) for u, v in zip(leaves(ts.params), leaves(plain.params)))


# ----------------------------------------------------------------------------------------
# Early stopping


def snapshots():
    """A callback keeping a host copy of every epoch's whole TrainState, and the dict it fills."""
    seen = {}

    def keep(epoch, ts, record):
        seen[epoch] = leaves(ts)
    return keep, seen


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "per_step"])
def test_early_stopping_returns_best_state(fused):
    keep, seen = snapshots()
    ts, h = run(12, val_data=VAL, callbacks=(EarlyStopping(2), keep), fused=fused)
    best = h.best_epoch
    assert best == int(np.argmin(h["val_loss"])) + 1 and len(h) == best + 2 and "early stopping" in h.stop_reason
    assert 1 < best, "the data should give a best epoch after the first"
    # All of it (params, state, opt_state, key, step) is the best epoch's ...
    for u, v in zip(leaves(ts), seen[best], strict=True):
        np.testing.assert_array_equal(u, v)
    # ... and equals a plain run stopped there.
    exact, _ = run(best, fused=fused)
    assert_trees_equal(ts, exact)
    # Each part differs at the last epoch, so keeping any part of the last state would show.
    last, _ = run(len(h), fused=fused)
    for part in ("params", "opt_state", "key", "step"):
        assert not trees_equal(getattr(ts, part), getattr(last, part)), part


# ----------------------------------------------------------------------------------------
# Checkpoint resume


def interrupted(tmp_path, stop_after, epochs, callbacks, **kw):
    """A run of `epochs` epochs interrupted after `stop_after` and resumed from its checkpoint;
    `callbacks()` makes the run's callbacks (fresh ones for each fit call)."""
    _, h1 = run(stop_after, callbacks=[*callbacks(), Checkpoint(tmp_path)], **kw)
    assert len(h1) == stop_after
    return run(epochs, callbacks=[*callbacks(), Checkpoint(tmp_path)], **kw)


def assert_same_run(a, b):
    (ts_a, h_a), (ts_b, h_b) = a, b
    assert_trees_equal(ts_a, ts_b)
    for field in ("epoch", "train_loss", "val_loss", "lr_scale"):
        assert h_a[field] == h_b[field], field
    assert (h_a.best_epoch, h_a.stop_reason) == (h_b.best_epoch, h_b.stop_reason)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "per_step"])
def test_resume_after_plateau_fired(tmp_path, fused):
    def callbacks():
        return [forced_plateau(0.5)]

    full = run(3, callbacks=callbacks(), fused=fused)
    assert full[1]["lr_scale"] == [1.0, 0.5, 0.25]
    # Interrupted after epoch 1: the plateau has already cut the scale to 0.5, and the resumed
    # epochs must use 0.5 and 0.25 (a run that forgot it would use 1 and 0.5).
    assert_same_run(full, interrupted(tmp_path, 1, 3, callbacks, fused=fused))
    assert_trees_equal(full[0], by_hand(ADAM, [1.0, 0.5, 0.25]))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "per_step"])
def test_resume_keeps_early_stopping_state(tmp_path, fused):
    def callbacks():
        return [EarlyStopping(2)]

    full = run(12, val_data=VAL, callbacks=callbacks(), fused=fused)
    best, last = full[1].best_epoch, len(full[1])
    # Interrupted between the best epoch and the stop: the resumed run must know the best
    # state and the epochs waited since, stop at the same epoch and return the same state.
    assert best < last - 1
    assert_same_run(full, interrupted(tmp_path, last - 1, 12, callbacks, val_data=VAL, fused=fused))


def test_resume_false_starts_afresh(tmp_path):
    other, _ = run(1, callbacks=[Checkpoint(tmp_path)], key=jax.random.key(1))
    fresh = run(2)
    again = run(2, callbacks=[Checkpoint(tmp_path, resume=False)])
    assert_same_run(fresh, again)
    assert not trees_equal(other.params, fresh[0].params)
    # ... and it overwrote the checkpoint: resuming now finds both epochs done.
    assert_same_run(fresh, run(2, callbacks=[Checkpoint(tmp_path)]))
