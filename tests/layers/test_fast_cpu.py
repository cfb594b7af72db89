"""The XLA:CPU kernels (fnn/layers/_fast_cpu.py) equal the textbook backward and jax.vjp of apply.

Relative errors are max|a − b| / max|b| per array: FAST_RTOL64 in float64 (the same sums in
another order), FAST_RTOL32 in float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import float_dtypes, seeds
from test_conv import conv_cases, fits, make, xla_swap_bug

from fnn import backprop
from fnn.layers import _fast_cpu
from fnn.layers.conv import Conv2D
from fnn.layers.pool import MaxPool, MinPool
from fnn.layers.reshape import Flatten
from fnn.losses import mse

FAST_RTOL64 = 1e-12
FAST_RTOL32 = 1e-5


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b), initial=0.0) / max(np.max(np.abs(b), initial=0.0), 1e-300))


def three_ways(layer, params, x, dy, with_vjp=True):
    """(textbook backward, fast backward, jax.vjp of apply or None), each (dparams, dx)."""
    textbook = layer.backward(params, {}, x, dy)
    with _fast_cpu.enabled():
        fast = layer.backward(params, {}, x, dy)
    ref = None
    if with_vjp:
        _, vjp = jax.vjp(lambda p, x: layer.apply(p, {}, x)[0], params, x)
        ref = vjp(dy)
    return textbook, fast, ref


def assert_close(got, want, rtol):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert rel_err(a, b) <= rtol, (rel_err(a, b), rtol)


def conv_inputs(case, seed, dtype):
    layer = make(case)
    shape = (*case["spatial"], case["c_in"])
    _, params, _ = layer.init(jax.random.key(seed % 1000), shape)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), dtype), params)
    x = jnp.asarray(rng.standard_normal((2, *shape)), dtype)
    y, _ = layer.apply(params, {}, x)
    return layer, params, x, jnp.asarray(rng.standard_normal(y.shape), dtype)


@pytest.mark.parametrize("limit", [0, 10**9], ids=["conv_form", "patches"])
@given(case=conv_cases(), seed=seeds, dtype=float_dtypes)
def test_conv_fast_weight_gradient_equals_textbook_and_vjp(case, seed, dtype, limit):
    # The fast weight gradient has two forms (a canonical conv of transposed operands, or strided
    # patches and one matmul for small window × C_in); force each on every case.
    assume(fits(case))
    rtol = FAST_RTOL64 if dtype == jnp.float64 else FAST_RTOL32
    layer, params, x, dy = conv_inputs(case, seed, dtype)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_fast_cpu, "PATCH_LIMIT", limit)
        textbook, fast, ref = three_ways(layer, params, x, dy, with_vjp=not xla_swap_bug(case))
    assert_close(fast, textbook, rtol)
    np.testing.assert_array_equal(fast[1], textbook[1])  # dx is one and the same kernel
    if ref is not None:  # xla_swap_bug cases: jax.vjp's conv aborts XLA:CPU, no reference
        assert_close(textbook, ref, rtol)
        assert_close(fast, ref, rtol)


@st.composite
def tiled_pool_cases(draw):
    """Windows that tile x (stride = window, no padding), x possibly with a remainder."""
    nd = draw(st.integers(1, 3))
    window = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    spatial = tuple(w * draw(st.integers(1, 3 if nd < 3 else 2)) + draw(st.integers(0, w - 1)) for w in window)
    return dict(window=window, spatial=spatial, channels=draw(st.integers(1, 3)),
                make=draw(st.sampled_from([MaxPool, MinPool])), ties=draw(st.booleans()))


@given(case=tiled_pool_cases(), seed=seeds, dtype=float_dtypes)
def test_pool_tiled_gradient_equals_textbook_and_vjp(case, seed, dtype):
    layer = case["make"](case["window"])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, *case["spatial"], case["channels"]))
    if case["ties"]:  # few distinct values: both paths must route dy to the same (first) extremum
        x = np.round(x)
    x = jnp.asarray(x, dtype)
    y, _ = layer.apply({}, {}, x)
    dy = jnp.asarray(rng.standard_normal(y.shape), dtype)
    textbook, fast, ref = three_ways(layer, {}, x, dy, with_vjp=not case["ties"])
    np.testing.assert_array_equal(fast[1], textbook[1])  # one cell per window gets dy: exact
    if ref is not None:  # autodiff splits ties differently; without ties all three agree exactly
        np.testing.assert_array_equal(textbook[1], ref[1])


def _traces_fast_dw(f, *args) -> bool:
    """A first-layer conv (C_in 1) takes the patch matmul in the fast kernels, a conv in the
    textbook form: whether f's jaxpr holds a dot_general."""
    return "dot_general" in str(jax.make_jaxpr(f)(*args))


