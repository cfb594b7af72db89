"""Schedules by formula, under jit with a traced count, and reduce_on_plateau's semantics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import optim


def values(schedule, n):
    """schedule(0..n-1) evaluated with a traced int32 count."""
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.arange(n, dtype=jnp.int32)))


def test_constant_schedule():
    np.testing.assert_array_equal(values(optim.constant_schedule(0.3), 4), 0.3)


def test_constant_is_a_deprecated_alias_of_constant_schedule():
    with pytest.warns(DeprecationWarning, match=r"optim.constant is deprecated, use fnn.optim.constant_schedule"):
        old = optim.constant(0.3)
    np.testing.assert_array_equal(values(old, 4), values(optim.constant_schedule(0.3), 4))
    assert "constant" not in optim.__all__ and "constant_schedule" in optim.__all__


def test_step_decay_formula():
    expected = [0.2 * 0.5 ** (k // 3) for k in range(10)]
    np.testing.assert_allclose(values(optim.step_decay(0.2, 0.5, 3), 10), expected, rtol=1e-15)


def test_step_decay_exact_at_large_counts():
    """count // step_size is an integer division: no float rounding at the boundaries."""
    s = optim.step_decay(1.0, 0.5, 3)
    counts = jnp.array([3 * 10**6 - 1, 3 * 10**6], jnp.int32)
    out = np.asarray(jax.vmap(s)(counts))
    np.testing.assert_allclose(out, [0.5 ** (10**6 - 1), 0.5 ** 10**6], rtol=1e-12)


