"""fnn.layers.tta: Flip, Shift, tta_views, with_tta (test-time augmentation)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from trees import assert_trees_equal

from fnn import losses
from fnn.gradcheck import check_layer
from fnn.layers import BatchNorm, Conv, Dense, Dropout, Flatten, Relu, serial
from fnn.layers.tta import Flip, Shift, tta_views, with_tta
from fnn.train import evaluate


def images(key, shape=(5, 6, 7, 2), dtype=jnp.float64):
    return jax.random.normal(key, shape, dtype)


def np_shift(x, dy, dx, fill):
    """Reference: out[:, i, j] = x[:, i - dy, j - dx] where that is inside the image, else fill."""
    x = np.asarray(x)
    out = np.full_like(x, fill)
    _, h, w, _ = x.shape
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[:, i, j] = x[:, i - dy, j - dx]
    return out


# ----------------------------------------------------------------------------------------
# The views


@pytest.mark.parametrize("dy,dx", [(0, 0), (1, 0), (-1, 0), (0, 2), (0, -3), (2, -1), (-5, 6)])
def test_shift_moves_the_image_and_fills(dy, dx):
    x = images(jax.random.key(0))
    np.testing.assert_array_equal(Shift(dy, dx, fill=-0.75)(x), np_shift(x, dy, dx, -0.75))


def test_flip_mirrors_along_width():
    x = images(jax.random.key(1))
    np.testing.assert_array_equal(Flip()(x), np.asarray(x)[:, :, ::-1, :])


@pytest.mark.parametrize("view", [Flip(), Shift(1, 0, 3.0), Shift(-2, 3, -1.0), Shift(0, 0)])
def test_transpose_is_the_adjoint_of_the_linear_part(view):
    """<A x, g> == <x, Aᵀ g>, with A x = view(x) − view(0) (the fill is the constant part)."""
    kx, kg = jax.random.split(jax.random.key(2))
    x, g = images(kx), images(kg)
    ax = view(x) - view(jnp.zeros_like(x))
    np.testing.assert_allclose(jnp.vdot(ax, g), jnp.vdot(x, view.transpose(g)), rtol=1e-12)


def test_shift_rejects_bad_input():
    with pytest.raises(ValueError, match=r"Shift\(7, 0\).*H x W = 6 x 7"):
        Shift(7, 0)(images(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"Shift\(1, 0\).*\(N, H, W, C\).*\(5, 42\)"):
        Shift(1, 0)(jnp.zeros((5, 42)))


def test_tta_views_parses_the_spec():
    assert tta_views("flip") == (Shift(0, 0), Flip())
    assert tta_views("shift", shift=2, fill=-1.0) == (Shift(0, 0), Shift(2, 0, -1.0), Shift(-2, 0, -1.0),
                                                       Shift(0, 2, -1.0), Shift(0, -2, -1.0))
    assert tta_views(" shift, flip ") == tta_views("flip,shift")
    assert len(tta_views("flip,shift")) == 6
    for bad, match in [("", "comma-separated"), ("flip,rotate", "rotate"), ("flip,flip", "twice")]:
        with pytest.raises(ValueError, match=match):
            tta_views(bad)
    for shift in (0, 1.5):
        with pytest.raises(ValueError, match="shift"):
            tta_views("shift", shift=shift)


# ----------------------------------------------------------------------------------------
# with_tta


def cnn():
    return serial(Conv(3, (3, 3), padding="same"), BatchNorm(), Relu(), Dropout(0.3), Flatten(), Dense(4))


def test_evaluation_averages_the_outputs_over_the_views():
    model, views = cnn(), tta_views("flip,shift", fill=-0.5)
    x = images(jax.random.key(3), dtype=jnp.float32)
    _, params, state = model.init(jax.random.key(0), x.shape[1:])
    tta = with_tta(model, views)
    expected = np.mean([model.apply(params, state, jnp.asarray(np_shift(x, *m, -0.5)))[0]
                        for m in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]]
                       + [model.apply(params, state, x[:, :, ::-1])[0]], axis=0)
    y, new_state = tta.apply(params, state, x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert_trees_equal(new_state, state)
    assert not np.allclose(y, model.apply(params, state, x)[0], atol=1e-3)  # the views do matter


def test_a_linear_model_sees_the_symmetrized_weights():
    """An independent oracle: for y = W·vec(x) + b, the flip-TTA model is y = ½(W + W∘flip)·vec(x) + b."""
    model = serial(Flatten(), Dense(3))
    x = images(jax.random.key(4), (6, 4, 5, 1))
    _, params, state = model.init(jax.random.key(1), x.shape[1:])
    w = params[1]["w"].reshape(4, 5, 1, 3)
    sym = dict(params[1], w=((w + w[:, ::-1]) / 2).reshape(20, 3))
    y, _ = with_tta(model, tta_views("flip")).apply(params, state, x)
    np.testing.assert_allclose(y, model.apply((params[0], sym), state, x)[0], rtol=1e-5)


def test_training_is_the_model_itself_and_params_are_the_models():
    model = cnn()
    tta = with_tta(model, tta_views("flip,shift"))
    x = images(jax.random.key(5), dtype=jnp.float32)
    shape, params, state = model.init(jax.random.key(0), x.shape[1:])
    tshape, tparams, tstate = tta.init(jax.random.key(0), x.shape[1:])
    assert tshape == shape
    assert_trees_equal((tparams, tstate), (params, state))
    assert jax.tree.structure((tparams, tstate)) == jax.tree.structure((params, state))
    assert tta.children == model.children and tta.kind == model.kind
    key = jax.random.key(9)
    a, sa = tta.apply(params, state, x, key=key, train=True)
    b, sb = model.apply(params, state, x, key=key, train=True)
    np.testing.assert_array_equal(a, b)
    assert_trees_equal(sa, sb)


@pytest.mark.parametrize("train", [False, True])
def test_backward_matches_autodiff_and_finite_differences(train):
    model = serial(Conv(2, (3, 3), padding="same"), BatchNorm(), Relu(), Flatten(), Dense(3))
    report = check_layer(with_tta(model, tta_views("flip,shift", fill=0.7)), (5, 4, 2), key=jax.random.key(6),
                         batch_size=3, train=train)
    assert report.output_shape == (3,)


def test_evaluate_with_tta_scores_the_averaged_outputs():
    """`evaluate` on the wrapped model counts an example right when the mean output picks its class."""
    model = cnn()
    x = images(jax.random.key(7), (40, 6, 7, 2), jnp.float32)
    _, params, state = model.init(jax.random.key(2), x.shape[1:])
    tta = with_tta(model, tta_views("flip,shift"))
    y = jnp.argmax(model.apply(params, state, x)[0], -1)  # labels the bare model gets all right
    loss = losses.softmax_cross_entropy
    assert evaluate(model, loss, params, state, x, y, batch_size=16)["accuracy"] == 1.0
    expected = float(np.mean(np.argmax(tta.apply(params, state, x)[0], -1) == np.asarray(y)))
    result = evaluate(tta, loss, params, state, x, y, batch_size=16)
    assert result["accuracy"] == pytest.approx(expected) and expected < 1.0


def test_with_tta_rejects_bad_arguments():
    model = cnn()
    with pytest.raises(ValueError, match="views"):
        with_tta(model, ())
    with pytest.raises(ValueError, match="views"):
        with_tta(model, (lambda x: x,))
    with pytest.raises(ValueError, match="Layer"):
        with_tta("cnn", tta_views("flip"))
    with pytest.raises(ValueError, match=r"with_tta.*\(N, H, W, C\)"):
        with_tta(serial(Dense(3)), tta_views("flip")).init(jax.random.key(0), (12,))
