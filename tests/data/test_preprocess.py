"""fnn.data.preprocess: Standardizer against NumPy (per pixel, channel, global; the zero-std guard;
errors; jit), to_float, train_val_split and its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn.data import Standardizer, to_float, train_val_split
from fnn.data.preprocess import EPS

# ---------------------------------------------------------------------------------------- preprocessing


def test_standardizer_per_pixel_against_numpy():
    x = np.random.default_rng(0).normal(3.0, 2.0, (9, 4, 3, 1))
    s = Standardizer.fit(x)
    assert s.mean.shape == (4, 3, 1) and s.mean.dtype == jnp.float32
    n = x.shape[0]
    mean = x.sum(axis=0) / n
    std = np.sqrt(((x - mean) ** 2).sum(axis=0) / (n - 1))  # unbiased, by hand
    np.testing.assert_allclose(s.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(s.std, std, rtol=1e-6)
    y = s.apply(x)
    assert y.dtype == jnp.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, (x - mean) / (std + EPS), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Standardizer.fit(x, ddof=0).std, x.std(axis=0), rtol=1e-6)


def test_standardizer_zero_std_guard():
    x = np.random.default_rng(1).integers(0, 256, (6, 2, 2, 1), dtype=np.uint8)
    x[:, 0, 1, 0] = 17  # a constant pixel
    s = Standardizer.fit(x)
    assert float(s.std[0, 1, 0]) == 1.0 and float(s.mean[0, 1, 0]) == 17.0
    y = s.apply(x)
    assert bool(jnp.all(jnp.isfinite(y)))
    np.testing.assert_array_equal(y[:, 0, 1, 0], 0.0)
    np.testing.assert_allclose(s.apply(x + np.uint8(1))[:, 0, 1, 0], 1 / (1 + EPS), rtol=1e-6)


def test_standardizer_per_channel_and_global():
    x = np.random.default_rng(2).uniform(0, 5, (5, 3, 3, 2)) * np.array([1.0, 10.0])
    s = Standardizer.fit(x, per="channel")
    assert s.mean.shape == (2,)
    np.testing.assert_allclose(s.mean, x.reshape(-1, 2).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(s.std, x.reshape(-1, 2).std(axis=0, ddof=1), rtol=1e-6)
    y = np.asarray(s.apply(x))
    np.testing.assert_allclose(y.reshape(-1, 2).mean(axis=0), 0, atol=1e-5)
    g = Standardizer.fit(x, per="global")
    assert g.mean.shape == ()
    np.testing.assert_allclose(g.std, x.std(ddof=1), rtol=1e-6)


def test_standardizer_errors_and_jit():
    x = np.ones((4, 3, 2))
    x[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"Standardizer.fit: x of shape \(4, 3, 2\) contains NaN"):
        Standardizer.fit(x)
    s = Standardizer.fit(np.random.default_rng(3).normal(size=(4, 3, 2)))
    with pytest.raises(ValueError, match=r"apply: expected x of shape \(N, 3, 2\) .* got \(4, 2, 3\)"):
        s.apply(np.zeros((4, 2, 3)))
    with pytest.raises(ValueError, match="Standardizer.apply: the standardized x contains NaN"):
        s.apply(x)
    with pytest.raises(ValueError, match=r"ddof=1 needs more than 1 values .* got 1"):
        Standardizer.fit(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"per must be one of"):
        Standardizer.fit(x, per="row")
    z = np.random.default_rng(4).normal(size=(5, 3, 2))
    np.testing.assert_allclose(jax.jit(lambda s, z: s.apply(z))(s, z), s.apply(z), rtol=1e-6)


def test_to_float():
    x = np.array([[0, 128, 255]], np.uint8)
    y = to_float(x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, [[0.0, 128 / 255, 1.0]], rtol=1e-7)
    with pytest.raises(ValueError, match="to_float: expected uint8 x, got float32"):
        to_float(y)


# ---------------------------------------------------------------------------------------- split


def test_train_val_split(key):
    x, y = np.arange(50) * 10, np.arange(50)
    (xt, yt), (xv, yv) = train_val_split(x, y, 0.2, key=key)
    assert len(xt) == 40 and len(xv) == 10
    np.testing.assert_array_equal(xt, yt * 10)  # pairs stay together
    assert not set(yt) & set(yv) and set(yt) | set(yv) == set(range(50))
    (_, yt2), (_, yv2) = train_val_split(x, y, 0.2, key=key)
    np.testing.assert_array_equal(yv, yv2)
    (_, _), (_, yv3) = train_val_split(x, y, 0.2, key=jax.random.key(1))
    assert not np.array_equal(yv, yv3)
    (xtj, _), _ = train_val_split(jnp.asarray(x), jnp.asarray(y), 0.2, key=key)
    np.testing.assert_array_equal(xtj, xt)


@pytest.mark.parametrize("fraction, match", [(0.0, r"val_fraction must be in \(0.0, 1.0\), got 0.0"),
                                             (1.0, r"got 1.0"), (0.01, r"leaves 10 for training and 0"),
                                             (0.99, r"leaves 0 for training and 10")])
def test_train_val_split_errors(key, fraction, match):
    with pytest.raises(ValueError, match=match):
        train_val_split(np.zeros((10, 2)), np.zeros(10), fraction, key=key)
    with pytest.raises(ValueError, match=r"same number of examples.*\(10, 2\).*\(9,\)"):
        train_val_split(np.zeros((10, 2)), np.zeros(9), 0.5, key=key)
