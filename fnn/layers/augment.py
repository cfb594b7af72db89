"""Data augmentation as parameter-free layers: random crop, horizontal flip, random erasing.

Put them in front of a model, ``with_augmentation(model, RandomCrop(2), RandomHorizontalFlip())``
(the model's params exactly) or ``serial(RandomCrop(2), RandomHorizontalFlip(), model)``, and the
result is just a model: augmentation runs inside ``fit``'s compiled epoch, on the device, with
keys from the TrainState (the fused epoch and the per-step loop draw the same bits), and is the
identity at evaluation (``train=False``: ``evaluate``, prediction). Their kind is "augment".

Each layer takes channels-last images x: (N, H, W, C), splits its key into one key per example
(``jax.random.split(key, N)``) and draws that example's transformation under ``jax.vmap``.
Every transformation is linear in x, so ``backward`` is its exact transpose (what ``jax.vjp``
gives): the gradient reaching the images is rarely wanted, but the layer contract holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from fnn.core import (
    Layer,
    check_choice,
    check_input,
    check_key,
    check_range,
    check_shape,
    fmt_shape,
    layer_bwd,
    layer_fwd,
)


def _image_shape(name: str, input_shape) -> tuple[int, ...]:
    """(H, W, C), checked."""
    return check_shape(name, "input_shape (H, W, C)", input_shape, rank=3)


def _check_images(name: str, x) -> None:
    if len(jnp.shape(x)) != 4:
        raise ValueError(f"{name}: expected x of shape (N, H, W, C) (channels-last images), "
                         f"got {fmt_shape(jnp.shape(x))}")
    check_input(name, x, (None, None, None, None))


def _per_example(key, x, draw):
    """`draw(key_i, x_i)` for each example i under vmap, key_i = split(key, N)[i]."""
    return jax.vmap(draw)(jax.random.split(key, x.shape[0]), x)


def _fold_reflect(g, axis: int, pad: int, n: int):
    """Transpose of reflect padding along `axis`: g has n + 2·pad entries there, the result n.

    Padded index j reads source i = j − pad, mirrored without repeating the edge (i < 0 → −i,
    i ≥ n → 2(n−1) − i), so the border gradients add back onto rows 1..pad and n−1−pad..n−2.
    """
    take = lambda a, b: jax.lax.slice_in_dim(g, a, b, axis=axis)
    dx = take(pad, pad + n)
    left, right = jnp.flip(take(0, pad), axis), jnp.flip(take(pad + n, n + 2 * pad), axis)
    idx = [slice(None)] * g.ndim
    idx[axis] = slice(1, pad + 1)
    dx = dx.at[tuple(idx)].add(left)
    idx[axis] = slice(n - 1 - pad, n - 1)
    return dx.at[tuple(idx)].add(right)


def RandomCrop(padding: int, *, padding_mode: str = "constant", fill: float = 0.0) -> Layer:
    """Pad H and W by `padding` pixels on each side, then cut an H x W window at a random offset.

    The offset is uniform in {0, …, 2·padding}² per example (as ``torchvision RandomCrop(size,
    padding)``), so an image moves by up to `padding` pixels. ``padding_mode="constant"`` pads
    with `fill` (on standardized images, pass the standardized value of a black pixel to pad
    with black; 0.0 pads with the mean), ``"reflect"`` mirrors the image without repeating the
    edge (``numpy.pad(mode="reflect")``). padding must be smaller than H and W.

    x: (N, H, W, C) -> y: (N, H, W, C), the dtype kept. Identity when train=False.
    """
    name = f"RandomCrop({padding}, {padding_mode})"
    p = int(check_range("RandomCrop", "padding", padding, 0, math.inf))
    if p != padding:
        raise ValueError(f"RandomCrop: padding must be an int >= 0, got {padding!r}")
    check_choice("RandomCrop", "padding_mode", padding_mode, ("constant", "reflect"))
    fill = check_range("RandomCrop", "fill", fill, -math.inf, math.inf)

    def _check_size(h, w):
        if p >= h or p >= w:
            raise ValueError(f"{name}: padding {p} must be smaller than the image, got images of "
                             f"H x W = {h} x {w}")

    def init(key, input_shape):
        shape = _image_shape(name, input_shape)
        _check_size(*shape[:2])
        return shape, {}, {}

    def _offsets(key, x):
        return _per_example(key, x, lambda k, _: jax.random.randint(k, (2,), 0, 2 * p + 1))

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, H, W, C) -> y: (N, H, W, C)."""
        _check_images(name, x)
        if not train or p == 0:
            return x, state
        check_key(name, key, train)
        _, h, w, c = x.shape
        _check_size(h, w)
        pad = ((0, 0), (p, p), (p, p), (0, 0))
        xp = jnp.pad(x, pad, constant_values=fill) if padding_mode == "constant" else jnp.pad(x, pad, "reflect")
        crop = lambda xi, o: jax.lax.dynamic_slice(xi, (o[0], o[1], 0), (h, w, c))
        return jax.vmap(crop)(xp, _offsets(key, x)), state

    def backward(params, state, x, dy, *, key=None, train=False):
        """dy placed back at each example's offset in a zero padded canvas, then the padding's
        transpose: drop the border (constant) or fold it back onto the image (reflect)."""
        if not train or p == 0:
            return {}, dy
        check_key(name, key, train)
        n, h, w, c = dy.shape
        canvas = jnp.zeros((h + 2 * p, w + 2 * p, c), dy.dtype)
        place = lambda d, o: jax.lax.dynamic_update_slice(canvas, d, (o[0], o[1], 0))
        g = jax.vmap(place)(dy, _offsets(jax.random.clone(key), x))
        if padding_mode == "constant":
            return {}, g[:, p:p + h, p:p + w, :]
        return {}, _fold_reflect(_fold_reflect(g, 1, p, h), 2, p, w)

    return Layer(name, init, apply, backward, kind="augment")


