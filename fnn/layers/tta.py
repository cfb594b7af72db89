"""Test-time augmentation: at evaluation, a model's outputs averaged over fixed views of each image.

``with_tta(model, tta_views("flip,shift", fill=black))`` is a model with exactly `model`'s params
and state that, with ``train=False``, runs `model` on every view of the batch (the image itself,
its mirror image, the image moved one pixel up, down, left and right) and returns the mean of
the outputs; with ``train=True`` it is `model` itself. ``evaluate``, ``fnn evaluate --tta`` and
``fnn predict --tta`` use it unchanged, since it is just a model.

The mean is taken over the model's outputs as they are: logits for a model trained with
softmax cross-entropy (on Fashion-MNIST, the mean of the logits and the mean of the
probabilities scored within 0.02 points of each other: docs/recipe.md).

Views are deterministic and act on channels-last images x: (N, H, W, C). Each is affine in x,
``view(x) = A x + c``, and ``transpose(g) = Aᵀ g`` gives the exact backward.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator

import jax
import jax.numpy as jnp

from fnn.core import Layer, check_choice, check_range, fmt_shape, layer_bwd, layer_fwd
from fnn.layers.augment import _check_images
from fnn.typing import Array


def _total(xs):
    """x0 + x1 + ... in that order."""
    return functools.reduce(operator.add, xs)


@dataclasses.dataclass(frozen=True)
class Flip:
    """The image mirrored left-right (along W): x: (N, H, W, C) -> (N, H, W, C)."""

    def __call__(self, x: Array) -> Array:
        return jnp.flip(x, axis=2)

    def transpose(self, g: Array) -> Array:
        """Aᵀ g: a flip is its own transpose."""
        return jnp.flip(g, axis=2)


@dataclasses.dataclass(frozen=True)
class Shift:
    """The image moved `dy` pixels down and `dx` pixels right (negative: up, left); the pixels
    it uncovers take the value `fill`. ``Shift(0, 0)`` is the identity.

    x: (N, H, W, C) -> (N, H, W, C); |dy| < H and |dx| < W.
    """

    dy: int
    dx: int
    fill: float = 0.0

    def _moved(self, x: Array, dy: int, dx: int, fill: float) -> Array:
        _check_images(f"Shift({dy}, {dx})", x)
        _, h, w, _ = x.shape
        if abs(dy) >= h or abs(dx) >= w:
            raise ValueError(f"Shift({dy}, {dx}): the move must be smaller than the image, got images of "
                             f"H x W = {h} x {w}")
        pad = ((0, 0), (max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)), (0, 0))
        xp = jnp.pad(x, pad, constant_values=jnp.asarray(fill, x.dtype))
        top, left = max(-dy, 0), max(-dx, 0)
        return xp[:, top:top + h, left:left + w, :]

    def __call__(self, x: Array) -> Array:
        return x if self.dy == self.dx == 0 else self._moved(x, self.dy, self.dx, self.fill)

    def transpose(self, g: Array) -> Array:
        """Aᵀ g: g moved back by (−dy, −dx), zeros where it uncovers (the fill is the constant c)."""
        return g if self.dy == self.dx == 0 else self._moved(g, -self.dy, -self.dx, 0.0)


View = Flip | Shift
TTA_NAMES = ("flip", "shift")


def tta_views(spec: str = "flip,shift", *, shift: int = 1, fill: float = 0.0) -> tuple[View, ...]:
    """The views a comma-separated `spec` names, the image itself always first.

    "flip": the mirror image (2 views); "shift": the image moved `shift` pixels up, down, left
    and right, uncovered pixels set to `fill` (5 views); "flip,shift": both (6 views). On
    standardized images pass the standardized value of a black pixel as `fill`, as
    ``fnn train --augment crop`` pads with (0.0 is the mean pixel).
    """
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError(f"tta_views: expected a comma-separated list of {', '.join(TTA_NAMES)}, got {spec!r}")
    for s in names:
        check_choice("tta_views", "each name", s, TTA_NAMES)
    if len(set(names)) != len(names):
        raise ValueError(f"tta_views: a name appears twice in {spec!r}")
    step = int(check_range("tta_views", "shift", shift, 1, math.inf))
    if step != shift:
        raise ValueError(f"tta_views: shift must be an int >= 1, got {shift!r}")
    fill = check_range("tta_views", "fill", fill, -math.inf, math.inf)
    views: list[View] = [Shift(0, 0)]
    if "flip" in names:
        views.append(Flip())
    if "shift" in names:
        views += [Shift(step, 0, fill), Shift(-step, 0, fill), Shift(0, step, fill), Shift(0, -step, fill)]
    return tuple(views)


def with_tta(model: Layer, views: tuple[View, ...]) -> Layer:
    """`model` whose evaluation (``train=False``) output is the mean over `views` of its outputs.

    The result has exactly the model's params, state, ``children`` and ``kind`` (checkpoints
    load into either); with ``train=True`` it is the model itself, key and all. Its backward at
    evaluation is the mean over views of each view's transpose applied to the model's backward.

    x: (N, H, W, C) -> the model's output shape.
    """
    if not isinstance(model, Layer):
        raise ValueError(f"with_tta: expected a Layer as model, got {type(model).__name__}")
    views = tuple(views)
    if not views or not all(isinstance(v, (Flip, Shift)) for v in views):
        raise ValueError(f"with_tta: views must be a non-empty tuple of Flip and Shift (see tta_views), got {views!r}")
    name, n = f"with_tta({model.name}, {len(views)} views)", len(views)

    def init(key, input_shape):
        if len(tuple(input_shape)) != 3:
            raise ValueError(f"{name}: expected x of shape (N, H, W, C) (channels-last images), got "
                             f"{fmt_shape((None, *input_shape))}")
        return model.init(key, input_shape)

    def fwd(params, state, x, *, key=None, train=False):
        if train:
            return layer_fwd(model, params, state, x, key=key, train=True)
        _check_images(name, x)
        outs = [layer_fwd(model, params, state, v(x), key=key, train=False) for v in views]
        return _total(o[0] for o in outs) / n, outs[0][1], tuple(o[2] for o in outs)

    def bwd(params, state, saved, dy, *, key=None, train=False):
        if train:
            return layer_bwd(model, params, state, saved, dy, key=key, train=True)
        grads = [layer_bwd(model, params, state, s, dy / n, key=key, train=False) for s in saved]
        dparams = jax.tree_util.tree_map(lambda *g: _total(g), *(g[0] for g in grads))
        return dparams, _total(v.transpose(g[1]) for v, g in zip(views, grads))

    def apply(params, state, x, *, key=None, train=False):
        if train:
            return model.apply(params, state, x, key=key, train=True)
        _check_images(name, x)
        outs = [model.apply(params, state, v(x), key=key, train=False) for v in views]
        return _total(o[0] for o in outs) / n, outs[0][1]

    def backward(params, state, x, dy, *, key=None, train=False):
        return bwd(params, state, fwd(params, state, x, key=key, train=train)[2], dy, key=key, train=train)

    return Layer(model.name, init, apply, backward, fwd, bwd, model.children, model.kind)