def test_exponential_decay_smooth_and_staircase():
    np.testing.assert_allclose(values(optim.exponential_decay(0.1, 0.5, 4), 9),
                               [0.1 * 0.5 ** (k / 4) for k in range(9)], rtol=1e-14)
    np.testing.assert_allclose(values(optim.exponential_decay(0.1, 0.5, 4, staircase=True), 9),
                               [0.1 * 0.5 ** (k // 4) for k in range(9)], rtol=1e-15)


def test_cosine_decay_endpoints_and_floor():
    v = values(optim.cosine_decay(1.0, 10, alpha=0.1), 15)
    assert v[0] == pytest.approx(1.0) and v[5] == pytest.approx(0.55, rel=1e-14)
    np.testing.assert_allclose(v[10:], 0.1, rtol=1e-15)
    assert np.all(np.diff(v[:11]) < 0)


def test_linear_warmup():
    np.testing.assert_allclose(values(optim.linear_warmup(0.0, 1.0, 4), 7), [0, 0.25, 0.5, 0.75, 1, 1, 1],
                               rtol=1e-15)


def test_join_restarts_each_schedule_at_its_boundary():
    s = optim.join([optim.constant_schedule(1.0), optim.linear_warmup(0.0, 1.0, 2), optim.constant_schedule(0.1)],
                   [3, 6])
    np.testing.assert_allclose(values(s, 9), [1, 1, 1, 0, 0.5, 1, 0.1, 0.1, 0.1], rtol=1e-15)


def test_schedules_accept_python_int_counts():
    assert float(optim.cosine_decay(1.0, 4)(2)) == pytest.approx(0.5)
    assert float(optim.join([optim.constant_schedule(1.0), optim.constant_schedule(2.0)], [1])(5)) == 2.0


def test_float32_default_when_x64_is_off():
    with jax.enable_x64(False):
        assert optim.step_decay(0.1, 0.5, 2)(jnp.int32(3)).dtype == jnp.float32
        opt = optim.adam(optim.cosine_decay(0.1, 10))
        p = {"w": jnp.ones(3, jnp.float32)}
        u, s = jax.jit(opt.update)(p, opt.init(p), p)
        assert u["w"].dtype == jnp.float32


# ----------------------------------------------------------------------------------------
# reduce_on_plateau (the torch parity is in tests/parity/test_optim_schedules_torch.py)


def run_plateau(ctrl, metrics):
    step = jax.jit(ctrl.step)
    state, out = ctrl.init(), []
    for m in metrics:
        state = step(state, m)
        out.append(state)
    return out


def test_plateau_state_fields_and_dtypes():
    s = optim.reduce_on_plateau().init()
    assert isinstance(s, optim.PlateauState)
    assert float(s.scale) == 1.0 and float(s.best) == math.inf
    assert s.num_bad_epochs.dtype == s.cooldown_counter.dtype == jnp.int32
    assert float(optim.reduce_on_plateau(mode="max").init().best) == -math.inf


def test_reduces_after_more_than_patience_bad_epochs():
    states = run_plateau(optim.reduce_on_plateau(factor=0.5, patience=2), [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert [float(s.scale) for s in states] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    assert [int(s.num_bad_epochs) for s in states] == [0, 1, 2, 0, 1, 2, 0]


def test_cooldown_ignores_bad_epochs():
    ctrl = optim.reduce_on_plateau(factor=0.5, patience=0, cooldown=2)
    states = run_plateau(ctrl, [1.0] * 7)
    assert [float(s.scale) for s in states] == [1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert [int(s.cooldown_counter) for s in states] == [0, 2, 1, 0, 2, 1, 0]


@pytest.mark.parametrize("mode_kw,metrics,expected", [
    (dict(threshold=0.1), [1.0, 0.95, 0.91, 0.89], [0, 1, 2, 0]),  # rel: needs < 0.9·best
    (dict(threshold=0.1, threshold_mode="abs"), [1.0, 0.95, 0.91, 0.89], [0, 1, 2, 0]),  # < best − 0.1
    (dict(threshold=0.1, threshold_mode="abs"), [10.0, 9.5, 9.85, 9.8], [0, 0, 1, 2]),  # 9.5 < 10 − 0.1
    (dict(threshold=0.1), [10.0, 9.5, 9.85, 9.8], [0, 1, 2, 3]),  # but 9.5 > 0.9·10
    (dict(threshold=0.1, mode="max"), [1.0, 1.05, 1.11, 1.2], [0, 1, 0, 1]),
])
def test_threshold_modes(mode_kw, metrics, expected):
    states = run_plateau(optim.reduce_on_plateau(patience=10, **mode_kw), metrics)
    assert [int(s.num_bad_epochs) for s in states] == expected


def test_min_lr_is_a_floor_on_base_lr_times_scale():
    # base_lr = 1 (default): min_lr is the minimum scale.
    states = run_plateau(optim.reduce_on_plateau(factor=0.1, patience=0, min_lr=0.05), [1.0] * 4)
    np.testing.assert_allclose([float(s.scale) for s in states], [1.0, 0.1, 0.05, 0.05], rtol=1e-15)
    # base_lr = 0.01: min_lr = 5e-4 is in learning-rate units, so the minimum scale is 0.05.
    ctrl = optim.reduce_on_plateau(factor=0.1, patience=0, min_lr=5e-4, base_lr=0.01)
    states = run_plateau(ctrl, [1.0] * 4)
    np.testing.assert_allclose([float(s.scale) for s in states], [1.0, 0.1, 0.05, 0.05], rtol=1e-14)


def test_eps_skips_tiny_reductions():
    states = run_plateau(optim.reduce_on_plateau(factor=0.5, patience=0, eps=0.6), [1.0] * 3)
    assert [float(s.scale) for s in states] == [1.0, 1.0, 1.0]


def test_nan_metric_counts_as_bad():
    states = run_plateau(optim.reduce_on_plateau(patience=5), [1.0, float("nan"), 0.5])
    assert [int(s.num_bad_epochs) for s in states] == [0, 1, 0]
    assert float(states[-1].best) == 0.5


def test_scale_feeds_the_optimizer():
    ctrl = optim.reduce_on_plateau(factor=0.5, patience=0)
    state = ctrl.step(ctrl.step(ctrl.init(), 1.0), 1.0)
    opt = optim.sgd(0.2)
    g = {"w": jnp.ones(2)}
    u, _ = jax.jit(opt.update)(g, opt.init(g), lr_scale=state.scale)
    np.testing.assert_allclose(u["w"], -0.1, rtol=1e-15)


# ----------------------------------------------------------------------------------------
# Warmup + cosine, one cycle (their values are checked against optax and torch in tests/parity/)


def test_warmup_cosine_decay_shape():
    s = optim.warmup_cosine_decay(0.0, 1.0, 10, 110, end_value=0.1)
    assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.5) and float(s(10)) == pytest.approx(1.0)
    assert float(s(60)) == pytest.approx(0.55) and float(s(110)) == pytest.approx(0.1)
    assert float(s(500)) == pytest.approx(0.1)


def test_one_cycle_endpoints_and_hold():
    s = optim.one_cycle(100, 1.0, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    assert float(s(0)) == pytest.approx(1 / 25) and float(s(29)) == pytest.approx(1.0)
    assert float(s(99)) == pytest.approx(1 / 25 / 1e4) and float(s(1000)) == pytest.approx(1 / 25 / 1e4)
    lrs = np.asarray(jax.vmap(s)(jnp.arange(100)))
    assert np.all(np.diff(lrs[:30]) > 0) and np.all(np.diff(lrs[29:]) < 0)


@pytest.mark.parametrize("make,match", [
    (lambda: optim.warmup_cosine_decay(0.0, 0.1, 10, 10), r"warmup_cosine_decay: decay_steps \(10\) counts the warmup"),
    (lambda: optim.warmup_cosine_decay(0.0, 0.1, 2, 10, end_value=0.2), "end_value .* must not exceed peak_value"),
    (lambda: optim.warmup_cosine_decay(0.0, 0.1, -1, 10), "warmup_cosine_decay: warmup_steps must be an int >= 0"),
    (lambda: optim.one_cycle(10, 0.1, pct_start=0.1), r"one_cycle: every phase needs at least one step: "
                                                      r"pct_start·total_steps = 1 must be > 1"),
    (lambda: optim.one_cycle(1, 0.1), "one_cycle: total_steps must be an int >= 2"),
    (lambda: optim.one_cycle(100, 0.1, pct_start=0.6, three_phase=True),
     r"one_cycle: pct_start must be in \(0.0, 0.5\)"),
    (lambda: optim.one_cycle(100, 0.1, anneal="cosine"), r"one_cycle: anneal must be one of \['cos', 'linear'\]"),
])
def test_warmup_schedules_refuse_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
