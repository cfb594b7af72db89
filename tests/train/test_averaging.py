"""fnn.train.averaging: SWA by its effect on the parameters, recompute_batch_stats against batch
statistics computed by hand, and SWA through checkpoints and resumes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from trees import assert_trees_equal as assert_same
from trees import leaves

from fnn import losses, optim
from fnn.layers import BatchNorm, Dense, Relu, serial
from fnn.train import SWA, Checkpoint, EarlyStopping, fit, recompute_batch_stats

CE = losses.softmax_cross_entropy
BN_MLP = serial(Dense(8), BatchNorm(0.9), Relu(), Dense(6), BatchNorm(0.5, running_var="biased"), Relu(), Dense(3))


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
    return x, y


DATA = _data()


def run(epochs, callbacks=(), **kw):
    kw = {"batch_size": 32, "key": jax.random.key(0), **kw}
    return fit(BN_MLP, CE, optim.momentum(0.1, 0.9), DATA, epochs=epochs, callbacks=[*callbacks], **kw)


def _snapshots():
    """A callback keeping a host copy of the params after every epoch."""
    seen = {}

    def keep(epoch, ts, record):
        seen[epoch] = [np.array(a) for a in jax.tree.leaves(ts.params)]

    return seen, keep


def test_swa_ends_with_the_mean_of_the_params_after_the_averaged_epochs():
    seen, keep = _snapshots()
    ts, _ = run(5, [keep, SWA(2)])
    plain, _ = run(5)
    mean = [np.mean([seen[e][i] for e in (3, 4, 5)], axis=0) for i in range(len(seen[5]))]
    for got, want in zip(jax.tree.leaves(ts.params), mean, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The training itself is untouched: the last epoch's params are the plain run's.
    for got, want in zip(seen[5], jax.tree.leaves(plain.params), strict=True):
        np.testing.assert_array_equal(got, want)
    assert np.abs(ts.params[0]["w"] - seen[5][1]).max() > 1e-3  # leaves: Dense(8)'s b, then its w


def test_swa_recomputes_the_batchnorm_statistics_for_the_mean():
    ts, _ = run(4, [SWA(2)])
    kept, _ = run(4, [SWA(2, recompute_stats=False)])
    assert_same(ts.params, kept.params)
    want = recompute_batch_stats(BN_MLP, ts.params, kept.state, DATA[0], batch_size=32,
                                 key=jax.random.fold_in(kept.key, 0x5A))
    assert_same(ts.state, want)
    assert not np.allclose(leaves(ts.state)[0], leaves(kept.state)[0])


def _batch_stats(x, w, b, batch_size, unbiased):
    """Per batch: the mean and variance of x @ w + b per feature, averaged over the full batches."""
    means, vars_ = [], []
    for i in range(len(x) // batch_size):
        h = x[i * batch_size:(i + 1) * batch_size].astype(np.float64) @ w + b
        means.append(h.mean(0))
        vars_.append(h.var(0, ddof=1 if unbiased else 0))
    return np.mean(means, 0), np.mean(vars_, 0)


@pytest.mark.parametrize("momentum,running_var", [(0.9, "unbiased"), (0.5, "biased"), (0.0, "unbiased")])
def test_recompute_batch_stats_is_the_mean_of_the_batch_statistics(momentum, running_var):
    model = serial(Dense(4), BatchNorm(momentum, running_var=running_var))
    _, params, state = model.init(jax.random.key(1), (5,))
    state = jax.tree.map(lambda s: s + 3.0, state)  # a state to forget
    x = _data(100)[0]  # 100 // 16 = 6 full batches; the last 4 rows are left out
    got = recompute_batch_stats(model, params, state, x, batch_size=16, key=jax.random.key(2))
    w, b = (np.asarray(params[0][k], np.float64) for k in ("w", "b"))
    mean, var = _batch_stats(x, w, b, 16, running_var == "unbiased")
    np.testing.assert_allclose(got[1]["mean"], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1]["var"], var, rtol=1e-4, atol=1e-5)
    assert got[0] == {} and got[1]["mean"].dtype == jnp.float32


def test_recompute_batch_stats_keeps_what_training_does_not_change():
    model = serial(Dense(4), Relu())
    _, params, state = model.init(jax.random.key(1), (5,))
    assert recompute_batch_stats(model, params, state, DATA[0], batch_size=32, key=jax.random.key(0)) == state
    with pytest.raises(ValueError, match=r"batch_size must be in \[2, N=96\]"):
        recompute_batch_stats(model, params, state, DATA[0], batch_size=97, key=jax.random.key(0))


def test_a_resumed_swa_run_equals_an_uninterrupted_one(tmp_path):
    whole, _ = run(5, [SWA(2)])
    run(3, [SWA(2), Checkpoint(tmp_path, verbose=False)])  # the mean of epoch 3 is in the checkpoint
    resumed, history = run(5, [SWA(2), Checkpoint(tmp_path, verbose=False)])
    assert len(history) == 5
    assert_same(resumed.params, whole.params)
    assert_same(resumed.state, whole.state)


def test_resuming_from_a_checkpoint_saved_without_swa(tmp_path):
    whole, _ = run(5, [SWA(2)])
    run(2, [Checkpoint(tmp_path / "a", verbose=False)])  # nothing averaged yet: SWA can take over
    resumed, _ = run(5, [SWA(2), Checkpoint(tmp_path / "a", verbose=False)])
    assert_same(resumed.params, whole.params)
    with pytest.raises(ValueError, match=r"holds the state of callbacks \['SWA'\] that this run does not have"):
        run(6, [Checkpoint(tmp_path / "a", verbose=False)])  # and an SWA checkpoint needs SWA to go on
    run(3, [Checkpoint(tmp_path / "b", verbose=False)])  # epoch 3 should have been averaged
    with pytest.raises(ValueError, match=r"saved after epoch 3 by a run without SWA, so epochs 3-3"):
        run(5, [SWA(2), Checkpoint(tmp_path / "b", verbose=False)])


@pytest.mark.parametrize("make,epochs,message", [
    (lambda: [SWA(3)], 3, "SWA: start=3 leaves no epoch to average: fit runs epochs=3"),
    (lambda: [SWA(1), EarlyStopping(2)], 3, "SWA: not with EarlyStopping"),
    (lambda: [SWA(-1)], 3, "SWA: start must be an int >= 0"),
])
def test_bad_swa_settings(make, epochs, message):
    with pytest.raises(ValueError, match=message):
        run(epochs, make())
