"""chain, clipping, weight decay, scale_by_learning_rate, apply_updates and global_norm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import RTOL64

from fnn import optim
from fnn.core import Optimizer


def tree(scale=1.0, dtype=jnp.float64):
    return {"a": scale * jnp.array([3.0, -4.0], dtype), "b": (scale * jnp.array([[12.0]], dtype),)}


def test_global_norm_is_the_norm_of_all_leaves_flattened():
    t = tree()
    assert float(optim.global_norm(t)) == pytest.approx(13.0, rel=1e-15)
    assert float(optim.global_norm({})) == 0.0
    mixed = {"a": jnp.ones(4, jnp.float32), "b": jnp.ones(5, jnp.float64)}
    n = optim.global_norm(mixed)
    assert n.dtype == jnp.float64 and float(n) == pytest.approx(3.0, rel=1e-15)
    assert optim.global_norm({"h": jnp.full((4,), 300.0, jnp.float16)}).dtype == jnp.float32  # no overflow


@pytest.mark.parametrize("max_norm,expected_scale", [(6.5, 0.5), (13.0, 1.0), (100.0, 1.0)])
def test_clip_by_global_norm_rescales_only_above_the_bound(max_norm, expected_scale):
    opt = optim.clip_by_global_norm(max_norm)
    g = tree()
    u, state = opt.update(g, opt.init(g))
    assert isinstance(state, optim.ClipState)
    assert float(state.global_norm) == pytest.approx(13.0, rel=1e-15)  # the pre-clip norm
    for x, y in zip(jax.tree.leaves(u), jax.tree.leaves(g), strict=True):
        np.testing.assert_allclose(x, expected_scale * y, rtol=1e-15)
    assert float(optim.global_norm(u)) == pytest.approx(min(13.0, max_norm), rel=1e-14)


def test_clip_by_global_norm_eps_matches_torch_formula_and_zero_grads_stay_zero():
    opt = optim.clip_by_global_norm(1.0, eps=1e-6)
    g = tree()
    u, _ = opt.update(g, opt.init(g))
    np.testing.assert_allclose(u["a"], g["a"] * (1.0 / (13.0 + 1e-6)), rtol=1e-15)
    z = jax.tree.map(jnp.zeros_like, g)
    for o in (opt, optim.clip_by_global_norm(1.0)):
        u, s = o.update(z, o.init(z))
        assert all(np.all(np.isfinite(x)) and not np.any(x) for x in jax.tree.leaves(u))
        assert float(s.global_norm) == 0.0


def test_clip_state_keeps_its_dtype_for_float32_params():
    g = tree(dtype=jnp.float32)
    opt = optim.clip_by_global_norm(1.0)
    s0 = opt.init(g)
    u, s1 = jax.jit(opt.update)(g, s0)
    assert s0.global_norm.dtype == s1.global_norm.dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(u))


def test_clip_by_value():
    opt = optim.clip_by_value(3.5)
    u, s = opt.update(tree(), opt.init(tree()))
    np.testing.assert_array_equal(u["a"], [3.0, -3.5])
    np.testing.assert_array_equal(u["b"][0], [[3.5]])
    assert s == optim.EmptyState()


def test_add_weight_decay_adds_the_l2_gradient():
    params, g = tree(), tree(0.1)
    opt = optim.add_weight_decay(0.01)
    u, _ = opt.update(g, opt.init(params), params)
    np.testing.assert_allclose(u["a"], g["a"] + 0.01 * params["a"], rtol=1e-15)


def test_scale_by_learning_rate_uses_schedule_and_lr_scale():
    g = tree()
    opt = optim.scale_by_learning_rate(optim.step_decay(1.0, 0.5, 1))
    s = opt.init(g)
    u1, s = opt.update(g, s)
    u2, s = opt.update(g, s, lr_scale=0.1)
    np.testing.assert_allclose(u1["a"], -g["a"], rtol=1e-15)
    np.testing.assert_allclose(u2["a"], -0.05 * g["a"], rtol=1e-15)
    assert int(s.count) == 2


def test_chain_of_clip_and_scale_equals_clipped_sgd():
    params, g = tree(), tree(2.0)
    hand = optim.chain(optim.clip_by_global_norm(1.0), optim.scale_by_learning_rate(0.1))
    rule = optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1))
    uh, sh = hand.update(g, hand.init(params), params)
    ur, sr = rule.update(g, rule.init(params), params)
    for x, y in zip(jax.tree.leaves(uh), jax.tree.leaves(ur), strict=True):
        np.testing.assert_allclose(x, y, rtol=RTOL64)
    assert isinstance(sh, tuple) and len(sh) == 2 and isinstance(sh[0], optim.ClipState)


def test_chain_passes_lr_scale_to_every_member():
    seen = []

    def spy_update(grads, state, params=None, *, lr_scale=1.0):
        seen.append(lr_scale)
        return grads, state

    spy = Optimizer(lambda p: (), spy_update)
    opt = optim.chain(spy, optim.sgd(1.0), spy)
    g = tree()
    u, _ = opt.update(g, opt.init(g), None, lr_scale=0.25)
    assert seen == [0.25] * 2
    np.testing.assert_allclose(u["a"], -0.25 * g["a"], rtol=1e-15)
    with pytest.raises(TypeError, match="epoch"):
        opt.update(g, opt.init(g), None, lr_scale=0.25, epoch=3)


class _Foreign:
    """An optax-style transform that is not an fnn Optimizer: update takes no lr_scale."""

    def __init__(self):
        self.calls = []

    def init(self, params):
        return ()

    def update(self, updates, state, params=None):
        self.calls.append(params)
        return jax.tree.map(lambda u: 2.0 * u, updates), state


def test_chain_calls_foreign_transforms_without_lr_scale():
    foreign = _Foreign()
    opt = optim.chain(foreign, optim.sgd(1.0))
    g = tree()
    u, state = opt.update(g, opt.init(g), g, lr_scale=0.25)
    assert foreign.calls == [g] and state[0] == ()
    np.testing.assert_allclose(u["a"], -0.5 * g["a"], rtol=1e-15)  # 2·g from the foreign one, then -0.25·lr


def test_chain_refuses_an_object_without_init_and_update():
    with pytest.raises(ValueError, match="chain: argument 0 must be an Optimizer, got object"):
        optim.chain(object())


def test_chain_order_matters_clip_then_decay():
    """torch clips p.grad and then Adam adds weight decay; the chain order reproduces that."""
    params, g = tree(10.0), tree(0.0)
    a = optim.chain(optim.clip_by_value(0.1), optim.add_weight_decay(1.0))
    b = optim.chain(optim.add_weight_decay(1.0), optim.clip_by_value(0.1))
    ua, _ = a.update(g, a.init(params), params)
    ub, _ = b.update(g, b.init(params), params)
    np.testing.assert_allclose(ua["a"], params["a"])
    np.testing.assert_allclose(ub["a"], [0.1, -0.1])


def test_empty_chain_is_the_identity():
    g = tree()
    opt = optim.chain()
    u, s = opt.update(g, opt.init(g))
    assert s == () and u is g


def test_apply_updates_keeps_param_dtypes():
    params = {"a": jnp.ones(3, jnp.float32), "b": jnp.ones(2, jnp.bfloat16)}
    updates = {"a": jnp.full(3, 0.5, jnp.float64), "b": jnp.full(2, 0.5, jnp.float32)}
    new = optim.apply_updates(params, updates)
    assert new["a"].dtype == jnp.float32 and new["b"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(new["a"]), 1.5)


def test_apply_updates_refuses_a_mismatched_tree():
    with pytest.raises(ValueError, match="apply_updates: updates tree structure"):
        optim.apply_updates({"a": jnp.ones(2)}, {"b": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"apply_updates: updates leaf \['a'\] expected shape \(2,\)"):
        optim.apply_updates({"a": jnp.ones(2)}, {"a": jnp.ones(3)})
