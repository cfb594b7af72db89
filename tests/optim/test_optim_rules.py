"""Optimizer rules: reference transcriptions, first steps by hand, and the contract every rule keeps.

Contract: state structure and dtypes never change (lax.scan accepts the carry), float32 stays
float32, a second jitted step does not retrace, jit equals eager, lr_scale multiplies the lr.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import RTOL64

from fnn import optim

RULES = {
    "sgd": lambda: optim.sgd(0.1),
    "momentum": lambda: optim.momentum(0.1, dampening=0.2),
    "ema_momentum": lambda: optim.ema_momentum(0.1),
    "nesterov": lambda: optim.nesterov(0.1),
    "adagrad": lambda: optim.adagrad(0.1, initial_accumulator=0.1),
    "rmsprop": lambda: optim.rmsprop(0.01),
    "rmsprop_centered_momentum": lambda: optim.rmsprop(0.01, centered=True, momentum=0.5),
    "adam": lambda: optim.adam(0.01),
    "adam_uncorrected": lambda: optim.adam(0.01, bias_correction=False),
    "adamw": lambda: optim.adamw(0.01),
    "rprop": lambda: optim.rprop(0.01),
    "chain_clip_decay_adam": lambda: optim.chain(optim.clip_by_global_norm(1.0), optim.add_weight_decay(1e-3),
                                                 optim.adam(optim.cosine_decay(0.01, 10))),
    "chain_value_scale": lambda: optim.chain(optim.clip_by_value(0.5),
                                             optim.scale_by_learning_rate(optim.step_decay(0.1, 0.5, 2))),
}


def tree(dtype=jnp.float32, seed=0):
    """A nested pytree: dict, tuple, a scalar leaf."""
    k = jax.random.split(jax.random.key(seed), 4)
    return {"w": jax.random.normal(k[0], (3, 4), dtype),
            "inner": (jax.random.normal(k[1], (5,), dtype), {"s": jax.random.normal(k[2], (), dtype)}),
            "b": jax.random.normal(k[3], (2, 1, 2), dtype)}


def leaves_close(a, b, rtol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-300)


@pytest.mark.parametrize("rule", list(RULES))
def test_state_structure_and_dtypes_never_change_float32(rule):
    opt = RULES[rule]()
    params = tree(jnp.float32)
    state = opt.init(params)
    spec = jax.tree.map(lambda x: (x.shape, x.dtype), state)

    def body(carry, g):
        p, s = carry
        u, s = opt.update(g, s, p)
        assert jax.tree.structure(u) == jax.tree.structure(p)
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(u))
        return (optim.apply_updates(p, u), s), None

    grads = jax.tree.map(lambda x: jnp.stack([x, -x, 0.5 * x]), tree(jnp.float32, seed=1))
    (params2, state2), _ = jax.lax.scan(body, (params, state), grads)  # refuses a changing carry
    assert jax.tree.structure(state2) == jax.tree.structure(state)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), state2) == spec
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params2))
    before, after = jax.tree.leaves(params), jax.tree.leaves(params2)
    assert not all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    counts = [x for x in jax.tree.leaves(state2) if x.dtype == jnp.int32]
    assert all(c.shape == () and int(c) == 3 for c in counts)


@pytest.mark.parametrize("rule", list(RULES))
def test_no_retrace_on_second_jitted_step_and_jit_equals_eager(rule):
    opt = RULES[rule]()
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(1)
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    params, state = tree(jnp.float64), opt.init(tree(jnp.float64))
    eager_p, eager_s = params, state
    for seed in (1, 2, 3):
        g = tree(jnp.float64, seed=seed)
        params, state = step(params, state, g)
        u, eager_s = opt.update(g, eager_s, eager_p)
        eager_p = optim.apply_updates(eager_p, u)
    assert len(traces) == 1
    leaves_close(params, eager_p, RTOL64)
    leaves_close(state, eager_s, RTOL64)


@pytest.mark.parametrize("rule", list(RULES))
def test_lr_scale_multiplies_the_first_update(rule):
    opt = RULES[rule]()
    params, g = tree(jnp.float64), tree(jnp.float64, seed=1)
    u1, _ = opt.update(g, opt.init(params), params)
    u_half, _ = opt.update(g, opt.init(params), params, lr_scale=0.5)
    u0, _ = opt.update(g, opt.init(params), params, lr_scale=jnp.zeros((), jnp.float64))
    with pytest.raises(TypeError, match="unused_key"):  # no **extra: an unknown keyword is refused
        opt.update(g, opt.init(params), params, lr_scale=0.5, unused_key="ignored")
    leaves_close(u_half, jax.tree.map(lambda x: 0.5 * x, u1), RTOL64)
    assert all(not np.any(x) for x in jax.tree.leaves(u0))


@pytest.mark.parametrize("rule", list(RULES))
def test_grads_with_another_structure_are_refused(rule):
    opt = RULES[rule]()
    params = tree(jnp.float64)
    wrong = {"w": params["w"], "b": params["b"]}
    with pytest.raises(ValueError, match="tree structure"):
        opt.update(wrong, opt.init(params), params)


def test_mixed_dtype_tree_keeps_each_dtype():
    params = {"a": jnp.ones((3,), jnp.float32), "b": jnp.ones((2,), jnp.float64)}
    for make in RULES.values():
        opt = make()
        u, s = jax.jit(opt.update)(params, opt.init(params), params)
        new = optim.apply_updates(params, u)
        assert new["a"].dtype == jnp.float32 and new["b"].dtype == jnp.float64


# ----------------------------------------------------------------------------------------
# NumPy transcriptions of the formulas (course forms and the iRprop− paper)


def np_ema_momentum(theta, grads, lr, gamma):
    v, out = np.zeros_like(theta), []
    for g in grads:
        v = gamma * v + (1 - gamma) * g
        theta = theta - lr * v
        out.append(theta)
    return out


def np_adam_uncorrected(theta, grads, lr, b1, b2, eps):
    m, v, out = np.zeros_like(theta), np.zeros_like(theta), []
    for g in grads:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        theta = theta - lr * m / (np.sqrt(v) + eps)
        out.append(theta)
    return out


def np_irprop_minus(theta, grads, delta0, eta_minus, eta_plus, dmin, dmax):
    """Igel & Hüsken (2000), iRprop−, Δ starting at delta0 and applied from the first step."""
    delta, prev, out = np.full_like(theta, delta0), np.zeros_like(theta), []
    for g in grads:
        g = g.copy()
        for i in range(theta.size):
            if prev[i] * g[i] > 0:
                delta[i] = min(delta[i] * eta_plus, dmax)
            elif prev[i] * g[i] < 0:
                delta[i] = max(delta[i] * eta_minus, dmin)
                g[i] = 0.0
            else:
                delta[i] = min(max(delta[i], dmin), dmax)
            theta[i] = theta[i] - np.sign(g[i]) * delta[i]
        prev = g
        out.append(theta.copy())
    return out


def run_flat(opt, theta, grads):
    params, state, out = {"t": jnp.asarray(theta)}, None, []
    state = opt.init(params)
    for g in grads:
        u, state = opt.update({"t": jnp.asarray(g)}, state, params)
        params = optim.apply_updates(params, u)
        out.append(np.asarray(params["t"]))
    return out


@pytest.fixture
def seq():
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=7) + 0.8 * np.array([1, 1, -1, 0, 0, 1, -1]) for _ in range(20)]
    grads[3][4] = 0.0  # a zero gradient: Rprop's sign-0 branch
    return rng.normal(size=7), grads


@pytest.mark.parametrize("make,ref", [
    (lambda: optim.ema_momentum(0.1, 0.8), lambda t, gs: np_ema_momentum(t, gs, 0.1, 0.8)),
    (lambda: optim.adam(0.05, 0.8, 0.9, 1e-6, bias_correction=False),
     lambda t, gs: np_adam_uncorrected(t, gs, 0.05, 0.8, 0.9, 1e-6)),
    (lambda: optim.rprop(0.05, 0.5, 1.2, 1e-3, 0.15),
     lambda t, gs: np_irprop_minus(t.copy(), gs, 0.05, 0.5, 1.2, 1e-3, 0.15)),
], ids=["ema_momentum", "adam_uncorrected", "rprop"])
def test_matches_numpy_transcription_at_every_step(make, ref, seq):
    theta, grads = seq
    for k, (a, b) in enumerate(zip(run_flat(make(), theta, grads), ref(theta, grads), strict=True)):
        assert np.max(np.abs(a - b)) <= RTOL64 * np.max(np.abs(b)), f"step {k + 1}"


# ----------------------------------------------------------------------------------------
# First steps by hand


def one(opt, g, steps=1, params=None):
    params = {"t": jnp.zeros_like(jnp.asarray(g[0]))} if params is None else params
    state, us = opt.init(params), []
    for k in range(steps):
        u, state = opt.update({"t": jnp.asarray(g[k])}, state, params)
        us.append(np.asarray(u["t"]))
    return us, state


def test_momentum_first_velocity_is_the_gradient_even_with_dampening():
    g = [np.array([1.0, -2.0]), np.array([3.0, 0.5])]
    us, _ = one(optim.momentum(1.0, 0.9, dampening=0.5), g, 2)
    np.testing.assert_allclose(us[0], -g[0], rtol=1e-15)
    np.testing.assert_allclose(us[1], -(0.9 * g[0] + 0.5 * g[1]), rtol=1e-15)


def test_nesterov_first_step_looks_ahead():
    g = [np.array([1.0, -2.0]), np.array([3.0, 0.5])]
    us, _ = one(optim.nesterov(0.1, 0.9), g, 2)
    np.testing.assert_allclose(us[0], -0.1 * 1.9 * g[0], rtol=1e-15)
    v2 = 0.9 * g[0] + g[1]
    np.testing.assert_allclose(us[1], -0.1 * (g[1] + 0.9 * v2), rtol=1e-15)


def test_adam_first_step_is_lr_times_sign():
    g = [np.array([1e-3, -2.0, 5.0])]
    us, state = one(optim.adam(0.1, eps=0.0), g)
    np.testing.assert_allclose(us[0], -0.1 * np.sign(g[0]), rtol=1e-14)
    assert state.count.dtype == jnp.int32 and int(state.count) == 1


def test_rmsprop_eps_placement():
    g = [np.array([0.01, -1.0])]
    a = 1 - 0.9
    outside, _ = one(optim.rmsprop(1.0, decay=0.9, eps=1e-3), g)
    inside, _ = one(optim.rmsprop(1.0, decay=0.9, eps=1e-3, eps_inside_sqrt=True), g)
    np.testing.assert_allclose(outside[0], -g[0] / (np.sqrt(a * g[0] ** 2) + 1e-3), rtol=1e-14)
    np.testing.assert_allclose(inside[0], -g[0] / np.sqrt(a * g[0] ** 2 + 1e-3), rtol=1e-14)


def test_adagrad_initial_accumulator():
    g = [np.array([2.0, -1.0])]
    us, state = one(optim.adagrad(0.5, eps=0.0, initial_accumulator=5.0), g)
    np.testing.assert_allclose(us[0], -0.5 * g[0] / np.sqrt(5.0 + g[0] ** 2), rtol=1e-15)
    np.testing.assert_allclose(state.sum_of_squares["t"], 5.0 + g[0] ** 2)


def test_adamw_decays_with_the_params_before_the_step():
    p = {"t": jnp.array([2.0, -4.0])}
    g = [np.array([1.0, 1.0])]
    us, _ = one(optim.adamw(0.1, eps=0.0, weight_decay=0.5), g, params=p)
    np.testing.assert_allclose(us[0], -0.1 * 1.0 - 0.1 * 0.5 * np.asarray(p["t"]), rtol=1e-15)


def test_rprop_moves_by_the_initial_step_at_once_and_adapts():
    """No lag: the first update is −sign(g)·lr (optax's rprop makes it a step later)."""
    g = [np.array([3.0, -1.0, 0.0]), np.array([1.0, 2.0, 0.5]), np.array([1.0, 2.0, 0.5])]
    us, state = one(optim.rprop(0.1), g, 3)
    np.testing.assert_allclose(us[0], [-0.1, 0.1, 0.0], rtol=1e-15)
    # step 2: coordinate 0 same sign -> 0.12; coordinate 1 flipped -> no move, Δ = 0.05; 2: sign 0 -> 0.1
    np.testing.assert_allclose(us[1], [-0.12, 0.0, -0.1], rtol=1e-15)
    # step 3: coordinate 1 has prev_grad 0 after the flip, so Δ stays 0.05 and it moves again
    np.testing.assert_allclose(us[2], [-0.144, -0.05, -0.12], rtol=1e-15)
    np.testing.assert_allclose(state.step_size["t"], [0.144, 0.05, 0.12], rtol=1e-15)


def test_rprop_lr_scale_scales_the_move_not_the_stored_step():
    g = [np.array([1.0, -1.0])] * 2
    params = {"t": jnp.zeros(2)}
    opt = optim.rprop(0.1)
    state = opt.init(params)
    u, state = opt.update({"t": jnp.asarray(g[0])}, state, params, lr_scale=0.5)
    np.testing.assert_allclose(u["t"], [-0.05, 0.05], rtol=1e-15)
    np.testing.assert_allclose(state.step_size["t"], [0.1, 0.1], rtol=1e-15)
    u, state = opt.update({"t": jnp.asarray(g[1])}, state, params, lr_scale=1.0)
    np.testing.assert_allclose(u["t"], [-0.12, 0.12], rtol=1e-15)


def test_schedule_sees_the_count_of_updates_done_before():
    g = [np.array([1.0])] * 3
    us, state = one(optim.sgd(lambda count: 0.1 * (jnp.asarray(count, jnp.float64) + 1.0)), g, 3)
    np.testing.assert_allclose(np.concatenate(us), [-0.1, -0.2, -0.3], rtol=1e-15)
    assert int(state.count) == 3


def test_unused_state_fields_have_no_leaves():
    params = {"t": jnp.zeros(4)}
    plain = optim.rmsprop(0.1).init(params)
    assert plain.grad_avg == () and plain.momentum_buffer == ()
    assert len(jax.tree.leaves(plain)) == 2  # count and square_avg
    full = optim.rmsprop(0.1, centered=True, momentum=0.5).init(params)
    assert len(jax.tree.leaves(full)) == 4


def test_updates_without_params_where_they_are_not_needed():
    g = {"t": jnp.ones(2)}
    for make in (lambda: optim.sgd(0.1), lambda: optim.adam(0.1), lambda: optim.rprop()):
        opt = make()
        u, _ = opt.update(g, opt.init(g))
        assert u["t"].shape == (2,)
    for opt in (optim.adamw(0.1), optim.chain(optim.add_weight_decay(0.1), optim.sgd(0.1))):
        with pytest.raises(ValueError, match="needs params"):
            opt.update(g, opt.init(g))


def test_ema_momentum_is_heavy_ball_with_a_rescaled_learning_rate(seq):
    theta, grads = seq
    ema = run_flat(optim.ema_momentum(0.1, 0.8), theta, grads)
    heavy = run_flat(optim.momentum(0.1 * (1 - 0.8), 0.8), theta, grads)
    for a, b in zip(ema, heavy, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_learning_rate_can_be_vmapped_for_hyperparameter_search():
    """A traced learning rate has no value to validate; it is used as a constant schedule."""
    params, g = {"t": jnp.array([1.0, -2.0])}, {"t": jnp.array([0.5, 0.25])}

    def first_update(lr):
        opt = optim.adam(lr)
        return opt.update(g, opt.init(params), params)[0]["t"]

    batched = jax.vmap(first_update)(jnp.array([0.1, 0.01]))
    np.testing.assert_allclose(batched[0], first_update(0.1), rtol=1e-15)
    np.testing.assert_allclose(batched[1], first_update(0.01), rtol=1e-15)


def test_adam_moments_are_separate_buffers_so_state_can_be_donated():
    import jax.numpy as jnp

    from fnn import optim as _optim

    for rule in (_optim.adam(1e-3), _optim.adamw(1e-3)):
        state = rule.init({"w": jnp.ones(3)})
        assert state.m["w"] is not state.v["w"]