def RandomHorizontalFlip(prob: float = 0.5) -> Layer:
    """Mirror each image left-right (along W) with probability `prob`, independently per example.

    x: (N, H, W, C) -> y: (N, H, W, C), the dtype kept. Identity when train=False.
    """
    prob = check_range("RandomHorizontalFlip", "prob", prob, 0.0, 1.0, high_inclusive=True)
    name = f"RandomHorizontalFlip({prob})"

    def init(key, input_shape):
        return _image_shape(name, input_shape), {}, {}

    def _flip(key, x, v):
        """v with the examples drawn for flipping mirrored along W."""
        flips = _per_example(key, x, lambda k, _: jax.random.bernoulli(k, prob))
        return jnp.where(flips[:, None, None, None], jnp.flip(v, axis=2), v)

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, H, W, C) -> y: (N, H, W, C)."""
        _check_images(name, x)
        if not train or prob == 0.0:
            return x, state
        check_key(name, key, train)
        return _flip(key, x, x), state

    def backward(params, state, x, dy, *, key=None, train=False):
        """A flip is its own transpose: dx = dy mirrored for the same examples."""
        if not train or prob == 0.0:
            return {}, dy
        check_key(name, key, train)
        return {}, _flip(jax.random.clone(key), x, dy)

    return Layer(name, init, apply, backward, kind="augment")


def RandomErasing(prob: float = 0.5, scale: tuple[float, float] = (0.02, 0.33),
                  ratio: tuple[float, float] = (0.3, 3.3), value: float = 0.0) -> Layer:
    """Random erasing (Zhong et al. 2020): with probability `prob`, set a random rectangle to `value`.

    As ``torchvision.transforms.RandomErasing``: the rectangle's area is a fraction of H·W drawn
    uniformly from `scale`, its aspect ratio h/w log-uniformly from `ratio`, h = round(√(area·r)),
    w = round(√(area/r)); of 10 such draws the first with h < H and w < W is placed uniformly
    inside the image (no erasing if none fits). All channels are erased. On standardized
    images the default value 0.0 is the mean pixel.

    x: (N, H, W, C) -> y: (N, H, W, C), the dtype kept. Identity when train=False.
    """
    fname = "RandomErasing"
    prob = check_range(fname, "prob", prob, 0.0, 1.0, high_inclusive=True)
    lo, hi = (check_range(fname, "scale", s, 0.0, 1.0, low_inclusive=False, high_inclusive=True) for s in scale)
    r_lo, r_hi = (check_range(fname, "ratio", r, 0.0, math.inf, low_inclusive=False) for r in ratio)
    if lo > hi or r_lo > r_hi:
        raise ValueError(f"{fname}: scale and ratio must be (low, high) with low <= high, got {scale}, {ratio}")
    value = check_range(fname, "value", value, -math.inf, math.inf)
    name = f"RandomErasing({prob})"
    tries = 10

    def init(key, input_shape):
        return _image_shape(name, input_shape), {}, {}

    def _erased(key, h, w):
        """(h, w) bool: the rectangle one example loses (all False when it keeps everything)."""
        k_apply, k_area, k_ratio, k_top, k_left = jax.random.split(key, 5)
        area = jax.random.uniform(k_area, (tries,), minval=lo, maxval=hi) * (h * w)
        r = jnp.exp(jax.random.uniform(k_ratio, (tries,), minval=math.log(r_lo), maxval=math.log(r_hi)))
        eh, ew = jnp.round(jnp.sqrt(area * r)).astype(jnp.int32), jnp.round(jnp.sqrt(area / r)).astype(jnp.int32)
        fits = (eh < h) & (ew < w)
        first = jnp.argmax(fits)
        eh, ew = eh[first], ew[first]
        top = jax.random.randint(k_top, (), 0, h - eh + 1, jnp.int32)
        left = jax.random.randint(k_left, (), 0, w - ew + 1, jnp.int32)
        rows, cols = jnp.arange(h, dtype=jnp.int32)[:, None], jnp.arange(w, dtype=jnp.int32)[None, :]
        inside = (rows >= top) & (rows < top + eh) & (cols >= left) & (cols < left + ew)
        return inside & fits[first] & jax.random.bernoulli(k_apply, prob)

    def _mask(key, x):
        """(N, H, W, 1) bool, True where a pixel is erased."""
        h, w = x.shape[1:3]
        return _per_example(key, x, lambda k, _: _erased(k, h, w))[..., None]

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, H, W, C) -> y: (N, H, W, C)."""
        _check_images(name, x)
        if not train or prob == 0.0:
            return x, state
        check_key(name, key, train)
        return jnp.where(_mask(key, x), jnp.asarray(value, x.dtype), x), state

    def backward(params, state, x, dy, *, key=None, train=False):
        """Erased pixels are constants: dx = dy where kept, 0 where erased."""
        if not train or prob == 0.0:
            return {}, dy
        check_key(name, key, train)
        return {}, jnp.where(_mask(jax.random.clone(key), x), jnp.zeros((), dy.dtype), dy)

    return Layer(name, init, apply, backward, kind="augment")


