"""fnn.search.spaces: grid, sample (deterministic per key, within bounds), the ranges and their checks."""

import jax
import numpy as np
import pytest

from fnn import search


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
    space = {"lr": search.loguniform(1e-4, 1e-1), "drop": search.uniform_range(0.1, 0.5), "width": [16, 32, 64],
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



def test_uniform_is_a_deprecated_alias_of_uniform_range():
    with pytest.warns(DeprecationWarning, match=r"fnn.search.uniform is deprecated, use fnn.search.uniform_range"):
        old = search.uniform(0.1, 0.5)
    assert old == search.uniform_range(0.1, 0.5) == search.Uniform(0.1, 0.5)
    assert "uniform" not in search.__all__ and "uniform_range" in search.__all__
    with pytest.raises(ValueError, match="uniform_range: expected finite low < high"):
        search.uniform_range(0.5, 0.1)
