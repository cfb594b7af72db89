"""fnn.train: train_step, evaluate, fit (fused vs per-step, resume, NaN stop, early stopping,
plateau, penalties, input checks), History."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from trees import assert_trees_equal, leaves

from fnn import losses, optim
from fnn.data import Standardizer, load_sample
from fnn.layers.activation import Relu
from fnn.layers.combinators import serial
from fnn.layers.dense import Dense
from fnn.layers.dropout import Dropout
from fnn.layers.reshape import Flatten
from fnn.train import (
    Checkpoint,
    EarlyStopping,
    History,
    LearningRateLog,
    ReduceLROnPlateau,
    TrainState,
    evaluate,
    fit,
    init_train_state,
    train_step,
)

CE = losses.softmax_cross_entropy


@pytest.fixture(scope="module")
def data():
    """300 training and 200 test images of the embedded sample, standardized, float32."""
    ds = load_sample()
    (x, y), (xt, yt) = ds.train, ds.test
    rng = np.random.default_rng(0)
    i, j = rng.permutation(len(x))[:300], rng.permutation(len(xt))[:200]
    scaler = Standardizer.fit(x[i], per="global")
    return (np.asarray(scaler.apply(x[i])), y[i]), (np.asarray(scaler.apply(xt[j])), yt[j])


def mlp(hidden=16, drop_rate=0.0):
    layers = [Flatten(), Dense(hidden), Relu()]
    layers += [Dropout(drop_rate)] if drop_rate else []
    return serial(*layers, Dense(10))




# Shared model and optimizer objects: fit caches its compiled programs per (model, loss,
# optimizer, settings), so tests that reuse them skip recompiling.
MLP, MLP_DROP = mlp(), mlp(drop_rate=0.2)
ADAM, SGD = optim.adam(1e-2), optim.sgd(0.1)


def run(data, epochs=2, **kw):
    kw = {"batch_size": 64, "key": jax.random.key(0), **kw}
    return fit(kw.pop("model", MLP), kw.pop("loss", CE), kw.pop("optimizer", ADAM), data, epochs=epochs, **kw)


# ----------------------------------------------------------------------------------------
# train_step and evaluate


def test_train_step_splits_key_and_reports_metrics(data):
    (x, y), _ = data
    model = mlp(drop_rate=0.5)
    ts = init_train_state(model, optim.sgd(0.1), x.shape[1:], key=jax.random.key(1))
    assert isinstance(ts, TrainState) and ts.step.dtype == jnp.int32
    assert jnp.issubdtype(ts.key.dtype, jax.dtypes.prng_key)
    step = jax.jit(train_step(model, CE, optim.sgd(0.1), grad_mode="manual"))
    ts1, m = step(ts, x[:32], y[:32])
    ts2, _ = step(ts1, x[:32], y[:32])
    assert int(ts1.step) == 1 and int(ts2.step) == 2
    kd = [np.asarray(jax.random.key_data(k)).tolist() for k in (ts.key, ts1.key, ts2.key)]
    assert kd[0] != kd[1] != kd[2] != kd[0]
    assert set(m) >= {"loss", "accuracy", "grad_norm", "finite"}
    assert 0.0 <= float(m["accuracy"]) <= 1.0 and bool(m["finite"])
    sub = jax.random.split(ts.key)[1]  # the key the first step used
    grad = jax.jit(jax.grad(
        lambda p: CE.value(model.apply(p, ts.state, x[:32], key=sub, train=True)[0], y[:32])))
    np.testing.assert_allclose(float(m["grad_norm"]), float(optim.global_norm(grad(ts.params))), rtol=1e-5)


def test_train_step_mask_counts_only_real_examples(data):
    (x, y), _ = data
    model = mlp()
    ts = init_train_state(model, optim.sgd(0.1), x.shape[1:], key=jax.random.key(1))
    step = jax.jit(train_step(model, CE, optim.sgd(0.1), grad_mode="autodiff"))
    mask = jnp.asarray([1.0] * 20 + [0.0] * 12, jnp.float32)
    xp = np.concatenate([x[:20], x[100:112]])
    yp = np.concatenate([y[:20], y[100:112]])
    a, ma = step(ts, xp, yp, mask)
    b, mb = step(ts, x[:20], y[:20])
    np.testing.assert_allclose(float(ma["loss"]), float(mb["loss"]), rtol=1e-5)
    assert int(ma["count"]) == 20 and float(ma["accuracy"]) == float(mb["accuracy"])
    for u, v in zip(leaves(a.params), leaves(b.params), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batch_size", [64, 1000])
def test_evaluate_confusion_and_remainder(data, batch_size):
    _, (xt, yt) = data
    xt, yt = xt[:150], yt[:150]                      # 150 = 2·64 + 22: a padded remainder batch
    model = mlp()
    ts = init_train_state(model, optim.sgd(0.1), xt.shape[1:], key=jax.random.key(2))
    r = evaluate(model, CE, ts.params, ts.state, xt, yt, batch_size=batch_size)
    conf = r["confusion"]
    assert conf.shape == (10, 10) and conf.sum() == 150 and r["num_examples"] == 150
    assert r["accuracy"] == pytest.approx(np.trace(conf) / 150)
    pred = np.asarray(model.apply(ts.params, ts.state, xt)[0])
    np.testing.assert_array_equal(conf.sum(axis=1), np.bincount(yt, minlength=10))  # rows = true class
    assert r["accuracy"] == pytest.approx(float(np.mean(pred.argmax(-1) == yt)))
    assert r["loss"] == pytest.approx(float(CE.value(jnp.asarray(pred), jnp.asarray(yt))), rel=1e-5)


# ----------------------------------------------------------------------------------------
# fit: the two loops, resume


@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_fused_equals_per_step(data, remainder):
    (x, y), (xv, yv) = data
    kw = dict(model=MLP_DROP, val_data=(xv, yv), remainder=remainder, grad_mode="custom_vjp")
    a, ha = run((x, y), **kw, fused=True)
    b, hb = run((x, y), **kw, fused=False)
    assert_trees_equal(a, b)  # params, optimizer state, key and step: bitwise
    assert ha["train_loss"] == hb["train_loss"] and ha["val_loss"] == hb["val_loss"]
    assert int(a.step) == 2 * (300 // 64 if remainder == "drop" else -(-300 // 64))


def test_grad_modes_agree(data):
    (x, y), _ = data
    a, _ = run((x, y), grad_mode="manual")
    b, _ = run((x, y), grad_mode="autodiff")
    for u, v in zip(leaves(a.params), leaves(b.params), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)


def test_resume_equals_uninterrupted(data, tmp_path):
    (x, y), (xv, yv) = data
    kw = dict(val_data=(xv, yv), model=MLP_DROP, grad_mode="custom_vjp")

    def callbacks(directory):
        return [ReduceLROnPlateau(0.5, patience=0), EarlyStopping(5), Checkpoint(directory)]

    full, hf = run((x, y), epochs=3, callbacks=callbacks(tmp_path / "a"), **kw)
    _, h1 = run((x, y), epochs=1, callbacks=callbacks(tmp_path / "b"), **kw)
    resumed, hr = run((x, y), epochs=3, callbacks=callbacks(tmp_path / "b"), **kw)
    assert_trees_equal(full, resumed)
    assert len(h1) == 1 and len(hr) == 3 and hr.best_epoch == hf.best_epoch
    assert hr["train_loss"] == hf["train_loss"] and hr["lr_scale"] == hf["lr_scale"]


# ----------------------------------------------------------------------------------------
# fit: stopping, schedules, penalties


def test_nonfinite_stops_and_keeps_last_good_state(data):
    (x, y), _ = data
    steps = 300 // 64
    # A learning rate that explodes at the first step of epoch 2.
    boom = optim.sgd(lambda count: jnp.where(count < steps, 0.05, 1e30))
    with pytest.warns(RuntimeWarning, match=r"epoch 2, step \d+ of 4"):
        ts, h = run((x, y), epochs=4, optimizer=boom, fused=True)
    assert len(h) == 1 and "epoch 2" in h.stop_reason
    one, _ = run((x, y), epochs=1, optimizer=boom)
    assert_trees_equal(ts, one)
    assert all(np.isfinite(a).all() for a in leaves(ts.params))


def test_early_stopping_restores_best(data):
    (x, y), (xv, yv) = data
    seen = {}

    def keep(epoch, ts, record):
        seen[epoch] = leaves(ts.params)

    # Validation labels shifted by one: the better the model fits, the worse the val loss.
    ts, h = run((x, y), epochs=20, val_data=(xv, (yv + 1) % 10), callbacks=(EarlyStopping(2), keep))
    best = int(np.argmin(h["val_loss"])) + 1
    assert h.best_epoch == best and len(h) == best + 2 and "early stopping" in h.stop_reason
    for u, v in zip(leaves(ts.params), seen[best], strict=True):
        np.testing.assert_array_equal(u, v)
    assert not all(np.array_equal(u, v) for u, v in zip(leaves(ts.params), seen[len(h)], strict=True))


def test_plateau_reduces_learning_rate(data):
    (x, y), _ = data
    # threshold 10 ("rel"): no epoch ever counts as an improvement, so with patience 0
    # the scale drops after every epoch.
    plateau = ReduceLROnPlateau(0.1, patience=0, threshold=10.0)
    _, h = run((x, y), epochs=3, callbacks=[plateau, LearningRateLog(1e-2)])
    np.testing.assert_allclose(h["lr_scale"], [1.0, 0.1, 0.01])
    np.testing.assert_allclose(h["lr"], [1e-2, 1e-3, 1e-4])


L2, SGD_WD = losses.l2(0.05), optim.chain(optim.add_weight_decay(0.05), SGD)


def test_l2_penalty_equals_weight_decay(data, grad_mode="autodiff"):
    (x, y), _ = data
    a, ha = run((x, y), optimizer=SGD, loss=losses.penalized(CE, L2), grad_mode=grad_mode)
    b, hb = run((x, y), optimizer=SGD_WD, grad_mode=grad_mode)
    c, _ = run((x, y), optimizer=SGD, grad_mode=grad_mode)
    for u, v, w in zip(leaves(a.params), leaves(b.params), leaves(c.params), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
        assert not np.allclose(u, w, rtol=1e-3, atol=1e-5) or np.abs(w).max() == 0
    np.testing.assert_allclose(ha["train_loss"], hb["train_loss"], rtol=1e-5)  # the data loss only


def test_l1_penalty_gradient_is_sign(data):
    (x, y), _ = data
    model = mlp()
    ts = init_train_state(model, optim.sgd(1.0), x.shape[1:], key=jax.random.key(3))
    plain = jax.jit(train_step(model, CE, optim.sgd(1.0), grad_mode="manual"))
    l1 = jax.jit(train_step(model, CE, optim.sgd(1.0), grad_mode="manual", penalty=losses.l1(0.01)))
    a, ma = plain(ts, x[:64], y[:64])
    b, mb = l1(ts, x[:64], y[:64])
    assert float(ma["loss"]) == pytest.approx(float(mb["loss"]))
    for p, u, v in zip(leaves(ts.params), leaves(a.params), leaves(b.params), strict=True):
        np.testing.assert_allclose(u - v, 0.01 * np.sign(p), atol=1e-6)  # lr 1: Δθ = -0.01·sign(θ)


# ----------------------------------------------------------------------------------------
# fit: input checks


def test_fit_refuses_bad_inputs(data):
    (x, y), _ = data
    with pytest.raises(ValueError, match=r"dtype uint8; convert images to float"):
        run((np.zeros((300, 28, 28, 1), np.uint8), y))
    bad = x.copy()
    bad[7, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="train_data x contains NaN"):
        run((bad, y))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\).*first bad label 10 at index 5"):
        run((x, np.where(np.arange(300) == 5, 10, y).astype(np.int32)))
    with pytest.raises(ValueError, match="same number of examples"):
        run((x, y[:-1]))
    with pytest.raises(ValueError, match="batch_size=301 is larger than the number of training examples"):
        run((x, y), batch_size=301)
    with pytest.raises(ValueError, match="val_data x contains NaN"):
        run((x, y), val_data=(bad, y))
    with pytest.raises(ValueError, match="grad_mode must be one of"):
        run((x, y), grad_mode="symbolic")


# ----------------------------------------------------------------------------------------
# History


def test_history_jsonl_round_trip(data, tmp_path):
    (x, y), (xv, yv) = data
    _, h = run((x, y), val_data=(xv, yv), callbacks=[LearningRateLog(1e-2)])
    h.save_jsonl(tmp_path / "h.jsonl")
    back = History.load_jsonl(tmp_path / "h.jsonl")
    assert back.records == h.records and len(back) == 2
    assert back["epoch"] == [1, 2] and all(v is not None for v in back.val_accuracy)
    assert back["images_per_second"][0] > 0 and back["lr"] == [1e-2, 1e-2]
    table = h.as_table().splitlines()
    assert len(table) == 3 and table[0].split()[:3] == ["epoch", "train_loss", "train_acc"]
    _, h2 = run((x, y), epochs=1)
    assert h2["val_loss"] == [None] and h2["lr"] == [None]
    h2.save_jsonl(tmp_path / "h2.jsonl")
    assert History.load_jsonl(tmp_path / "h2.jsonl").records == h2.records