def with_augmentation(model: Layer, *augmentations: Layer) -> Layer:
    """`model` with `augmentations` applied to its input first, in training only.

    Unlike ``serial(*augmentations, model)``, which gives the augmentations their own (empty)
    entries in the params tuple, the result has exactly the model's params and state (the
    augmentations have none), so a checkpoint of it loads into the bare model for ``evaluate``
    or ``fnn predict``. ``children`` and ``kind`` are the model's (per-layer diagnostics see
    its layers; their probes run on un-augmented inputs). ``key`` is split into one subkey per
    augmentation and one for the model; with train=False the model runs alone, on x itself.
    """
    if not isinstance(model, Layer):
        raise ValueError(f"with_augmentation: expected a Layer as model, got {type(model).__name__}")
    for i, a in enumerate(augmentations):
        if not isinstance(a, Layer) or a.kind != "augment":
            raise ValueError(f"with_augmentation: augmentations[{i}] must be an augmentation layer "
                             f"(RandomCrop, RandomHorizontalFlip, RandomErasing), got "
                             f"{getattr(a, 'name', type(a).__name__)}")
    m = len(augmentations)

    def _keys(key):
        keys = (None,) * (m + 1) if key is None else tuple(jax.random.split(key, m + 1))
        return keys[:m], keys[m]

    def init(key, input_shape):
        for a in augmentations:
            a.init(key, input_shape)  # shape checks only: no params, no state
        return model.init(key, input_shape)

    def _augment(x, aug_keys, train):
        """The augmented batch, and each augmentation's input (for its backward)."""
        inputs = []
        for a, k in zip(augmentations, aug_keys):
            inputs.append(x)
            x = a.apply({}, {}, x, key=k, train=train)[0]
        return x, tuple(inputs)

    def fwd(params, state, x, *, key=None, train=False):
        aug_keys, k_model = _keys(key)
        x, inputs = _augment(x, aug_keys, train)
        y, new_state, saved = layer_fwd(model, params, state, x, key=k_model, train=train)
        return y, new_state, (inputs, saved)

    def bwd(params, state, saved, dy, *, key=None, train=False):
        """The model's backward, then each augmentation's transpose in reverse order."""
        aug_keys, k_model = _keys(None if key is None else jax.random.clone(key))
        inputs, inner = saved
        dparams, dx = layer_bwd(model, params, state, inner, dy, key=k_model, train=train)
        for a, k, x in reversed(list(zip(augmentations, aug_keys, inputs))):
            dx = a.backward({}, {}, x, dx, key=k, train=train)[1]
        return dparams, dx

    def apply(params, state, x, *, key=None, train=False):
        aug_keys, k_model = _keys(key)
        return model.apply(params, state, _augment(x, aug_keys, train)[0], key=k_model, train=train)

    def backward(params, state, x, dy, *, key=None, train=False):
        return bwd(params, state, fwd(params, state, x, key=key, train=train)[2], dy, key=key, train=train)

    return Layer(model.name, init, apply, backward, fwd, bwd, model.children, model.kind)


AUGMENTATIONS: dict[str, Callable[..., Layer]] = {"crop": RandomCrop, "flip": RandomHorizontalFlip,
                                                  "erase": RandomErasing}


def augmentations(spec: str, *, crop_padding: int = 4, padding_mode: str = "constant",
                  fill: float = 0.0) -> list[Layer]:
    """The layers named in a comma-separated `spec` such as ``"crop,flip,erase"``, in that order.

    crop: ``RandomCrop(crop_padding, padding_mode=..., fill=...)``; flip:
    ``RandomHorizontalFlip()``; erase: ``RandomErasing()``; "" or "none": no layers.
    """
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if names == ["none"]:
        return []
    for s in names:
        check_choice("augmentations", "each name", s, tuple(AUGMENTATIONS))
    if len(set(names)) != len(names):
        raise ValueError(f"augmentations: a name appears twice in {spec!r}")
    return [RandomCrop(crop_padding, padding_mode=padding_mode, fill=fill) if s == "crop" else AUGMENTATIONS[s]()
            for s in names]

