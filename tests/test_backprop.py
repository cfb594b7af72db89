"""Whole networks: manual backward == autodiff == custom_vjp, on random MLPs."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds

from fnn import losses
from fnn.backprop import resolve_grad_mode, value_and_grad, with_own_vjp
from fnn.core import Layer, Loss
from fnn.gradcheck import check_model, rel_err
from fnn.layers.activation import Elu, Gelu, LeakyRelu, LogSoftmax, Relu, Sigmoid, Softmax, Tanh
from fnn.layers.combinators import serial
from fnn.layers.dense import Dense, Maxout
from fnn.layers.dropout import Dropout

ACTIVATIONS = [Relu, Tanh, Sigmoid, Elu, Gelu, lambda: LeakyRelu(0.2)]

#: the worst float64 relative error seen by the random-MLP property (printed with -s)
WORST = {"float64": 0.0, "float32": 0.0}


@st.composite
def mlps(draw):
    depth = draw(st.integers(1, 5))
    layers = []
    for _ in range(depth):
        if draw(st.booleans()) or not layers:
            layers.append(Dense(draw(st.integers(1, 8))))
        else:
            layers.append(Maxout(draw(st.integers(1, 6)), draw(st.integers(2, 3))))
        layers.append(draw(st.sampled_from(ACTIVATIONS))())
        if draw(st.integers(0, 3)) == 0:
            layers.append(Dropout(draw(st.sampled_from([0.1, 0.5]))))
    classes = draw(st.integers(2, 6))
    layers.append(Dense(classes))
    return serial(*layers), classes


@given(net=mlps(), d=st.integers(1, 8), n=st.integers(1, 6), seed=seeds)
def test_random_mlp_manual_equals_autodiff_float64(net, d, n, seed):
    model, classes = net
    labels = jax.random.randint(jax.random.key(seed + 1), (n,), 0, classes)
    report = check_model(model, losses.softmax_cross_entropy, (d,), labels, key=jax.random.key(seed),
                         rtol=1e-10, fd=False)
    WORST["float64"] = max(WORST["float64"], report.vjp_rel_err)
    assert report.vjp_rel_err <= 1e-10


@given(net=mlps(), d=st.integers(1, 8), seed=seeds)
def test_random_mlp_manual_equals_autodiff_float32(net, d, seed):
    model, classes = net
    labels = jax.random.randint(jax.random.key(seed + 1), (4,), 0, classes)
    report = check_model(model, losses.softmax_cross_entropy, (d,), labels, key=jax.random.key(seed),
                         dtype=jnp.float32, rtol=1e-4)
    WORST["float32"] = max(WORST["float32"], report.vjp_rel_err)


@pytest.mark.parametrize("loss, head", [
    (losses.mse, Tanh), (losses.mae, Tanh), (losses.binary_cross_entropy, Sigmoid),
    (losses.sigmoid_binary_cross_entropy, Tanh), (losses.cross_entropy, Softmax),
    (losses.softmax_cross_entropy, LogSoftmax),
])
def test_every_loss_through_a_network_with_finite_differences(loss, head, key):
    model = serial(Dense(6), Elu(), Dense(3), head())
    if loss in (losses.cross_entropy, losses.softmax_cross_entropy):
        target = jnp.array([0, 2, 1, 1])
    else:
        target = jax.random.uniform(key, (4, 3), jnp.float64, 0.1, 0.9)
    report = check_model(model, loss, (5,), target, key=key, fd_rtol=1e-6)
    assert report.vjp_rel_err <= 1e-10 and report.fd_rel_err <= 1e-6


def test_three_modes_agree_under_jit_with_identical_structure(key):
    model = serial(Dense(8), Relu(), Dropout(0.3), Dense(8), Tanh(), Dense(3))
    _, params, state = model.init(key, (5,))
    x = jax.random.normal(key, (7, 5))
    y = jnp.arange(7) % 3
    results = {m: jax.jit(value_and_grad(model, losses.softmax_cross_entropy, grad_mode=m))(
        params, state, x, y, key=jax.random.key(3)) for m in ("manual", "autodiff", "custom_vjp")}
    ref = results["autodiff"]
    for mode, ((value, _), grads) in results.items():
        assert jax.tree.structure(grads) == jax.tree.structure(params), mode
        assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads)), mode
        assert rel_err(grads, ref[1]) < 1e-5, mode
        np.testing.assert_allclose(value, ref[0][0], rtol=1e-6)


def test_manual_mode_uses_no_autodiff(monkeypatch, key):
    model = serial(Dense(4), Tanh(), Dense(2))
    _, params, state = model.init(key, (3,))
    f = value_and_grad(model, losses.mse, grad_mode="manual", penalty=losses.l2(0.1))

    def forbidden(*args, **kwargs):
        raise AssertionError("autodiff used on the manual path")

    for name in ("grad", "vjp", "jvp", "value_and_grad", "linear_transpose"):
        monkeypatch.setattr(jax, name, forbidden)
    (value, _), grads = f(params, state, jnp.ones((2, 3)), jnp.zeros((2, 2)))
    assert np.isfinite(float(value)) and len(jax.tree.leaves(grads)) == 4


def test_manual_mode_runs_each_forward_once(key):
    calls = {"apply": 0, "backward": 0}
    dense = Dense(3)

    def apply(params, state, x, *, key=None, train=False):
        calls["apply"] += 1
        return dense.apply(params, state, x, key=key, train=train)

    def backward(params, state, x, dy, *, key=None, train=False):
        calls["backward"] += 1
        return dense.backward(params, state, x, dy, key=key, train=train)

    counted = Layer("Counted", dense.init, apply, backward)
    model = serial(counted, Tanh(), serial(counted, Relu()), Dense(2))
    _, params, state = model.init(key, (3,))
    value_and_grad(model, losses.mse, grad_mode="manual")(params, state, jnp.ones((2, 3)), jnp.zeros((2, 2)))
    assert calls == {"apply": 2, "backward": 2}


def test_user_defined_loss_works_in_every_mode(key):
    def huber_value(p, t):
        return jnp.mean(jnp.where(jnp.abs(p - t) < 1, 0.5 * (p - t) ** 2, jnp.abs(p - t) - 0.5))

    huber = Loss("huber", huber_value,
                 lambda p, t: jnp.clip(p - t, -1, 1) / p.size)
    report = check_model(serial(Dense(4), Tanh(), Dense(2)), huber, (3,), 3 * jnp.ones((5, 2), jnp.float64), key=key)
    assert report.vjp_rel_err < 1e-10


def test_penalty_is_added_in_every_mode(key):
    model = serial(Dense(4), Tanh(), Dense(2))
    _, params, state = model.init(key, (3,))
    x, y = jnp.ones((2, 3), jnp.float32), jnp.zeros((2, 2), jnp.float32)
    (plain, _), g0 = value_and_grad(model, losses.mse, grad_mode="autodiff")(params, state, x, y)
    for mode in ("manual", "autodiff", "custom_vjp"):
        (value, _), g = value_and_grad(model, losses.mse, grad_mode=mode, penalty=losses.l2(0.5))(params, state, x, y)
        np.testing.assert_allclose(value, plain + losses.l2(0.5).value(params, None), rtol=1e-6)
        np.testing.assert_allclose(g[2]["w"], g0[2]["w"] + 0.5 * params[2]["w"], rtol=1e-5, atol=1e-7)


def test_with_own_vjp_supports_jax_transforms(key):
    model = serial(Dense(4), Tanh(), Dense(1))
    own = with_own_vjp(model)
    _, params, state = model.init(key, (3,))
    x = jax.random.normal(key, (5, 3))
    per_example = jax.vmap(jax.grad(lambda p, x: own.apply(p, state, x[None])[0].sum()), in_axes=(None, 0))(params, x)
    ref = jax.vmap(jax.grad(lambda p, x: model.apply(p, state, x[None])[0].sum()), in_axes=(None, 0))(params, x)
    assert rel_err(per_example, ref) < 1e-5


def test_unknown_mode():
    with pytest.raises(ValueError, match=r"value_and_grad: grad_mode must be one of "
                                         r"\['auto', 'manual', 'autodiff', 'custom_vjp'\]"):
        value_and_grad(serial(Dense(1)), losses.mse, grad_mode="numeric")


def _grads(f, params, state, x, y):
    (value, _), grads = jax.jit(f)(params, state, x, y)
    return [value] + jax.tree.leaves(grads)


def test_default_grad_mode_is_auto():
    model = serial(Dense(4), Relu(), Dense(2))
    _, params, state = model.init(jax.random.key(0), (3,))
    x, y = jax.random.normal(jax.random.key(1), (5, 3)), jax.random.normal(jax.random.key(2), (5, 2))
    assert resolve_grad_mode("auto") == ("custom_vjp" if jax.default_backend() in ("cpu", "gpu") else "autodiff")
    assert [resolve_grad_mode(m) for m in ("manual", "autodiff", "custom_vjp")] == ["manual", "autodiff", "custom_vjp"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default = _grads(value_and_grad(model, losses.mse), params, state, x, y)
        resolved = _grads(value_and_grad(model, losses.mse, grad_mode=resolve_grad_mode("auto")), params, state, x, y)
    for a, b in zip(default, resolved, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="resolve_grad_mode: grad_mode must be one of"):
        resolve_grad_mode("numeric")


@pytest.mark.parametrize("backend,mode", [("cpu", "custom_vjp"), ("gpu", "custom_vjp"), ("tpu", "autodiff"),
                                          ("METAL", "autodiff")])
def test_auto_resolves_per_backend(monkeypatch, backend, mode):
    """custom_vjp where it was measured fastest (XLA:CPU, an H200), autodiff on backends never measured."""
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert resolve_grad_mode("auto") == mode
    assert resolve_grad_mode("autodiff") == "autodiff"


def test_mode_is_deprecated_positional_or_keyword():
    model = serial(Dense(4), Tanh(), Dense(2))
    _, params, state = model.init(jax.random.key(0), (3,))
    x, y = jax.random.normal(jax.random.key(1), (5, 3)), jax.random.normal(jax.random.key(2), (5, 2))
    for m in ("manual", "autodiff"):
        new = _grads(value_and_grad(model, losses.mse, grad_mode=m), params, state, x, y)
        with pytest.warns(DeprecationWarning, match=r"value_and_grad.*is deprecated, use .*grad_mode="):
            positional = _grads(value_and_grad(model, losses.mse, m), params, state, x, y)
        with pytest.warns(DeprecationWarning, match="grad_mode="):
            keyword = _grads(value_and_grad(model, losses.mse, mode=m), params, state, x, y)
        for a, b, c in zip(new, positional, keyword, strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="not both"):
        value_and_grad(model, losses.mse, mode="manual", grad_mode="autodiff")
