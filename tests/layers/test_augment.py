"""fnn.layers.augment: RandomCrop, RandomHorizontalFlip, RandomErasing, with_augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import seeds
from trees import assert_trees_equal

from fnn import losses, optim
from fnn.data import Standardizer, load_sample
from fnn.gradcheck import check_layer
from fnn.layers.activation import Relu
from fnn.layers.augment import (
    RandomCrop,
    RandomErasing,
    RandomHorizontalFlip,
    augmentations,
    with_augmentation,
)
from fnn.layers.combinators import serial
from fnn.layers.conv import Conv
from fnn.layers.dense import Dense
from fnn.layers.dropout import Dropout
from fnn.layers.pool import MaxPool
from fnn.layers.reshape import Flatten
from fnn.train import fit

AUGS = {
    "crop": RandomCrop(2),
    "crop_reflect": RandomCrop(2, padding_mode="reflect"),
    "flip": RandomHorizontalFlip(),
    "erase": RandomErasing(prob=0.7),
}


def images(key, shape=(64, 6, 5, 2), dtype=jnp.float32):
    return jax.random.normal(key, shape, dtype)


# ----------------------------------------------------------------------------------------
# The layer contract


@pytest.mark.parametrize("name", sorted(AUGS))
@settings(max_examples=2)  # each example compiles a check for a new shape
@given(h=st.integers(3, 7), w=st.integers(3, 7), c=st.integers(1, 3), n=st.integers(1, 6), seed=seeds)
def test_backward_is_the_transpose(name, h, w, c, n, seed):
    """backward == jax.vjp of apply and finite differences (float64), in training."""
    report = check_layer(AUGS[name], (h, w, c), key=jax.random.key(seed), batch_size=n, train=True)
    assert report.output_shape == (h, w, c)


@pytest.mark.parametrize("name", sorted(AUGS))
def test_backward_on_a_batch_it_changes(name):
    """A fixed batch of 8 where every augmentation moves some examples (a small random batch may
    draw no flip or erasure at all, where any backward that passes dy through would agree)."""
    layer, key = AUGS[name], jax.random.key(11)
    x = images(jax.random.key(0), (8, 5, 4, 2), jnp.float64)
    k_apply = jax.random.split(key, 5)[3]  # the key check_layer gives the layer
    assert not np.array_equal(layer.apply({}, {}, x, key=k_apply, train=True)[0], x)
    check_layer(layer, (5, 4, 2), key=key, x=x, train=True)


@pytest.mark.parametrize("name", sorted(AUGS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
def test_shape_dtype_and_determinism_by_key(name, dtype):
    layer, x = AUGS[name], images(jax.random.key(0), dtype=dtype)
    out_shape, params, state = layer.init(jax.random.key(0), x.shape[1:])
    assert out_shape == x.shape[1:] and params == {} and state == {}
    a, _ = layer.apply({}, {}, x, key=jax.random.key(1), train=True)
    b, _ = layer.apply({}, {}, x, key=jax.random.key(1), train=True)
    c, _ = layer.apply({}, {}, x, key=jax.random.key(2), train=True)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(a, b)  # same key, same bits
    assert not np.array_equal(a, c)      # another key, another draw
    assert not np.array_equal(a, x)      # and it does change the batch


@pytest.mark.parametrize("name", sorted(AUGS))
def test_identity_at_evaluation(name):
    layer, x = AUGS[name], images(jax.random.key(0))
    y, state = layer.apply({}, {}, x, key=jax.random.key(1))
    assert y is x and state == {}
    _, dx = layer.backward({}, {}, x, x + 1, key=jax.random.key(1))
    np.testing.assert_array_equal(dx, x + 1)


# ----------------------------------------------------------------------------------------
# What they draw


def test_flip_probability_and_content():
    x = images(jax.random.key(0), (4000, 3, 4, 1))
    y, _ = RandomHorizontalFlip(0.5).apply({}, {}, x, key=jax.random.key(3), train=True)
    flipped = np.all(np.asarray(y) == np.asarray(x)[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(np.asarray(y) == np.asarray(x), axis=(1, 2, 3))
    assert np.all(flipped ^ kept)                 # each image is either mirrored or untouched
    assert abs(flipped.mean() - 0.5) < 0.03       # 4000 draws: 4 standard deviations ≈ 0.03
    y, _ = RandomHorizontalFlip(1.0).apply({}, {}, x, key=jax.random.key(3), train=True)
    np.testing.assert_array_equal(y, np.asarray(x)[:, :, ::-1])


@pytest.mark.parametrize("mode,np_mode", [("constant", "constant"), ("reflect", "reflect")])
def test_crop_matches_numpy_pad_and_covers_every_offset(mode, np_mode):
    """Each output is np.pad(x)[a:a+H, b:b+W] for exactly one offset; all (2p+1)² offsets occur."""
    p, n, h, w = 2, 600, 6, 5
    x = np.asarray(images(jax.random.key(0), (n, h, w, 1)))
    y, _ = RandomCrop(p, padding_mode=mode, fill=-7.0).apply({}, {}, jnp.asarray(x), key=jax.random.key(4),
                                                             train=True)
    kw = {"constant_values": -7.0} if np_mode == "constant" else {}
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode=np_mode, **kw)
    counts = np.zeros((2 * p + 1, 2 * p + 1), int)
    for i in range(n):
        hits = [(a, b) for a in range(2 * p + 1) for b in range(2 * p + 1)
                if np.array_equal(np.asarray(y[i]), xp[i, a:a + h, b:b + w])]
        assert len(hits) == 1, f"example {i}: matches {hits}"
        counts[hits[0]] += 1
    assert counts.min() >= 8, counts  # 24 expected per offset; a missing offset or edge fails


def test_erasing_draws_rectangles_within_bounds():
    n, h, w = 2000, 28, 28
    x = jnp.ones((n, h, w, 2), jnp.float32)
    scale, ratio = (0.02, 0.33), (0.3, 3.3)
    y, _ = RandomErasing(0.5, scale, ratio, value=-1.0).apply({}, {}, x, key=jax.random.key(5), train=True)
    erased = np.asarray(y) == -1.0
    np.testing.assert_array_equal(erased[..., 0], erased[..., 1])  # all channels alike
    erased = erased[..., 0]
    hit = erased.any(axis=(1, 2))
    assert abs(hit.mean() - 0.5) < 0.04
    areas = []
    for e in erased[hit]:
        rows, cols = np.nonzero(e.any(axis=1))[0], np.nonzero(e.any(axis=0))[0]
        eh, ew = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert e.sum() == eh * ew, "the erased pixels form one rectangle"
        assert eh < h and ew < w
        # h, w are rounded from √(area·r), √(area/r): allow half a pixel each way.
        assert ratio[0] * 0.5 <= eh / ew and (eh - 0.5) / (ew + 0.5) <= ratio[1]
        assert (eh - 0.5) * (ew - 0.5) <= scale[1] * h * w and (eh + 0.5) * (ew + 0.5) >= scale[0] * h * w
        areas.append(e.sum() / (h * w))
    assert abs(np.mean(areas) - np.mean(scale)) < 0.03  # area fraction uniform on scale


# ----------------------------------------------------------------------------------------
# Inside a model and inside fit


@pytest.fixture(scope="module")
def data():
    ds = load_sample()
    x, y = ds.train
    x, y = x[:256], y[:256]
    return np.asarray(Standardizer.fit(x).apply(x)), y


ALL = (RandomCrop(3, padding_mode="reflect"), RandomHorizontalFlip(), RandomErasing())
TINY = serial(Conv(4, (3, 3)), Relu(), MaxPool((2, 2)), Flatten(), Dropout(0.2), Dense(10))
AUGMENTED = with_augmentation(TINY, *ALL)
# Fused and per-step runs of a conv net differ in the last bit on XLA:CPU (with or without
# augmentation: the compiler fuses the conv differently inside the scan), so the bitwise
# comparison uses an MLP behind the augmentations.
MLP = serial(Flatten(), Dense(16), Relu(), Dropout(0.2), Dense(10))
AUGMENTED_MLP = with_augmentation(MLP, *ALL)
# The same key splits with every augmentation drawn but never applied: differs only by the augmentation.
NEVER_AUGMENTED_MLP = with_augmentation(MLP, RandomCrop(0), RandomHorizontalFlip(0.0), RandomErasing(0.0))


ADAM = optim.adam(1e-2)  # one object, so fit's compiled programs are reused across calls


def _fit(model, data, **kw):
    return fit(model, losses.softmax_cross_entropy, ADAM, data, epochs=2, batch_size=64,
               key=jax.random.key(0), **kw)


@pytest.mark.parametrize("grad_mode", ["custom_vjp"])  # "auto" on CPU; manual's backward: check_layer above
def test_fused_epoch_equals_per_step_with_augmentation(data, grad_mode):
    a, ha = _fit(AUGMENTED_MLP, data, grad_mode=grad_mode, fused=True)
    b, hb = _fit(AUGMENTED_MLP, data, grad_mode=grad_mode, fused=False)
    assert_trees_equal(a, b)  # params, optimizer state, key, step: bitwise
    assert ha["train_loss"] == hb["train_loss"]
    plain, _ = _fit(NEVER_AUGMENTED_MLP, data, grad_mode=grad_mode)
    assert not np.array_equal(jax.tree.leaves(a.params)[0], jax.tree.leaves(plain.params)[0])


def test_with_augmentation_keeps_the_models_params_and_eval(data):
    x = jnp.asarray(data[0][:16])
    _, p_aug, s_aug = AUGMENTED.init(jax.random.key(0), x.shape[1:])
    _, p, s = TINY.init(jax.random.key(0), x.shape[1:])
    assert_trees_equal(p_aug, p)  # a checkpoint of the augmented model loads into the bare one
    assert AUGMENTED.children == TINY.children and AUGMENTED.kind == TINY.kind
    y_aug, _ = AUGMENTED.apply(p, s, x, key=jax.random.key(1))
    y, _ = TINY.apply(p, s, x, key=jax.random.key(1))
    np.testing.assert_array_equal(y_aug, y)
    y_train, _ = AUGMENTED.apply(p, s, x, key=jax.random.key(1), train=True)
    assert not np.array_equal(y_train, y)
    np.testing.assert_array_equal(AUGMENTED.apply(p, s, x, key=jax.random.key(1), train=True)[0], y_train)
    assert not np.array_equal(AUGMENTED.apply(p, s, x, key=jax.random.key(2), train=True)[0], y_train)


def test_with_augmentation_backward_matches_vjp():
    model = with_augmentation(serial(Conv(2, (3, 3)), Flatten(), Dense(3)), RandomCrop(1), RandomHorizontalFlip())
    check_layer(model, (5, 4, 1), key=jax.random.key(0), batch_size=3, train=True)


def test_augmentations_from_a_spec():
    assert [a.name for a in augmentations("crop,flip,erase", crop_padding=3)] == [
        "RandomCrop(3, constant)", "RandomHorizontalFlip(0.5)", "RandomErasing(0.5)"]
    assert augmentations("none") == [] and augmentations("") == []
    with pytest.raises(ValueError, match=r"augmentations: each name must be one of \['crop', 'flip', 'erase'\], "
                                         r"got 'rotate'"):
        augmentations("crop,rotate")
    with pytest.raises(ValueError, match="augmentations: a name appears twice"):
        augmentations("flip,flip")


# ----------------------------------------------------------------------------------------
# Bad arguments


def test_crop_padding_larger_than_the_image():
    with pytest.raises(ValueError, match=r"RandomCrop\(4, constant\): padding 4 must be smaller than the image, "
                                         r"got images of H x W = 4 x 9"):
        RandomCrop(4).init(jax.random.key(0), (4, 9, 1))
    with pytest.raises(ValueError, match=r"RandomCrop\(3, reflect\): padding 3 must be smaller .* 8 x 3"):
        RandomCrop(3, padding_mode="reflect").apply({}, {}, jnp.ones((2, 8, 3, 1)), key=jax.random.key(0),
                                                    train=True)


@pytest.mark.parametrize("name", sorted(AUGS))
def test_non_image_input_is_refused(name):
    layer = AUGS[name]
    with pytest.raises(ValueError, match=r"expected x of shape \(N, H, W, C\) \(channels-last images\), "
                                         r"got \(8, 784\)"):
        layer.apply({}, {}, jnp.ones((8, 784)), key=jax.random.key(0), train=True)
    with pytest.raises(ValueError, match=r"expected input_shape \(H, W, C\) of rank 3 \(no batch axis\), "
                                         r"got \(784,\)"):
        layer.init(jax.random.key(0), (784,))
    with pytest.raises(ValueError, match="of a floating dtype"):
        layer.apply({}, {}, jnp.ones((2, 5, 5, 1), jnp.int32), key=jax.random.key(0), train=True)
    with pytest.raises(ValueError, match="a PRNG key is required when train=True"):
        layer.apply({}, {}, jnp.ones((2, 5, 5, 1)), train=True)


@pytest.mark.parametrize("make,match", [
    (lambda: RandomCrop(-1), r"RandomCrop: padding must be in \[0, inf\)"),
    (lambda: RandomCrop(1.5), "RandomCrop: padding must be an int >= 0, got 1.5"),
    (lambda: RandomCrop(2, padding_mode="wrap"), r"RandomCrop: padding_mode must be one of \['constant', 'reflect'\]"),
    (lambda: RandomHorizontalFlip(1.5), r"RandomHorizontalFlip: prob must be in \[0.0, 1.0\]"),
    (lambda: RandomErasing(scale=(0.5, 0.1)), "RandomErasing: scale and ratio must be"),
    (lambda: RandomErasing(ratio=(0.0, 2.0)), r"RandomErasing: ratio must be in \(0.0, inf\)"),
    (lambda: with_augmentation(TINY, Dense(3)), r"with_augmentation: augmentations\[0\] must be an augmentation"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
