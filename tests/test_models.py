import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import losses, models
from fnn.backprop import value_and_grad
from fnn.gradcheck import check_model, rel_err
from fnn.layers.activation import Tanh


def n_params(tree):
    return sum(math.prod(a.shape) for a in jax.tree.leaves(tree))


def shapes_of(model, input_shape):
    """init's (output_shape, params, state) as shapes only: no RNG is compiled."""
    out = {}

    def run(key):
        out["shape"], params, state = model.init(key, input_shape)
        return params, state

    params, state = jax.eval_shape(run, jax.random.key(0))
    return out["shape"], params, state


@pytest.mark.parametrize("build, input_shape, count, state_count", [
    (lambda: models.simple_cnn(), (28, 28, 1), 421_642, 0),
    (lambda: models.lenet5(), (28, 28, 1), 61_706, 0),
    (lambda: models.lenet5(batch_norm=True, dropout=0.3), (28, 28, 1), 61_706 + 452, 452),
    (lambda: models.alexnet(10), (28, 28, 1), 611_978, 0),
    (lambda: models.vgg(10, (28, 28, 1)), (28, 28, 1), 584_170, 0),
    (lambda: models.vgg(10, (28, 28, 1), batch_norm=True), (28, 28, 1), 584_170 + 448, 896),
    (lambda: models.resnet(10, (28, 28, 1)), (28, 28, 1), 174_970, 1120),
    (lambda: models.bn_cnn(10, (28, 28, 1)), (28, 28, 1), 871_338, 896),
    (lambda: models.bn_vgg(10, (28, 28, 1)), (28, 28, 1), 575_338, 832),
    (lambda: models.bn_vgg_wide(10, (28, 28, 1)), (28, 28, 1), 944_234, 1088),
    (lambda: models.mlp((784, 256, 256, 10)), (784,), 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10, 0),
])
def test_parameter_counts_and_output_shape(build, input_shape, count, state_count):
    out, params, state = shapes_of(build(), input_shape)
    assert out == (10,)
    assert n_params(params) == count
    assert n_params(state) == state_count


def test_simple_cnn_layers_exactly():
    model = models.simple_cnn()
    out, params, state = shapes_of(model, (28, 28, 1))
    assert [p["w"].shape for p in params if p] == [(3, 3, 1, 32), (3, 3, 32, 64), (3136, 128), (128, 10)]
    assert [bool(p) for p in params] == [True, False, False, True, False, False, False, True, False, True]
    x = jax.ShapeDtypeStruct((5, 28, 28, 1), jnp.float32)
    assert jax.eval_shape(lambda p, s, x: model.apply(p, s, x)[0], params, state, x).shape == (5, 10)


def test_bn_vgg_layers_exactly():
    _, params, _ = shapes_of(models.bn_vgg(), (28, 28, 1))
    kernels = [p["w"].shape for p in params if p and "w" in p]
    assert kernels == [(3, 3, 1, 32), (3, 3, 32, 64), (3, 3, 64, 64), (3, 3, 64, 128), (3, 3, 128, 128),
                       (1152, 256), (256, 10)]
    _, params, _ = shapes_of(models.bn_vgg_wide(), (28, 28, 1))
    kernels = [p["w"].shape for p in params if p and "w" in p]
    assert kernels == [(3, 3, 1, 32), (3, 3, 32, 64), (3, 3, 64, 64), (3, 3, 64, 192), (3, 3, 192, 192),
                       (1728, 256), (256, 10)]


def test_lenet5_geometry_and_options():
    model = models.lenet5(num_classes=7, activation=Tanh, pool="max")
    out, params, _ = shapes_of(model, (28, 28, 1))
    assert out == (7,)
    # C1 6@5x5, C3 16@5x5, C5 120@5x5 (a 1x1 map), F6 84, output 7
    assert [p["w"].shape for p in params if p] == [(5, 5, 1, 6), (5, 5, 6, 16), (5, 5, 16, 120), (120, 84),
                                                   (84, 7)]
    with pytest.raises(ValueError, match="lenet5: pool must be 'avg' or 'max'"):
        models.lenet5(pool="sum")


