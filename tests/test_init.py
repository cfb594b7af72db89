import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import init

FAN_IN, FAN_OUT = 200, 300
SHAPE = (FAN_IN, FAN_OUT)
CONV_SHAPE = (3, 3, 20, 30)  # fan_in 180, fan_out 270


@pytest.mark.parametrize("initializer, variance", [
    (init.normal(0.001), 0.001**2),
    (init.uniform(0.05), 0.05**2 / 3),
    (init.glorot_uniform, 2 / (FAN_IN + FAN_OUT)),
    (init.glorot_normal, 2 / (FAN_IN + FAN_OUT)),
    (init.he_normal, 2 / FAN_IN),
    (init.he_uniform, 2 / FAN_IN),
    (init.lecun_normal, 1 / FAN_IN),
    (init.lecun_uniform, 1 / FAN_IN),
    (init.variance_scaling(1.0, "fan_in", "normal"), 1 / FAN_IN),                # N(0,1)·1/√n
    (init.variance_scaling(2.0, "fan_in", "normal"), 2 / FAN_IN),                # N(0,1)·√(2/n)
    (init.variance_scaling(1.0, "fan_avg", "normal"), 2 / (FAN_IN + FAN_OUT)),   # N(0,1)·√(2/(n_in+n_out))
    (init.variance_scaling(3.0, "fan_out", "truncated_normal"), 3 / FAN_OUT),
    (init.variance_scaling(0.5, "fan_out", "uniform"), 0.5 / FAN_OUT),
])
def test_empirical_variance_matches_formula(initializer, variance):
    raw = initializer(jax.random.key(0), SHAPE)
    assert raw.shape == SHAPE and raw.dtype == jnp.float32
    w = np.asarray(raw, np.float64)
    # 60,000 samples: the sample variance is within ~2% of the true one (5 standard errors).
    assert abs(w.var() / variance - 1) < 0.03
    assert abs(w.mean()) < 5 * math.sqrt(variance / w.size)


def test_conv_fans_use_the_receptive_field():
    w = init.he_normal(jax.random.key(1), CONV_SHAPE)
    assert abs(float(jnp.var(w)) / (2 / 180) - 1) < 0.05
    w = init.variance_scaling(1.0, "fan_out", "normal")(jax.random.key(1), CONV_SHAPE)
    assert abs(float(jnp.var(w)) / (1 / 270) - 1) < 0.05


def test_bounds_and_truncation():
    w = init.variance_scaling(1.0, "fan_in", "truncated_normal")(jax.random.key(2), SHAPE)
    assert float(jnp.max(jnp.abs(w))) <= 2 / 0.87962566103423978 * math.sqrt(1 / FAN_IN) + 1e-6
    u = init.glorot_uniform(jax.random.key(3), SHAPE)
    assert float(jnp.max(jnp.abs(u))) <= math.sqrt(6 / (FAN_IN + FAN_OUT))


def test_constant_initializers_and_dtype():
    assert float(init.zeros(None, (3,)).sum()) == 0.0
    assert float(init.ones(None, (3,)).sum()) == 3.0
    np.testing.assert_array_equal(init.constant(0.25)(None, (2, 2)), 0.25)
    assert init.he_normal(jax.random.key(0), (4, 4)).dtype == jnp.float32
    assert init.he_normal(jax.random.key(0), (4, 4), jnp.float64).dtype == jnp.float64


def test_different_keys_differ_and_same_key_repeats():
    a = init.he_normal(jax.random.key(0), (5, 5))
    np.testing.assert_array_equal(a, init.he_normal(jax.random.key(0), (5, 5)))
    assert not np.allclose(a, init.he_normal(jax.random.key(1), (5, 5)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(scale=1.0, mode="fan_sum"), "mode must be one of"),
    (dict(scale=1.0, distribution="cauchy"), "distribution must be one of"),
    (dict(scale=0.0), "scale must be > 0"),
])
def test_variance_scaling_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f"variance_scaling: {match}"):
        init.variance_scaling(**kwargs)
