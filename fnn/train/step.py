"""One training step: ``train_step(model, loss, optimizer) -> step(ts, x, y, mask, lr_scale)``.

Also what the step measures (loss, accuracy, gradient norms, per-layer statistics) and the
masked loss that lets a padded last batch count only its real examples.

Gradients: ``grad_mode="auto"`` is "custom_vjp" on CPU and GPU (the layers' hand-derived
backward serves as the VJP rule) and "autodiff" elsewhere (``fnn.backprop.resolve_grad_mode``).
Inside ``lax.scan`` on XLA:CPU, autodiff's convolution weight gradient falls on a slow path
(simple_cnn: about 18x slower per epoch measured, 80x for one conv), while the hand-written
backward does not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fnn import precision
from fnn.backprop import GRAD_MODES, resolve_grad_mode, value_and_grad
from fnn.core import Layer, Loss, Optimizer, layer_bwd, layer_fwd
from fnn.losses import Penalized
from fnn.optim import apply_updates, global_norm
from fnn.train.state import TrainState
from fnn.typing import PyTree

__all__ = ["GRAD_MODES", "resolve_grad_mode", "train_step", "masked", "with_predictions", "layer_groups"]


def with_predictions(model: Layer) -> Layer:
    """The same layer whose new state also carries the predictions: (y, (new_state, y)).

    value_and_grad returns the new state as its auxiliary output, so the step gets the
    predictions (for accuracy) from the forward pass it already runs.
    """
    def apply(params, state, x, *, key=None, train=False):
        y, new_state = model.apply(params, state, x, key=key, train=train)
        return y, (new_state, y)

    def fwd(params, state, x, *, key=None, train=False):
        y, new_state, saved = layer_fwd(model, params, state, x, key=key, train=train)
        return y, (new_state, y), saved

    def bwd(params, state, saved, dy, *, key=None, train=False):
        return layer_bwd(model, params, state, saved, dy, key=key, train=train)

    return model._replace(apply=apply, fwd=fwd, bwd=bwd)


def _one(tree):
    """An example of a vmapped batch as a batch of one (pred may be a tuple: a triplet net's)."""
    return jax.tree.map(lambda a: a[None], tree)


def per_example(loss: Loss, pred, target) -> jax.Array:
    """(N,) per-example losses: the loss of each example as a batch of one."""
    return jax.vmap(lambda p, t: loss.value(_one(p), _one(t)))(pred, target)


def masked(loss: Loss) -> Loss:
    """The loss averaged over the examples where mask is 1; target is (y, mask).

    Exact for losses that average over examples (all of fnn's but the triplet loss).
    """
    def value(pred, target):
        y, mask = target
        per = per_example(loss, pred, y)
        w = mask.astype(per.dtype)
        return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)

    def backward(pred, target):
        """d(Σ wᵢ Lᵢ / Σ w)/dpredᵢ = wᵢ·L'ᵢ / Σ w, L'ᵢ the gradient of example i as a batch of one."""
        y, mask = target
        d = jax.vmap(lambda p, t: jax.tree.map(lambda g: g[0], loss.backward(_one(p), _one(t))))(pred, y)

        def weigh(g):
            w = mask.astype(g.dtype) / jnp.maximum(jnp.sum(mask.astype(g.dtype)), 1.0)
            return g * w.reshape((-1,) + (1,) * (g.ndim - 1))

        return jax.tree.map(weigh, d)

    return Loss(f"masked({loss.name})", value, backward)


def is_classification(pred, y) -> bool:
    """Whether accuracy means something for predictions `pred` and targets `y`.

    Only shapes and dtypes are read (arrays, tracers or ``jax.ShapeDtypeStruct``), so the
    answer is static under ``jit``. True for (N, M) predictions with (N,) integer labels, or
    with (N, M) float one-hot/probability targets when M > 1 (argmax over one column is always
    0: regression, not classification). False for anything else, e.g. (N, 1) regression
    targets, images, or a tuple of outputs (a triplet net's embeddings).
    """
    shape, y_shape = tuple(getattr(pred, "shape", ())), tuple(getattr(y, "shape", ()))
    if len(shape) != 2 or not hasattr(y, "dtype"):
        return False
    if jnp.issubdtype(y.dtype, jnp.integer):
        return y_shape == shape[:1]
    return y_shape == shape and shape[1] > 1