@pytest.mark.parametrize("build, good, bad", [
    (lambda: models.simple_cnn(), (28, 28, 1), (32, 32, 3)),
    (lambda: models.lenet5(), (28, 28, 1), (28, 28, 3)),
    (lambda: models.alexnet(10, (32, 32, 3)), (32, 32, 3), (28, 28, 1)),
    (lambda: models.vgg(10, (28, 28, 1)), (28, 28, 1), (28, 28)),
    (lambda: models.resnet(10, (16, 16, 3)), (16, 16, 3), (16, 16, 1)),
    (lambda: models.bn_cnn(10, (28, 28, 1)), (28, 28, 1), (1, 28, 28)),
    (lambda: models.bn_vgg(10, (28, 28, 1)), (28, 28, 1), (28, 28, 3)),
    (lambda: models.bn_vgg_wide(10, (28, 28, 1)), (28, 28, 1), (28, 28, 3)),
    (lambda: models.mlp((784, 10)), (784,), (28, 28)),
])
def test_init_refuses_other_input_shapes(build, good, bad):
    model = build()
    shapes_of(model, good)
    name = model.name.split("(")[0]
    with pytest.raises(ValueError, match=rf"{name}.*: built for input_shape .*, got {re_shape(bad)}"):
        model.init(jax.random.key(0), bad)


def re_shape(shape):
    return "\\(" + ", ".join(map(str, shape)) + (",\\)" if len(shape) == 1 else "\\)")


def test_apply_checks_x(key):
    model = models.mlp((4, 3, 2))
    _, params, state = model.init(key, (4,))
    with pytest.raises(ValueError, match=r"mlp\(4, 3, 2\): expected x of shape \(N, 4\), got \(2, 5\)"):
        model.apply(params, state, jnp.ones((2, 5)))
    cnn = models.simple_cnn()
    _, p, s = shapes_of(cnn, (28, 28, 1))
    x = jax.ShapeDtypeStruct((8, 28, 28, 3), jnp.float32)
    msg = r"simple_cnn: expected x of shape \(N, 28, 28, 1\), got \(8, 28, 28, 3\)"
    with pytest.raises(ValueError, match=msg):
        jax.eval_shape(lambda p, s, x: cnn.apply(p, s, x), p, s, x)


def test_mlp_structure(key):
    model = models.mlp((5, 4, 3), activation=Tanh, dropout=0.5)
    _, params, state = model.init(key, (5,))
    assert [sorted(p) for p in params] == [["b", "w"], [], [], ["b", "w"]]  # Dense, Tanh, Dropout, Dense
    assert params[0]["w"].shape == (5, 4) and params[3]["w"].shape == (4, 3)
    x = jax.random.normal(key, (2, 5), jnp.float32)
    h = jnp.tanh(x @ params[0]["w"] + params[0]["b"][None])
    np.testing.assert_allclose(model.apply(params, state, x)[0], h @ params[3]["w"] + params[3]["b"][None],
                               rtol=1e-6)
    y_train = model.apply(params, state, x, key=key, train=True)[0]
    assert not np.allclose(y_train, model.apply(params, state, x)[0])
    assert len(models.mlp((5, 3)).init(key, (5,))[1]) == 1
    with pytest.raises(ValueError, match="mlp: sizes needs an input and an output size"):
        models.mlp((5,))


def small_labels(n, k=10):
    return jnp.arange(n) % k


@pytest.mark.parametrize("build", [
    lambda: models.simple_cnn(),
    lambda: models.lenet5(batch_norm=True, dropout=0.3),
], ids=["simple_cnn", "lenet5_bn_dropout"])
def test_whole_net_manual_equals_autodiff_and_custom_vjp(build, key):
    model, loss = build(), losses.softmax_cross_entropy
    report = check_model(model, loss, (28, 28, 1), small_labels(2), key=key, fd=False)
    assert report.vjp_rel_err <= 1e-9

    @jax.jit  # custom_vjp runs the same hand-written backward inside jax.grad: it equals manual
    def both(key):
        _, params, state = model.init(key, (28, 28, 1))
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        x = jax.random.normal(key, (2, 28, 28, 1), jnp.float64)
        return [value_and_grad(model, loss, grad_mode=mode)(params, state, x, small_labels(2), key=key)
                for mode in ("manual", "custom_vjp")]

    (m_val, m_grads), (c_val, c_grads) = both(key)
    assert rel_err(c_grads, m_grads) <= 1e-12
    assert rel_err(c_val, m_val) <= 1e-12


def test_small_resnet_manual_equals_autodiff(key):
    model = models.resnet(3, (6, 6, 2), stages=(2, 4), blocks_per_stage=1)
    loss = losses.softmax_cross_entropy
    report = check_model(model, loss, (6, 6, 2), small_labels(3, 3), key=key, fd=False)
    assert report.vjp_rel_err <= 1e-9
