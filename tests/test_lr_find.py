"""fnn.diagnostics.lr_find: a known answer (least squares), a classification sanity check, the
caller's state untouched, the early stop, errors, JSON and the plot."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import losses, optim
from fnn.data import Standardizer, load_sample
from fnn.diagnostics import LrFindResult, lr_find
from fnn.layers import Dense, Flatten, Relu, serial
from fnn.plot import plot_lr_find
from fnn.train import init_train_state

N = 64
LAMBDAS = np.array([10.0, 3.0, 1.0, 0.3])  # the weights' Hessian eigenvalues; the bias adds 2


@pytest.fixture(scope="module")
def least_squares():
    """x (N, 4) with orthogonal, zero-mean columns scaled so that the mse Hessian of Dense(1) is
    diag(LAMBDAS) for the weights and 2 for the bias: plain full-batch SGD diverges for lr > 2/10."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(N, 4))
    q, _ = np.linalg.qr(a - a.mean(axis=0))
    x = (q * np.sqrt(N * LAMBDAS / 2)).astype(np.float32)
    y = (x @ rng.normal(size=(4, 1)) + 0.5).astype(np.float32)
    return x, y


@pytest.fixture(scope="module")
def sweep(least_squares):
    return lr_find(Dense(1), losses.mse, optim.sgd, least_squares, batch_size=N, key=0, min_lr=1e-4,
                   max_lr=10.0, num_steps=100)


def test_the_hessian_is_the_designed_one(least_squares):
    x, y = map(jnp.asarray, least_squares)
    objective = lambda p: losses.mse.value(x @ p[:4] + p[4:], y)
    eig = np.linalg.eigvalsh(np.asarray(jax.hessian(objective)(jnp.zeros((5, 1), jnp.float32))).reshape(5, 5))
    np.testing.assert_allclose(np.sort(eig), np.sort([*LAMBDAS, 2.0]), rtol=1e-4)


def test_least_squares_suggestion_is_stable_and_near_the_optimum(sweep):
    """SGD on a quadratic converges for lr < 2/λ_max; the best constant rate is about 1/λ_max."""
    lam_max = LAMBDAS.max()
    assert 0 < sweep.suggestion < 2 / lam_max
    assert 1 / (3 * lam_max) < sweep.suggestion < 2 / lam_max  # "min/10": within 3x of 1/λ_max
    assert sweep.rule == "min/10" and sweep.suggestion == pytest.approx(sweep.lr_min / 10)
    assert 1 / (10 * lam_max) < sweep.lr_steepest < 2 / lam_max
    # The loss diverged beyond 2/λ_max, so the sweep stopped early, well before max_lr.
    assert sweep.diverged and len(sweep.lrs) < 100 and 2 / lam_max < sweep.lrs[-1] < 2.0
    assert sweep.smoothed[-1] > 4 * np.min(sweep.smoothed)


def test_rates_grow_exponentially_and_the_curve_is_clean(sweep):
    ratios = sweep.lrs[1:] / sweep.lrs[:-1]
    np.testing.assert_allclose(ratios, (10.0 / 1e-4) ** (1 / 99), rtol=1e-6)
    assert sweep.lrs[0] == pytest.approx(1e-4)
    assert np.all(np.isfinite(sweep.losses)) and np.all(np.isfinite(sweep.smoothed))
    assert len(sweep.lrs) == len(sweep.losses) == len(sweep.smoothed)
    # Tiny rates change nothing: the first losses are the initial loss.
    assert sweep.losses[0] == pytest.approx(sweep.initial_loss, rel=1e-3)


def test_smoothing_is_the_bias_corrected_moving_average(least_squares):
    beta = 0.7
    r = lr_find(Dense(1), losses.mse, optim.sgd, least_squares, batch_size=N, key=0, min_lr=1e-4,
                max_lr=10.0, num_steps=100, smoothing=beta)
    raw = np.concatenate([[r.initial_loss], r.losses])
    avg, expected = 0.0, []
    for i, v in enumerate(raw):
        avg = beta * avg + (1 - beta) * v
        expected.append(avg / (1 - beta ** (i + 1)))
    np.testing.assert_allclose(r.smoothed, expected[1:], rtol=1e-4)