def class_labels(pred, y):
    """Integer true classes (N,) for (N, M) predictions, or None when ``is_classification`` is False."""
    if not is_classification(pred, y):
        return None
    if jnp.issubdtype(y.dtype, jnp.integer):
        return y
    return jnp.argmax(y, axis=-1).astype(jnp.int32)


def _correct(pred, y, mask):
    """Number of examples (where mask is 1) whose argmax prediction is the true class; -1 if n/a."""
    labels = class_labels(pred, y)
    if labels is None:
        return jnp.full((), -1, jnp.int32)
    hit = (jnp.argmax(pred, axis=-1).astype(labels.dtype) == labels).astype(jnp.int32)
    if mask is not None:
        hit = hit * (mask > 0).astype(jnp.int32)
    return jnp.sum(hit).astype(jnp.int32)


def tree_all_finite(tree) -> jax.Array:
    """A bool scalar: no NaN/Inf in any inexact leaf."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return functools.reduce(jnp.logical_and, leaves, jnp.asarray(True))


def layer_groups(params: PyTree) -> tuple:
    """The parameter groups that per-layer statistics are taken over: one per top-level layer.

    A ``serial`` model's params are a tuple with one entry per layer (empty for layers
    without parameters); any other params tree is one group.
    """
    return tuple(params) if isinstance(params, (tuple, list)) else (params,)


def _group_norms(tree) -> jax.Array:
    """(G,) the l2 norm of each group of `tree` (0 for a group without arrays)."""
    return jnp.stack([global_norm(g).astype(jnp.float32) for g in layer_groups(tree)])


def split_objective(name: str, loss, penalty: Loss | None) -> tuple[Loss, Loss | None]:
    """(data loss, penalty) from a Loss or a ``losses.penalized(loss, penalty)`` objective."""
    if isinstance(loss, Penalized):
        if penalty is not None:
            raise ValueError(f"{name}: the loss {loss.name!r} already has a penalty; do not pass penalty= too")
        return loss.loss, loss.penalty
    return loss, penalty


def _update(optimizer, grads, opt_state, params, lr_scale):
    """fnn's optimizers take the plateau scale as ``lr_scale``; any other (optax's) would ignore
    it, so its updates are scaled instead."""
    if isinstance(optimizer, Optimizer):
        return optimizer.update(grads, opt_state, params, lr_scale=lr_scale)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    scale = jnp.asarray(lr_scale)
    return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates), opt_state


def train_step(model: Layer, loss: Loss, optimizer: Optimizer, *, grad_mode: str = "auto",
               penalty: Loss | None = None, policy: Any = None, layer_stats: bool = False,
               mix: Callable | None = None) -> Callable:
    """Build a pure ``step(ts, x, y, mask=None, lr_scale=1.0) -> (ts, metrics)``.

    The gradient comes from ``fnn.backprop.value_and_grad(model, loss, grad_mode=..., penalty=...)``
    ("auto": "custom_vjp" on CPU and GPU, "autodiff" elsewhere, as in ``fit``);
    the TrainState key is split, one half for this step (dropout), the other kept for later.
    Jit it yourself (``fnn.jit(step, donate_argnums=0)``: ``jax.jit`` with fnn's XLA:CPU options,
    which on CPU run convolutions about 2x faster, fnn/_compile.py) or let ``fit`` do it.

    `loss` may be a ``losses.penalized(loss, penalty)`` objective (the same as ``penalty=``).

    Args (of step):
      ts: a TrainState.
      x: (B, ...) inputs; y: (B,) integer labels or (B, ...) targets.
      mask: optional (B,) weights, 1 for real examples, 0 for padding: the loss and the
        accuracy then count only the masked-in examples (through per-example losses).
      lr_scale: multiplier on the learning rate (reduce-on-plateau's scale).

    Metrics: ``loss`` (the data loss, without the penalty), ``accuracy`` (argmax vs labels,
    NaN when predictions are not (B, M)), ``grad_norm`` (global l2 norm of the gradient,
    penalty included), ``finite`` (loss and gradient free of NaN/Inf), ``correct`` and
    ``count`` (examples right and examples counted).

    ``policy``: a ``fnn.precision.Policy`` (or a compute dtype such as ``jnp.bfloat16``) for mixed
    precision: the step runs ``precision.apply_policy(model, policy)``.

    ``layer_stats=True`` adds two (G,) float32 metrics, one entry per parameter group of
    ``layer_groups(params)`` (per top-level layer of a ``serial``; 0 for layers without
    parameters): ``layer_grad_norms`` (‖∂L/∂θ_i‖ of this batch) and ``layer_update_ratios``
    (‖Δθ_i‖ / ‖θ_i‖ of this step's update, NaN where ‖θ_i‖ = 0). ``StepRecorder`` records them.

    ``mix``: a batch mixer ``(key, x, y, mask) -> (x, y)`` (``fnn.train.mixing.mixup`` or
    ``cutmix``) applied to the batch before the forward pass, with a key split off the model's
    (so without ``mix`` the model's key, and every bit, is as before). Metrics then refer to
    the mixed batch.
    """
    loss, penalty = split_objective("train_step", loss, penalty)
    resolve_grad_mode(grad_mode, name="train_step")  # refuses an unknown mode; "auto" itself goes on
    policy = precision.get_policy(policy, where="train_step")
    if policy is not None:
        model = precision.apply_policy(model, policy)
    net = with_predictions(model)
    masked_loss = masked(loss)
    vg_plain = value_and_grad(net, loss, grad_mode=grad_mode, penalty=penalty)
    vg_masked = value_and_grad(net, masked_loss, grad_mode=grad_mode, penalty=penalty)

    def step(ts: TrainState, x, y, mask=None, lr_scale=1.0):
        key, sub = jax.random.split(ts.key)
        if mix is not None:
            sub, mix_key = jax.random.split(sub)
            x, y = mix(mix_key, x, y, mask)
        if mask is None:
            (value, (new_state, pred)), grads = vg_plain(ts.params, ts.state, x, y, key=sub, train=True)
            count = jnp.asarray(x.shape[0], jnp.int32)
            data_loss = loss.value(pred, y) if penalty is not None else value
        else:
            (value, (new_state, pred)), grads = vg_masked(ts.params, ts.state, x, (y, mask), key=sub,
                                                          train=True)
            count = jnp.sum(mask > 0).astype(jnp.int32)
            data_loss = masked_loss.value(pred, (y, mask)) if penalty is not None else value
        updates, opt_state = _update(optimizer, grads, ts.opt_state, ts.params, lr_scale)
        params = apply_updates(ts.params, updates)
        gnorm = global_norm(grads)
        correct = _correct(pred, y, mask)
        accuracy = jnp.where(correct >= 0, correct.astype(jnp.float32) / jnp.maximum(count, 1).astype(
            jnp.float32), jnp.nan)
        metrics = {"loss": data_loss, "accuracy": accuracy, "grad_norm": gnorm,
                   "finite": jnp.isfinite(value) & jnp.isfinite(gnorm), "correct": correct, "count": count}
        if layer_stats:
            pnorms = _group_norms(ts.params)
            metrics["layer_grad_norms"] = _group_norms(grads)
            metrics["layer_update_ratios"] = jnp.where(pnorms > 0, _group_norms(updates) / pnorms, jnp.nan)
        return TrainState(params, new_state, opt_state, key, ts.step + 1), metrics

    return step
