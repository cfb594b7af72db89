"""fnn.search.runs: grid_search and random_search (sorting, JSON lines, refit)."""

import math

import jax
import numpy as np

from fnn import search


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