def _tiny_conv():
    from fnn.layers.combinators import serial

    model = serial(Conv2D(2, 3), Flatten())
    _, params, state = model.init(jax.random.key(0), (5, 5, 1))
    return model, params, state, jnp.ones((2, 5, 5, 1)), jnp.zeros((2, 18))


def test_every_hand_derived_mode_on_cpu_traces_the_fast_kernels():
    """"auto", "custom_vjp" and "manual" (CPU) trace the patch matmul for dw; autodiff does not."""
    model, params, state, x, y = _tiny_conv()

    def grad_prims(mode):
        vg = backprop.value_and_grad(model, mse, grad_mode=mode)
        return _traces_fast_dw(lambda p: vg(p, state, x, y)[1], params)

    assert jax.default_backend() == "cpu"
    assert grad_prims("auto") and grad_prims("custom_vjp") and grad_prims("manual")
    assert not grad_prims("autodiff")
    assert not _fast_cpu.active()  # the switch never leaks out of a trace


def test_gradcheck_and_direct_backward_trace_the_textbook_forms(monkeypatch):
    """check_model checks the hand derivations, not the kernels: textbook() wins over enabled(),
    so a wrong textbook dw is caught although training on CPU never runs it."""
    from fnn import gradcheck
    from fnn.layers import conv as conv_module

    orig_fast, orig_textbook = _fast_cpu.conv_weight_grad, conv_module._weight_grad
    model, params, state, x, y = _tiny_conv()
    vg = backprop.value_and_grad(model, mse, grad_mode="manual")
    with _fast_cpu.textbook():
        assert not _traces_fast_dw(lambda p: vg(p, state, x, y)[1], params)
        with _fast_cpu.enabled():
            assert not _fast_cpu.active()
    assert not _traces_fast_dw(lambda p: model.backward(p, state, x, jnp.ones((2, 18)))[0], params)

    def fit_conv():
        return gradcheck.check_model(Conv2D(2, 3), mse, (5, 5, 1), jnp.zeros((2, 3, 3, 2)), key=jax.random.key(1))

    seen = []
    with monkeypatch.context() as m:
        m.setattr(_fast_cpu, "conv_weight_grad", lambda *a: seen.append(1) or orig_fast(*a))
        fit_conv()
        assert seen == []  # check_model never traced the kernel
        m.setattr(conv_module, "_weight_grad", lambda *a: 1.01 * orig_textbook(*a))
        with pytest.raises(gradcheck.GradCheckError, match="differs from autodiff"):
            fit_conv()


def test_auto_is_with_own_vjp_cpu_kernels_and_close_to_textbook(key):
    from fnn.models import simple_cnn

    model = simple_cnn(input_shape=(8, 8, 1))
    _, params, state = model.init(key, (8, 8, 1))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    x = jax.random.normal(key, (3, 8, 8, 1), jnp.float64)
    labels = jnp.array([1, 2, 3])
    from fnn.losses import softmax_cross_entropy

    grads = {m: jax.jit(lambda p, m=m: backprop.value_and_grad(model, softmax_cross_entropy, grad_mode=m)(
        p, state, x, labels)[1])(params) for m in ("auto", "custom_vjp", "manual", "autodiff")}
    fast = backprop.with_own_vjp(model, cpu_kernels=True)
    (_, direct) = jax.jit(jax.value_and_grad(
        lambda p: softmax_cross_entropy.value(fast.apply(p, state, x)[0], labels)))(params)
    for a, b in zip(jax.tree.leaves(grads["auto"]), jax.tree.leaves(direct), strict=True):
        np.testing.assert_array_equal(a, b)
    for mode in ("custom_vjp", "manual", "autodiff"):
        assert_close(grads["auto"], grads[mode], 1e-10)


def test_where_xla_aborts_fast_and_textbook_compile_and_agree(key):
    """The XLA:CPU abort configuration (window 2, stride 2, no dx padding; test_conv.xla_swap_bug),
    compiled under jit on both paths."""
    layer = Conv2D(3, (2, 3), stride=(2, 3), padding=((1, 2), (1, 1)))
    _, params, _ = layer.init(key, (4, 3, 3))
    x = jax.random.normal(key, (2, 4, 3, 3))
    dy = jnp.ones((2, 3, 1, 3))
    textbook = jax.jit(layer.backward)(params, {}, x, dy)

    def fast_backward(p, x, dy):
        with _fast_cpu.enabled():
            return layer.backward(p, {}, x, dy)

    fast = jax.jit(fast_backward)(params, x, dy)
    assert_close(fast, textbook, FAST_RTOL32)
