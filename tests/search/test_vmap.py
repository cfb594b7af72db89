"""fnn.search.vmap: vmap_search == separate fit runs (fit_objective), divergence and refused configs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import losses, optim, search
from fnn.layers.activation import Relu
from fnn.layers.combinators import serial
from fnn.layers.dense import Dense

CE = losses.softmax_cross_entropy
D, C = 10, 3


@pytest.fixture(scope="module")
def data():
    kx, kw = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (160, D), jnp.float32)
    y = jnp.argmax(x @ jax.random.normal(kw, (D, C), jnp.float32), axis=-1).astype(jnp.int32)
    return (x[:120], y[:120]), (x[120:], y[120:])


MODEL = serial(Dense(8), Relu(), Dense(C))


def make_optimizer(config):
    return optim.momentum(config["learning_rate"], 0.9)


CONFIGS = [{"learning_rate": 0.1, "weight_decay": 0.0, "init_scale": 1.0, "seed": 0},
           {"learning_rate": 0.02, "weight_decay": 1e-3, "init_scale": 0.5, "seed": 1},
           {"learning_rate": 0.3, "weight_decay": 1e-2, "init_scale": 2.0, "seed": 2}]


def test_vmap_search_equals_each_config_trained_with_fit(data):
    train, val = data
    kw = dict(epochs=2, batch_size=32, val_data=val, progress=False)
    result = search.vmap_search(MODEL, CE, make_optimizer, train, CONFIGS, vectorize=True, **kw)
    one_by_one = search.vmap_search(MODEL, CE, make_optimizer, train, CONFIGS, vectorize=False, **kw)
    run = search.fit_objective(lambda c: MODEL, CE, make_optimizer, train, val, epochs=2, batch_size=32,
                               key=jax.random.key(9))
    for i, config in enumerate(CONFIGS):
        ts, history = run.train(config)  # fit, with chain(add_weight_decay, opt) and scaled init
        for vm in (result, one_by_one):
            got = vm.train_state_of(i)
            for a, b in zip(jax.tree.leaves(ts.params), jax.tree.leaves(got.params), strict=True):
                np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
            assert int(got.step) == int(ts.step) == 2 * (120 // 32)
            np.testing.assert_allclose(vm.history["val_loss"][i], history.val_loss, rtol=1e-5)
            np.testing.assert_allclose(vm.history["val_accuracy"][i], history.val_accuracy)
            np.testing.assert_allclose(vm.history["train_loss"][i], history.train_loss, rtol=1e-5)
    # The configs really differ, and the result is sorted by validation loss with the best refit.
    final = result.history["val_loss"][:, -1]
    assert len(set(np.round(final, 6))) == 3
    assert [t.index for t in result.trials] == list(np.argsort(final))
    best = result.best.index
    for a, b in zip(jax.tree.leaves(result.refit.params), jax.tree.leaves(result.train_state_of(best).params),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_vmap_search_divergent_config_scores_nan_and_bad_configs_are_refused(data, tmp_path):
    train, _ = data
    configs = [{"learning_rate": 0.05}, {"learning_rate": 1e30}]
    result = search.vmap_search(MODEL, CE, make_optimizer, train, configs, epochs=2, batch_size=20,
                                vectorize=True, progress=False, jsonl=tmp_path / "v.jsonl")
    assert result.best.index == 0 and math.isfinite(result.best.score)
    assert math.isnan(result.trials[-1].score)
    assert [t.config for t in search.load_jsonl(tmp_path / "v.jsonl")] == [configs[0], configs[1]]
    with pytest.raises(ValueError, match="only finite numbers"):
        search.vmap_search(MODEL, CE, make_optimizer, train, [{"learning_rate": 0.1, "act": "relu"}],
                           epochs=1, batch_size=40)
    with pytest.raises(ValueError, match="same keys"):
        search.vmap_search(MODEL, CE, make_optimizer, train, [{"learning_rate": 0.1}, {"lr": 0.1}], epochs=1,
                           batch_size=40)
