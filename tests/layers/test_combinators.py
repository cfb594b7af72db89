import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import dims, seeds

from fnn import losses
from fnn.core import Layer
from fnn.gradcheck import check_layer, check_model
from fnn.layers.activation import Relu, Tanh
from fnn.layers.combinators import Residual, Shared, serial
from fnn.layers.dense import Dense
from fnn.layers.dropout import Dropout


def test_serial_init_threads_shapes_and_splits_keys(key):
    model = serial(Dense(5), Relu(), Dense(2))
    out_shape, params, state = model.init(key, (3,))
    assert out_shape == (2,)
    assert [p["w"].shape for p in params if p] == [(3, 5), (5, 2)]
    assert state == ({}, {}, {})
    _, params2, _ = serial(Dense(5), Dense(5)).init(key, (5,))
    assert not np.allclose(params2[0]["w"], params2[1]["w"])  # one subkey per layer


def test_serial_backward_reuses_dropout_masks(key):
    check_layer(serial(Dense(6), Dropout(0.5), Tanh(), Dense(3)), (4,), key=key, train=True)


def test_serial_error_names_position_and_shapes(key):
    model = serial(Dense(4), Relu(), Dense(2))
    _, params, state = model.init(key, (3,))
    with pytest.raises(ValueError, match=r"serial\[0\] Dense\(4\): expected x of shape \(N, 3\), got \(2, 5\)"):
        model.apply(params, state, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match=r"serial\[0\] Dense\(4\): expected input_shape of rank 1"):
        model.init(key, (3, 3))


def test_serial_refuses_non_layers_and_foreign_params(key):
    with pytest.raises(ValueError, match=r"serial\[1\]: expected a Layer, got function"):
        serial(Dense(2), Relu)
    model = serial(Dense(2), Relu())
    with pytest.raises(ValueError, match="serial: expected params as a tuple of 2 entries"):
        model.apply(({},), ({}, {}), jnp.ones((1, 3)))


@settings(max_examples=4)  # each example compiles a new Residual (~5 s); the generated networks cover more
@given(d=dims, hidden=dims, seed=seeds, project=st.booleans())
def test_residual_dense_backward(d, hidden, seed, project):
    out = d + 1 if project else d
    block = serial(Dense(hidden), Tanh(), Dense(out))
    report = check_layer(Residual(block), (d,), key=jax.random.key(seed))
    assert report.output_shape == (out,)


def test_residual_identity_adds_input(key):
    layer = Residual(serial(Dense(3, w_init=lambda k, s, dtype=jnp.float32: jnp.zeros(s, dtype))))
    _, params, state = layer.init(key, (3,))
    x = jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)
    np.testing.assert_array_equal(layer.apply(params, state, x)[0], x)
    assert params["shortcut"] == {}


def test_shared_sums_parameter_gradients(key):
    model = serial(Dense(4), Tanh(), Dense(2))
    shared = Shared(model)
    _, params, state = shared.init(key, (3,))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    xs = tuple(jax.random.normal(k, (2, 3), jnp.float64) for k in jax.random.split(key, 3))
    ys, _ = shared.apply(params, state, xs)
    assert len(ys) == 3 and all(y.shape == (2, 2) for y in ys)
    dys = tuple(jnp.ones_like(y) for y in ys)
    dparams, dxs = shared.backward(params, state, xs, dys)
    _, vjp = jax.vjp(lambda p, xs: shared.apply(p, state, xs)[0], params, xs)
    ref_p, ref_x = vjp(dys)
    for a, b in zip(jax.tree.leaves((dparams, dxs)), jax.tree.leaves((ref_p, ref_x))):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    # The sum over branches: each branch alone gives a part.
    parts = [model.backward(params, state, x, dy)[0] for x, dy in zip(xs, dys)]
    total = jax.tree.map(lambda *a: sum(a), *parts)
    for a, b in zip(jax.tree.leaves(dparams), jax.tree.leaves(total)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_user_defined_layer_from_namedtuple_composes(key):
    """A layer built by hand from the public NamedTuple works inside serial and gradcheck."""
    def init(key, input_shape):
        return input_shape, {"a": jnp.ones(input_shape[-1:], jnp.float32)}, {}

    def apply(params, state, x, *, key=None, train=False):
        return x * params["a"][None], state

    def backward(params, state, x, dy, *, key=None, train=False):
        return {"a": (dy * x).sum(0)}, dy * params["a"][None]

    scale = Layer("Scale", init, apply, backward)
    check_layer(serial(Dense(3), scale, Tanh()), (2,), key=key)
    report = check_model(serial(Dense(3), scale, Tanh(), Dense(2)), losses.softmax_cross_entropy, (2,),
                         jnp.array([0, 1, 1]), key=key)
    assert report.vjp_rel_err < 1e-10


def test_structure_is_data_children_and_kind(key):
    """Composites expose their parts as children; every constructor names its kind."""
    from fnn.backprop import with_own_vjp
    from fnn.layers import Conv2D, MaxPool2D
    from fnn.models import mlp
    from fnn.precision import Policy, apply_policy

    dense, act = Dense(3), Tanh()
    model = serial(dense, act)
    assert model.children == (dense, act) and model.kind == "serial"
    assert (dense.kind, act.kind, Relu().kind, Conv2D(2, 3).kind, MaxPool2D(2).kind) == (
        "dense", "tanh", "relu", "conv", "max_pool")
    block, proj = serial(Dense(3)), Dense(3)
    assert Residual(block).children == (block,) and Residual(block, proj).children == (block, proj)
    assert Residual(block).kind == "residual"
    assert Shared(model).children == (model,) and Shared(model).kind == "shared"
    for wrapped in (with_own_vjp(model), apply_policy(model, Policy()), mlp((4, 8, 2))):
        assert wrapped.kind == "serial" and len(wrapped.children) == len(wrapped.init(key, (4,))[1])
    assert Layer("Mine", dense.init, dense.apply, dense.backward).children == ()
    assert Layer("Mine", dense.init, dense.apply, dense.backward).kind is None


def test_run_serial_is_serial_apply_layer_by_layer(key):
    from fnn.layers.combinators import run_serial

    model = serial(Dense(6), Dropout(0.5), Tanh(), Dense(3))
    _, params, state = model.init(key, (4,))
    x = jax.random.normal(key, (5, 4))
    y, _ = model.apply(params, state, x, key=jax.random.key(3), train=True)
    steps = list(run_serial(model.children, params, state, x, key=jax.random.key(3), train=True))
    assert len(steps) == 4 and all(saved is None for _, _, saved in steps)
    np.testing.assert_array_equal(steps[-1][0], y)  # the same per-layer keys as serial's apply
    taped = list(run_serial(model.children, params, state, x, key=jax.random.key(3), train=True, tape=True))
    np.testing.assert_array_equal(taped[-1][0], y)
    np.testing.assert_array_equal(taped[0][2], x)  # a leaf layer's tape is its input
