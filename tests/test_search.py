"""fnn.search: spaces, grid and random search, sorting, JSONL, refit, and vmap_search == separate fit runs."""

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


# ----------------------------------------------------------------------------------------
# Spaces


def test_grid_enumerates_the_product():
    space = {"a": [1, 2, 3], "b": search.choice(["x", "y"]), "c": 5, "shape": (4, 4)}
    configs = search.grid(space)
    assert len(configs) == 6
    assert {(c["a"], c["b"]) for c in configs} == {(a, b) for a in (1, 2, 3) for b in ("x", "y")}
    assert all(c["c"] == 5 and c["shape"] == (4, 4) for c in configs)
    assert configs[:2] == [{"a": 1, "b": "x", "c": 5, "shape": (4, 4)},
                           {"a": 1, "b": "y", "c": 5, "shape": (4, 4)}]
    with pytest.raises(ValueError, match="continuous range"):
        search.grid({"lr": search.loguniform(1e-3, 1e-1)})


def test_random_search_space_is_deterministic_per_key_and_within_bounds():
    space = {"lr": search.loguniform(1e-4, 1e-1), "drop": search.uniform(0.1, 0.5), "width": [16, 32, 64],
             "act": "relu"}
    key = jax.random.key(3)
    configs = search.sample(space, 2000, key=key)
    assert configs == search.sample(space, 2000, key=jax.random.key(3))
    assert configs[:5] == search.sample(space, 5, key=key)  # trial i does not depend on num_trials
    assert configs[:5] != search.sample(space, 5, key=jax.random.key(4))
    lr = np.array([c["lr"] for c in configs])
    drop = np.array([c["drop"] for c in configs])
    assert lr.min() >= 1e-4 and lr.max() <= 1e-1 and drop.min() >= 0.1 and drop.max() <= 0.5
    # Log-uniform: each decade is equally likely (a uniform draw would put ~90% in the last one).
    decades = np.histogram(np.log10(lr), bins=[-4, -3, -2, -1])[0] / len(lr)
    np.testing.assert_allclose(decades, 1 / 3, atol=0.05)
    assert abs(np.mean(drop) - 0.3) < 0.02
    widths = [c["width"] for c in configs]
    assert set(widths) == {16, 32, 64} and all(type(w) is int for w in widths)
    assert all(c["act"] == "relu" for c in configs)
    with pytest.raises(ValueError, match="low must be > 0"):
        search.loguniform(0.0, 1.0)


def test_sample_with_a_positional_key_is_deprecated():
    space = {"lr": search.loguniform(1e-4, 1e-1), "width": [16, 32, 64]}
    new = search.sample(space, 4, key=jax.random.key(3))
    with pytest.warns(DeprecationWarning, match=r"sample\(\) with a positional key is deprecated"):
        assert search.sample(space, 4, jax.random.key(3)) == new
    with pytest.warns(DeprecationWarning):
        assert search.sample(space, 4, 3) == new  # an int seed, as before
    with pytest.raises(TypeError, match="key"):
        search.sample(space, 4)


# ----------------------------------------------------------------------------------------
# grid_search / random_search


def test_grid_search_sorts_writes_jsonl_and_refits(tmp_path):
    def run(config):
        if config["x"] == 4:
            return math.nan  # a diverged run
        return {"score": (config["x"] - 2) ** 2 + config["y"], "extra": config["x"] * 10}

    space = {"x": [0, 1, 2, 3, 4], "y": [0.0, 0.5]}
    path = tmp_path / "trials.jsonl"
    result = search.grid_search(run, space, jsonl=path, refit=lambda c: ("refit", c), progress=False)
    scores = [t.score for t in result.trials]
    assert scores[:-2] == sorted(scores[:-2]) and all(math.isnan(s) for s in scores[-2:])
    assert result.best.config == {"x": 2, "y": 0.0} and result.best.score == 0.0
    assert result.best.metrics == {"extra": 20}
    assert result.refit == ("refit", {"x": 2, "y": 0.0})
    loaded = search.load_jsonl(path)
    assert len(loaded) == 10 and [t.index for t in loaded] == list(range(10))  # in the order they ran
    again = search.sort_trials(loaded)
    assert [(t.config, t.metrics) for t in again] == [(t.config, t.metrics) for t in result.trials]
    np.testing.assert_array_equal([t.score for t in again], scores)  # NaN survives as null
    result.save_jsonl(tmp_path / "sorted.jsonl")
    assert [t.config for t in search.load_jsonl(tmp_path / "sorted.jsonl")] == \
        [t.config for t in result.trials]
    table = result.table()
    assert table.splitlines()[1].split()[:4] == ["1", "0", "2", "0"]
    # mode="max" reverses the order, NaN still last.
    best_max = search.grid_search(run, space, mode="max", progress=False)
    assert best_max.best.config == {"x": 0, "y": 0.5} and math.isnan(best_max.trials[-1].score)


def test_random_search_uses_the_sampled_configs():
    space = {"lr": search.loguniform(1e-3, 1.0), "w": [1, 2]}
    seen = []
    result = search.random_search(lambda c: seen.append(c) or abs(math.log10(c["lr"]) + 1), space,
                                  num_trials=7, key=jax.random.key(0), progress=False)
    assert seen == search.sample(space, 7, key=jax.random.key(0))
    assert result.best.config == min(seen, key=lambda c: abs(math.log10(c["lr"]) + 1))


# ----------------------------------------------------------------------------------------
# vmap_search


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
