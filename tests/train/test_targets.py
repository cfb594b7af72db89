"""Every loss of fnn.losses through fit and evaluate: regression, binary, one-hot and integer
targets, and a triplet net; accuracy only where it means something (issue #18)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import losses, optim
from fnn.core import Layer
from fnn.layers.activation import Sigmoid, Softmax, Tanh
from fnn.layers.combinators import Shared, serial
from fnn.layers.dense import Dense
from fnn.train import History, evaluate, fit
from fnn.train.history import table_row
from fnn.train.step import class_labels, is_classification

N, D, M = 96, 4, 3
ADAM = optim.adam(3e-2)


def Triplets() -> Layer:
    """(N, 3, D) -> the tuple (anchor, positive, negative) of (N, D) arrays; init gives one input's shape."""

    def init(key, input_shape):
        return tuple(input_shape[1:]), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return (x[:, 0], x[:, 1], x[:, 2]), state

    def backward(params, state, x, dy, *, key=None, train=False):
        return {}, jnp.stack(dy, axis=1)

    return Layer("Triplets", init, apply, backward)


def _inputs(seed=0, n=N, shape=(D,)):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def _labels(x):
    """Three classes from the sign pattern of two features: learnable by a linear model."""
    return ((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)).astype(np.int32)


def _case(name):
    """(model, loss, x, y, classification?) for each loss of fnn.losses."""
    x = _inputs()
    labels = _labels(x)
    one_hot = np.eye(M, dtype=np.float32)[labels]
    if name in ("mse", "mae"):  # y = sin(x0): regression on one output column
        return serial(Dense(16), Tanh(), Dense(1)), getattr(losses, name), x, np.sin(x[:, :1]), False
    if name == "binary_cross_entropy":  # one probability column: a binary target, not argmax-able
        y = (x[:, :1] > 0).astype(np.float32)
        return serial(Dense(1), Sigmoid()), losses.binary_cross_entropy, x, y, False
    if name == "sigmoid_binary_cross_entropy":  # one-hot rows, M > 1: argmax is the class
        return serial(Dense(M)), losses.sigmoid_binary_cross_entropy, x, one_hot, True
    if name == "softmax_cross_entropy":
        return serial(Dense(M)), losses.softmax_cross_entropy, x, labels, True
    if name == "cross_entropy":  # probabilities in, integer labels
        return serial(Dense(M), Softmax()), losses.cross_entropy, x, labels, True
    assert name == "triplet_margin"
    anchor = _inputs(1)
    x = np.stack([anchor, anchor + 0.1 * _inputs(2), _inputs(3)], axis=1)  # (N, 3, D)
    return serial(Triplets(), Shared(Dense(2))), losses.triplet_margin(margin=1.0), x, np.zeros(N, np.float32), False


LOSSES = ("mse", "mae", "binary_cross_entropy", "sigmoid_binary_cross_entropy", "softmax_cross_entropy",
          "cross_entropy", "triplet_margin")


def test_every_loss_is_covered():
    public = {n for n in dir(losses) if isinstance(getattr(losses, n), losses.Loss)} | {"triplet_margin"}
    assert public == set(LOSSES)


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_trains_and_evaluates(name):
    model, loss, x, y, classification = _case(name)
    n_train = 64
    train, val = (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
    _, params0, state0 = model.init(jax.random.key(0), x.shape[1:])
    before = evaluate(model, loss, params0, state0, *train)
    ts, history = fit(model, loss, ADAM, train, epochs=8, batch_size=16, key=jax.random.key(0), val_data=val)
    after = evaluate(model, loss, ts.params, ts.state, *train)
    # evaluate's loss is the loss of the whole set at once (every loss here averages per example)
    pred, _ = model.apply(ts.params, ts.state, jnp.asarray(train[0]))
    assert after["loss"] == pytest.approx(float(loss.value(pred, jnp.asarray(train[1]))), rel=1e-5)
    assert after["loss"] < 0.8 * before["loss"], (before["loss"], after["loss"])
    for record in history.records:
        assert np.isfinite(record["train_loss"]) and np.isfinite(record["val_loss"])
        assert ((record["train_accuracy"] is not None) == classification
                and (record["val_accuracy"] is not None) == classification)
    assert (after["accuracy"] is not None) == classification
    assert (after["confusion"] is not None) == classification
    if classification:
        hits = np.argmax(np.asarray(pred), -1) == (train[1] if train[1].ndim == 1 else train[1].argmax(-1))
        assert after["accuracy"] == pytest.approx(hits.mean())
        assert after["confusion"].shape == (M, M) and after["confusion"].sum() == n_train
    else:
        assert "-" in table_row(history.records[-1])  # the table shows a dash for "no accuracy"


def test_one_hot_accuracy_equals_integer_labels():
    x = _inputs()
    labels = _labels(x)
    one_hot = np.eye(M, dtype=np.float32)[labels]
    model, run = serial(Dense(M)), {}
    for kind, y in (("int", labels), ("one_hot", one_hot)):
        ts, history = fit(model, losses.softmax_cross_entropy, ADAM, (x[:64], y[:64]), epochs=2, batch_size=16,
                          key=jax.random.key(0), val_data=(x[64:], y[64:]))
        run[kind] = (history, evaluate(model, losses.softmax_cross_entropy, ts.params, ts.state, x, y))
    (h_int, ev_int), (h_hot, ev_hot) = run["int"], run["one_hot"]
    for field in ("train_accuracy", "val_accuracy"):
        assert h_hot[field] == h_int[field]
        assert all(v is not None for v in h_int[field])
    assert ev_hot["accuracy"] == ev_int["accuracy"]
    np.testing.assert_array_equal(ev_hot["confusion"], ev_int["confusion"])


def test_regression_history_table_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from fnn.plot import plot_history

    model, loss, x, y, _ = _case("mse")
    _, history = fit(model, loss, ADAM, (x, y), epochs=2, batch_size=32, key=jax.random.key(0),
                     val_data=(x[:32], y[:32]))
    assert history["train_accuracy"] == [None, None] and history["val_accuracy"] == [None, None]
    assert "1.0000" not in History(history.records).as_table()
    assert plot_history(history, tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.parametrize(("pred_shape", "y_shape", "y_dtype", "expected"), [
    ((5, 3), (5,), jnp.int32, True),          # integer labels
    ((5, 3), (5, 3), jnp.float32, True),      # one-hot / probabilities, M > 1
    ((5, 1), (5, 1), jnp.float32, False),     # one regression column: argmax would always be 0
    ((5, 1), (5,), jnp.int32, True),          # integer labels of a one-class model (check_labels' job)
    ((5, 3), (5,), jnp.float32, False),       # float (N,) targets
    ((5, 4, 4, 2), (5, 4, 4, 2), jnp.float32, False),  # images
    ((5, 3), (5, 2), jnp.float32, False),     # mismatched columns
])
def test_is_classification(pred_shape, y_shape, y_dtype, expected):
    pred, y = jax.ShapeDtypeStruct(pred_shape, jnp.float32), jax.ShapeDtypeStruct(y_shape, y_dtype)
    assert is_classification(pred, y) is expected
    assert (class_labels(jnp.zeros(pred_shape), jnp.zeros(y_shape, y_dtype)) is not None) is expected
    assert is_classification((pred, pred), y) is False  # a tuple of outputs
