"""Mixup and CutMix: each training example mixed with another one of its batch, labels too.

A mixer is a pure function ``mix(key, x, y, mask=None) -> (x, y)``, and a callback: ``fit(...,
callbacks=[mixup(0.2, num_classes=10)])`` (or ``train_step(mix=...)``) applies it to every
training batch inside the compiled step, before the forward pass. Example i is paired with
example ``perm[i]`` of the same batch (one random permutation per batch) and weighted by its own
``λ_i ~ Beta(α, α)``:

- ``mixup(α)`` (Zhang et al. 2018): ``x_i' = λ_i x_i + (1 − λ_i) x_perm[i]``.
- ``cutmix(α)`` (Yun et al. 2019): a rectangle of about (1 − λ_i) of the image, centred
  uniformly and clipped at the border, is pasted from ``x_perm[i]``; λ_i becomes the share of
  pixels that stayed.

The labels become probabilities, ``y_i' = λ_i t_i + (1 − λ_i) t_perm[i]`` with ``t`` one-hot
(from integer labels) or the given probability rows, so the loss must take probability
targets (``losses.softmax_cross_entropy``, with or without ``losses.label_smoothing``). The
training accuracy ``fit`` reports is then measured against the larger share of each mixed
label. Evaluation and prediction never mix.

The key is the step's own (``train_step`` splits it off the model's key), so the same key gives
the same mixing, in the fused epoch and in the per-step loop alike. Where a padded last batch
has a ``mask``, padding is never mixed into real examples (their λ is 1).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from fnn.core import check_positive_int, fmt_shape
from fnn.train.callbacks import Callback

__all__ = ["Mixer", "mixup", "cutmix"]


@dataclasses.dataclass(frozen=True)
class Mixer(Callback):
    """A batch mixer (``mixup`` or ``cutmix``): ``mixer(key, x, y, mask=None) -> (x, y)``.

    A ``fit`` callback with no events of its own: ``fit`` finds it among its callbacks and
    compiles it into the step. Frozen and hashable, so equal mixers reuse ``fit``'s programs.

    Attributes:
      kind: "mixup" or "cutmix".
      alpha: the Beta(α, α) parameter of λ.
      num_classes: M, to one-hot integer labels (N,) into (N, M).
    """

    kind: str
    alpha: float
    num_classes: int

    def __call__(self, key: jax.Array, x: jax.Array, y: jax.Array,
                 mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Mix a batch: x (N, ...) float (cutmix: (N, H, W, C)), y (N,) integer labels or (N, M)
        probabilities, mask (N,) or None. Returns (x', y') with y' (N, M) float."""
        name = self.kind
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name}: x must be floating, got {x.dtype} of shape {fmt_shape(x.shape)}")
        if name == "cutmix" and x.ndim != 4:
            raise ValueError(f"{name}: x must be images (N, H, W, C), got shape {fmt_shape(x.shape)}")
        t = _targets(name, x, y, self.num_classes)
        n = x.shape[0]
        k_perm, k_lam, k_box = jax.random.split(key, 3)
        perm = jax.random.permutation(k_perm, n)
        lam = jax.random.beta(k_lam, self.alpha, self.alpha, (n,), jnp.float32)
        if mask is not None:
            lam = jnp.where(jnp.asarray(mask)[perm] > 0, lam, 1.0)
        if name == "mixup":
            w = lam.reshape((n,) + (1,) * (x.ndim - 1)).astype(x.dtype)
            x_mixed = w * x + (1 - w) * x[perm]
        else:
            inside = _boxes(k_box, lam, x.shape[1], x.shape[2])
            x_mixed = jnp.where(inside[..., None], x[perm], x)
            lam = 1.0 - jnp.mean(inside, axis=(1, 2), dtype=jnp.float32)
        lam_t = lam[:, None].astype(t.dtype)
        return x_mixed, lam_t * t + (1 - lam_t) * t[perm]


def _targets(name: str, x, y, num_classes: int) -> jax.Array:
    """(N, M) float targets: integer labels one-hot encoded, probability rows as given."""
    y = jnp.asarray(y)
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    if y.shape[:1] != x.shape[:1]:
        raise ValueError(f"{name}: x {fmt_shape(x.shape)} and y {fmt_shape(y.shape)} have different batch sizes")
    if jnp.issubdtype(y.dtype, jnp.integer) and y.ndim == 1:
        return jax.nn.one_hot(y, num_classes, dtype=dtype)
    if jnp.issubdtype(y.dtype, jnp.floating) and y.shape == (x.shape[0], num_classes):
        return y.astype(dtype)
    raise ValueError(f"{name}: y must be (N,) integer labels or (N, {num_classes}) probabilities, "
                     f"got {y.dtype} of shape {fmt_shape(y.shape)}")


def _boxes(key: jax.Array, lam: jax.Array, h: int, w: int) -> jax.Array:
    """(N, H, W) bool: per example a rectangle of sides H·sqrt(1 − λ), W·sqrt(1 − λ) (floored)
    centred at a uniform pixel, clipped at the border (the CutMix paper's box)."""
    n = lam.shape[0]
    cut = jnp.sqrt(1.0 - lam)
    ch, cw = jnp.floor(h * cut).astype(jnp.int32), jnp.floor(w * cut).astype(jnp.int32)
    ky, kx = jax.random.split(key)
    cy, cx = (jax.random.randint(k, (n,), 0, size, jnp.int32) for k, size in ((ky, h), (kx, w)))
    y0, y1 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cy + ch - ch // 2, 0, h)
    x0, x1 = jnp.clip(cx - cw // 2, 0, w), jnp.clip(cx + cw - cw // 2, 0, w)
    rows, cols = jnp.arange(h, dtype=jnp.int32), jnp.arange(w, dtype=jnp.int32)
    in_rows = (rows[None, :] >= y0[:, None]) & (rows[None, :] < y1[:, None])
    in_cols = (cols[None, :] >= x0[:, None]) & (cols[None, :] < x1[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :]


def _check(name: str, alpha: float, num_classes: int) -> tuple[float, int]:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: alpha must be a number > 0, got {alpha!r}") from None
    if isinstance(alpha, bool) or not (a > 0 and math.isfinite(a)):
        raise ValueError(f"{name}: alpha must be a finite number > 0, got {alpha!r}")
    m = check_positive_int(name, "num_classes", num_classes)
    if m < 2:
        raise ValueError(f"{name}: num_classes must be >= 2, got {num_classes!r}")
    return a, m


def mixup(alpha: float = 0.2, *, num_classes: int) -> Mixer:
    """Mixup: each example blended with a partner from its batch, labels likewise.

    Args:
      alpha: λ ~ Beta(α, α) per example; small α (0.1-0.4, the paper's range for images) keeps
        most λ near 0 or 1, α = 1 draws λ uniformly.
      num_classes: M (integer labels are one-hot encoded to (N, M)).
    """
    a, m = _check("mixup", alpha, num_classes)
    return Mixer("mixup", a, m)


def cutmix(alpha: float = 1.0, *, num_classes: int) -> Mixer:
    """CutMix: a rectangle pasted from a partner image of the batch, labels mixed by its area.

    Args:
      alpha: λ ~ Beta(α, α) per example (the paper's default 1: uniform); the box covers
        about 1 − λ of the image.
      num_classes: M (integer labels are one-hot encoded to (N, M)).
    """
    a, m = _check("cutmix", alpha, num_classes)
    return Mixer("cutmix", a, m)
