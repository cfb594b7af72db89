"""Losses with hand-derived backward passes, and L1/L2 regularizers.

Elementwise losses (mse, mae, the binary cross-entropies) average over all elements, as
PyTorch's ``reduction="mean"``; cross-entropy and triplet losses average over examples.
Shapes must match exactly: a (4, 1) prediction against a (4,) target is an error, never a
silent broadcast. Label values (in range, non-negative) are checked where they are concrete;
under ``jit`` only shapes are checked, and an out-of-range integer label contributes a zero
one-hot row (so its example adds nothing to the loss): validate labels when loading data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn.core import (
    Loss,
    check_float,
    check_nonempty,
    check_range,
    check_same_shape,
    fmt_shape,
    is_concrete,
    promote,
)
from fnn.typing import Array, ArrayLike

# PyTorch's BCELoss clamps log terms at -100 so that p = 0 or 1 gives a finite loss; so do we.
_LOG_FLOOR = -100.0


def _size(x):
    return np.size(x) if np.size(x) else 1


# ----------------------------------------------------------------------------------------
# Elementwise regression losses


def _check_regression(name, pred, target):
    """Same shapes, a floating pred (uint8 differences wrap around) and at least one element."""
    check_same_shape(name, pred, target)
    check_float(name, "pred", pred)
    check_nonempty(name, "pred", pred)


def _mse_value(pred: Array, target: ArrayLike) -> Array:
    """mean((pred − target)²) over all elements. pred, target: same shape."""
    _check_regression("mse", pred, target)
    pred, target = promote(pred, target)
    return jnp.mean((pred - target) ** 2)


def _mse_backward(pred: Array, target: ArrayLike) -> Array:
    """d/dpred = 2(pred − target)/size."""
    _check_regression("mse", pred, target)
    p, t = promote(pred, target)
    return (2 * (p - t) / _size(p)).astype(pred.dtype)


mse = Loss("mse", _mse_value, _mse_backward)


def _mae_value(pred: Array, target: ArrayLike) -> Array:
    """mean|pred − target| over all elements."""
    _check_regression("mae", pred, target)
    pred, target = promote(pred, target)
    return jnp.mean(jnp.abs(pred - target))


def _mae_backward(pred: Array, target: ArrayLike) -> Array:
    """d/dpred = sign(pred − target)/size (0 where they are equal, as autodiff of |·|)."""
    _check_regression("mae", pred, target)
    p, t = promote(pred, target)
    return (jnp.sign(p - t) / _size(p)).astype(pred.dtype)


mae = Loss("mae", _mae_value, _mae_backward)


# ----------------------------------------------------------------------------------------
# Binary cross-entropies


def _check_binary(name, pred, target):
    check_same_shape(name, pred, target)
    check_float(name, "pred", pred)
    check_nonempty(name, "pred", pred)
    if is_concrete(target):
        t = np.asarray(target)
        if t.size and (np.min(t) < 0 or np.max(t) > 1):
            raise ValueError(f"{name}: target must be in [0, 1], got values in [{np.min(t)}, {np.max(t)}]")


def _bce_value(pred: Array, target: ArrayLike) -> Array:
    """−mean(t·log p + (1−t)·log(1−p)); pred: probabilities, log terms floored at −100 as PyTorch."""
    _check_binary("binary_cross_entropy", pred, target)
    p, t = promote(pred, target)
    log_p = jnp.maximum(jnp.log(p), _LOG_FLOOR)
    log_1mp = jnp.maximum(jnp.log1p(-p), _LOG_FLOOR)
    return -jnp.mean(t * log_p + (1 - t) * log_1mp)


def _bce_backward(pred: Array, target: ArrayLike) -> Array:
    """d/dp = (−t/p + (1−t)/(1−p))/size, each term 0 where its log is floored."""
    _check_binary("binary_cross_entropy", pred, target)
    p, t = promote(pred, target)
    d_log_p = jnp.where(jnp.log(p) > _LOG_FLOOR, t / p, 0.0)
    d_log_1mp = jnp.where(jnp.log1p(-p) > _LOG_FLOOR, (1 - t) / (1 - p), 0.0)
    return ((d_log_1mp - d_log_p) / _size(p)).astype(pred.dtype)


binary_cross_entropy = Loss("binary_cross_entropy", _bce_value, _bce_backward)


def _sbce_value(logits: Array, target: ArrayLike) -> Array:
    """mean(max(z, 0) − z·t + log(1 + e^−|z|)): binary cross-entropy of σ(z), stable for any z."""
    _check_binary("sigmoid_binary_cross_entropy", logits, target)
    z, t = promote(logits, target)
    return jnp.mean(jnp.maximum(z, 0) - z * t + jnp.log1p(jnp.exp(-jnp.abs(z))))


def _sbce_backward(logits: Array, target: ArrayLike) -> Array:
    """d/dz = (σ(z) − t)/size."""
    _check_binary("sigmoid_binary_cross_entropy", logits, target)
    z, t = promote(logits, target)
    return ((jax.nn.sigmoid(z) - t) / _size(z)).astype(logits.dtype)


sigmoid_binary_cross_entropy = Loss("sigmoid_binary_cross_entropy", _sbce_value, _sbce_backward)


# ----------------------------------------------------------------------------------------
# Categorical cross-entropies


def _targets(name, scores, labels):
    """Labels as (N, M) probabilities: integer classes (N,) are one-hot encoded."""
    s_shape, l_shape = tuple(np.shape(scores)), tuple(np.shape(labels))
    check_float(name, "pred", scores)
    if len(s_shape) != 2:
        raise ValueError(f"{name}: expected pred of shape (N, M), got {fmt_shape(s_shape)}")
    n, m = s_shape
    check_nonempty(name, "pred", scores)
    labels_dtype = labels.dtype if hasattr(labels, "dtype") else np.asarray(labels).dtype
    if jnp.issubdtype(labels_dtype, jnp.integer):
        if l_shape != (n,):
            raise ValueError(f"{name}: integer labels must have shape (N,) = ({n},) for pred {fmt_shape(s_shape)}, "
                             f"got {fmt_shape(l_shape)}")
        if is_concrete(labels) and n:
            lab = np.asarray(labels)
            if lab.min() < 0 or lab.max() >= m:
                raise ValueError(f"{name}: labels must be in [0, {m}) for pred {fmt_shape(s_shape)}, "
                                 f"got values in [{lab.min()}, {lab.max()}]")
        return jax.nn.one_hot(labels, m, dtype=scores.dtype)
    if l_shape != s_shape:
        raise ValueError(f"{name}: one-hot/probability labels must have the shape of pred {fmt_shape(s_shape)}, "
                         f"got {fmt_shape(l_shape)}")
    return promote(labels, scores)[0].astype(scores.dtype)


def _softmax_cross_entropy_value(logits: Array, labels: ArrayLike) -> Array:
    """Mean over examples of −Σ_m t_m · log softmax(logits)_m.

    Args:
      logits: (N, M) unnormalized scores.
      labels: (N,) integer classes in [0, M), or (N, M) one-hot / probabilities.
    """
    t = _targets("softmax_cross_entropy", logits, labels)
    return -jnp.sum(t * jax.nn.log_softmax(logits, axis=-1)) / max(np.shape(logits)[0], 1)


def _softmax_cross_entropy_backward(logits: Array, labels: ArrayLike) -> Array:
    """d/dz = (softmax(z)·Σt − t)/N, which is (softmax(z) − t)/N for one-hot labels."""
    t = _targets("softmax_cross_entropy", logits, labels)
    sm = jax.nn.softmax(logits, axis=-1)
    return (sm * t.sum(-1, keepdims=True) - t) / max(np.shape(logits)[0], 1)


softmax_cross_entropy = Loss("softmax_cross_entropy", _softmax_cross_entropy_value,
                             _softmax_cross_entropy_backward)


def _cross_entropy_value(probs: Array, labels: ArrayLike) -> Array:
    """Mean over examples of −Σ_m t_m · log p_m, with p probabilities (N, M) (e.g. after Softmax).

    log p is floored at −100 as PyTorch's NLL of clamped logs, so p = 0 stays finite.
    """
    t = _targets("cross_entropy", probs, labels)
    return -jnp.sum(t * jnp.maximum(jnp.log(probs), _LOG_FLOOR)) / max(np.shape(probs)[0], 1)


def _cross_entropy_backward(probs: Array, labels: ArrayLike) -> Array:
    """d/dp = −t/(p·N), 0 where the log is floored."""
    t = _targets("cross_entropy", probs, labels)
    return jnp.where(jnp.log(probs) > _LOG_FLOOR, -t / probs, 0.0) / max(np.shape(probs)[0], 1)


cross_entropy = Loss("cross_entropy", _cross_entropy_value, _cross_entropy_backward)


def label_smoothing(loss: Loss, smoothing: float) -> Loss:
    """`loss` (``softmax_cross_entropy`` or ``cross_entropy``) against smoothed targets.

    Each target row t (one-hot from an integer label, or given as probabilities) becomes
    ``(1 − ε)·t + ε·Σt/M`` for M classes: ε of its mass spread evenly over all classes, as
    ``torch.nn.functional.cross_entropy(label_smoothing=ε)`` and Keras's ``label_smoothing`` do
    for one-hot rows. (A zero row, an out-of-range label under ``jit``, stays zero.) The backward
    is the wrapped loss's, evaluated at the smoothed targets.

    Args:
      loss: ``losses.softmax_cross_entropy`` (pred: (N, M) logits) or ``losses.cross_entropy``
        (pred: (N, M) probabilities).
      smoothing: ε in [0, 1); 0 is `loss` itself. 0.1 is the usual choice.

    Returns: a ``Loss`` taking (pred (N, M), labels (N,) or targets (N, M)), named e.g.
    ``softmax_cross_entropy(label_smoothing=0.1)``.
    """
    if loss not in (softmax_cross_entropy, cross_entropy):
        name = getattr(loss, "name", type(loss).__name__)
        raise ValueError(f"label_smoothing: loss must be losses.softmax_cross_entropy or losses.cross_entropy, "
                         f"got {name}")
    eps = check_range("label_smoothing", "smoothing", smoothing, 0.0, 1.0)

    def smoothed(pred, labels):
        t = _targets(loss.name, pred, labels)
        return (1.0 - eps) * t + (eps / np.shape(pred)[-1]) * t.sum(-1, keepdims=True)

    def value(pred, labels):
        return loss.value(pred, smoothed(pred, labels))

    def backward(pred, labels):
        return loss.backward(pred, smoothed(pred, labels))

    return Loss(f"{loss.name}(label_smoothing={eps:g})", value, backward)


# ----------------------------------------------------------------------------------------
# Metric learning


def triplet_margin(margin: float = 1.0, p: float = 2.0, eps: float = 1e-6) -> Loss:
    """Triplet margin loss (Schroff et al. 2015): mean_N max(d(a, pos) − d(a, neg) + margin, 0).

    ``pred`` is the tuple ``(anchor, positive, negative)`` of (N, D) embeddings; ``target`` is
    unused (pass None). d(x, y) = ‖x − y + eps‖_p = (Σ|x − y + eps|ᵖ)^(1/p) as PyTorch's
    ``TripletMarginLoss`` (the absolute value makes it right for any p ≥ 1).
    ``backward`` returns the three gradients as a tuple.
    """
    margin = check_range("triplet_margin", "margin", margin, 0.0, np.inf)
    p = check_range("triplet_margin", "p", p, 1.0, np.inf)
    name = f"triplet_margin(margin={margin}, p={p})"

    def _unpack(pred):
        if not isinstance(pred, (tuple, list)) or len(pred) != 3:
            raise ValueError(f"{name}: pred must be the tuple (anchor, positive, negative), got {type(pred).__name__}"
                             + (f" of length {len(pred)}" if isinstance(pred, (tuple, list)) else ""))
        a, pos, neg = pred
        for what, arr in (("positive", pos), ("negative", neg)):
            check_same_shape(name, a, arr, ("anchor", what))
        if len(np.shape(a)) != 2:
            raise ValueError(f"{name}: expected embeddings of shape (N, D), got {fmt_shape(np.shape(a))}")
        check_nonempty(name, "anchor", a)
        return a, pos, neg

    def _dist(diff):
        return jnp.sum(jnp.abs(diff) ** p, axis=-1) ** (1.0 / p)

    def _ddist(diff, d):
        """∂‖v‖_p/∂v = sign(v)·|v|^(p−1) / ‖v‖_p^(p−1)."""
        return jnp.sign(diff) * jnp.abs(diff) ** (p - 1) / d[:, None] ** (p - 1)

    def value(pred, target=None):
        a, pos, neg = _unpack(pred)
        hinge = _dist(a - pos + eps) - _dist(a - neg + eps) + margin
        return jnp.mean(jnp.where(hinge > 0, hinge, 0.0))

    def backward(pred, target=None):
        """Active triplets (hinge > 0) push a toward pos and away from neg, each scaled by 1/N."""
        a, pos, neg = _unpack(pred)
        d_ap, d_an = a - pos + eps, a - neg + eps
        dist_ap, dist_an = _dist(d_ap), _dist(d_an)
        active = ((dist_ap - dist_an + margin) > 0).astype(a.dtype)[:, None] / a.shape[0]
        g_ap, g_an = active * _ddist(d_ap, dist_ap), active * _ddist(d_an, dist_an)
        return (g_ap - g_an, -g_ap, g_an)

    return Loss(name, value, backward)


# ----------------------------------------------------------------------------------------
# Regularizers: Loss(value(params, None), backward(params, None)) over a params pytree


def _penalized(params, weights_only):
    def take(leaf):
        return jnp.issubdtype(leaf.dtype, jnp.floating) and (not weights_only or leaf.ndim >= 2)
    return take


def l1(weight: float, *, weights_only: bool = False) -> Loss:
    """L1 penalty weight·Σ|θ| over the params pytree; gradient weight·sign(θ).

    weights_only=True skips leaves of rank < 2 (biases, BatchNorm scale/shift).
    """
    weight = check_range("l1", "weight", weight, 0.0, np.inf)

    def value(params, target=None):
        take = _penalized(params, weights_only)
        return weight * sum((jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(params) if take(x)), jnp.asarray(0.0))

    def backward(params, target=None):
        take = _penalized(params, weights_only)
        return jax.tree.map(lambda x: weight * jnp.sign(x) if take(x) else jnp.zeros_like(x), params)

    return Loss(f"l1({weight})", value, backward)


def l2(weight: float, *, weights_only: bool = False) -> Loss:
    """L2 penalty (weight/2)·Σθ² over the params pytree; gradient weight·θ.

    The ½ makes the gradient weight·θ, the same as coupled weight decay with the same number
    (``optim.add_weight_decay(weight)``, PyTorch's ``weight_decay=``).
    weights_only=True skips leaves of rank < 2 (biases, BatchNorm scale/shift).
    """
    weight = check_range("l2", "weight", weight, 0.0, np.inf)

    def value(params, target=None):
        take = _penalized(params, weights_only)
        return 0.5 * weight * sum((jnp.sum(x * x) for x in jax.tree.leaves(params) if take(x)), jnp.asarray(0.0))

    def backward(params, target=None):
        take = _penalized(params, weights_only)
        return jax.tree.map(lambda x: weight * x if take(x) else jnp.zeros_like(x), params)

    return Loss(f"l2({weight})", value, backward)


class Penalized(NamedTuple):
    """The objective L(pred, y) + R(θ): a data loss and a penalty on the parameters, trained as one.

    Pass it as ``fit``'s or ``train_step``'s loss. It reads like its data loss (``name``,
    ``value``, ``backward`` are ``loss``'s, with the penalty in the name): the training loss
    that ``History`` records and what ``evaluate`` reports are the data loss, while the
    gradient (and ``History.grad_norm``) include the penalty.
    """

    loss: Loss
    penalty: Loss

    @property
    def name(self) -> str:
        return f"{self.loss.name} + {self.penalty.name}"

    @property
    def value(self) -> Callable[..., Any]:
        return self.loss.value

    @property
    def backward(self) -> Callable[..., Any]:
        return self.loss.backward


def penalized(loss: Loss, penalty: Loss) -> Penalized:
    """``loss`` plus ``penalty`` (``l1``/``l2``) as one training objective, e.g.
    ``fit(model, losses.penalized(losses.softmax_cross_entropy, losses.l2(5e-4)), ...)``."""
    for what, v in (("loss", loss), ("penalty", penalty)):
        if not isinstance(v, Loss):
            raise ValueError(f"penalized: {what} must be a Loss, got {type(v).__name__}")
    return Penalized(loss, penalty)