def test_steepest_rule(least_squares):
    r = lr_find(Dense(1), losses.mse, optim.sgd, least_squares, batch_size=N, key=0, min_lr=1e-4,
                max_lr=10.0, num_steps=100, rule="steepest")
    assert r.suggestion == r.lr_steepest < r.lr_min


@pytest.fixture(scope="module")
def sample():
    ds = load_sample()
    x, y = ds.train
    return np.asarray(Standardizer.fit(x[:512]).apply(x[:512])), y[:512]


def test_classification_sanity_on_the_sample(sample):
    """Adam on a small MLP: the usual good rates (around 1e-3) are suggested, and the loss there
    is well below the start."""
    model = serial(Flatten(), Dense(32), Relu(), Dense(10))
    r = lr_find(model, losses.softmax_cross_entropy, optim.adam, sample, batch_size=32, key=0, num_steps=100)
    assert 1e-4 <= r.suggestion <= 1e-2
    assert r.initial_loss == pytest.approx(np.log(10), rel=0.3)
    assert np.min(r.smoothed) < 0.75 * r.initial_loss
    assert r.diverged


def test_the_callers_state_is_untouched(sample):
    model = serial(Flatten(), Dense(8), Relu(), Dense(10))
    ts = init_train_state(model, optim.sgd(0.1), (28, 28, 1), key=jax.random.key(3))
    ts = ts._replace(params=jax.tree.map(lambda a: 4 * a, ts.params))  # a loss far from a fresh init's
    before = [np.array(a) for a in jax.tree.leaves(ts.params)]
    r = lr_find(model, losses.softmax_cross_entropy, optim.sgd, sample, batch_size=64, key=1, train_state=ts,
                num_steps=30, max_lr=1.0)
    assert not any(a.is_deleted() for a in jax.tree.leaves(ts.params))  # not donated
    after = [np.asarray(a) for a in jax.tree.leaves(ts.params)]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    # It started from these params: the first loss is theirs.
    logits, _ = model.apply(ts.params, ts.state, jnp.asarray(sample[0]))
    full = float(losses.softmax_cross_entropy.value(logits, jnp.asarray(sample[1])))
    assert full > 2 * np.log(10) and r.initial_loss == pytest.approx(full, rel=0.25)


def test_errors(least_squares):
    args = (Dense(1), losses.mse)
    with pytest.raises(ValueError, match="lr_find: optimizer must be a function lr -> Optimizer"):
        lr_find(*args, optim.sgd(0.1), least_squares, batch_size=8)
    with pytest.raises(ValueError, match=r"lr_find: max_lr must be in \(0.1, inf\)"):
        lr_find(*args, optim.sgd, least_squares, batch_size=8, min_lr=0.1, max_lr=0.01)
    with pytest.raises(ValueError, match="lr_find: rule must be one of"):
        lr_find(*args, optim.sgd, least_squares, batch_size=8, rule="valley")
    with pytest.raises(ValueError, match="lr_find: num_steps must be at least 10"):
        lr_find(*args, optim.sgd, least_squares, batch_size=8, num_steps=5)
    with pytest.raises(ValueError, match="lr_find: batch_size=100 is larger than the number of examples N=64"):
        lr_find(*args, optim.sgd, least_squares, batch_size=100)
    with pytest.raises(ValueError, match="lr_find: the loss diverged within the first steps"):
        lr_find(*args, optim.sgd, least_squares, batch_size=N, min_lr=100.0, max_lr=1e4, num_steps=10)


def test_json_and_plot(sweep, tmp_path):
    d = json.loads(json.dumps(sweep.to_dict(), allow_nan=False))
    assert d["suggestion"] == sweep.suggestion and d["rule"] == "min/10" and d["steps"] == len(sweep.lrs)
    assert d["lr_min_div10"] == pytest.approx(sweep.lr_min / 10) and len(d["lrs"]) == len(sweep.lrs)
    path = plot_lr_find(sweep, tmp_path / "lr_find.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(sweep, LrFindResult)
