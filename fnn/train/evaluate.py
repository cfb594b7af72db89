"""The evaluator: loss, accuracy and confusion matrix over a whole data set, in jitted batches.

``evaluation_sums`` is the pure program (vmappable over params, as ``search.vmap_search`` does);
``evaluate`` pads, batches, jits and checks it.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnn._compile import jit
from fnn.core import Layer, Loss, check_positive_int
from fnn.optim._base import default_float
from fnn.train.checks import check_labels, check_xy
from fnn.train.step import class_labels, is_classification, per_example
from fnn.typing import Array, DataArray, PyTree


def evaluation_sums(model: Layer, loss: Loss, params: PyTree, state: PyTree, xb: Array, yb: Array,
                    mb: Array) -> tuple[Array, Array | None]:
    """Sums over padded batches in evaluation mode (``train=False``).

    Args:
      xb: (S, B, ...) inputs; yb: (S, B, ...) targets; mb: (S, B) mask, 1 for real examples.
    Returns:
      ``(loss_sum, confusion)``: the sum of per-example losses over masked-in examples, and the
      (M, M) int32 confusion matrix (rows = true class), or None when this is not classification.
    """
    def body(carry, batch):
        loss_sum, conf = carry
        x, y, m = batch
        pred, _ = model.apply(params, state, x, key=None, train=False)
        per = per_example(loss, pred, y)
        loss_sum = loss_sum + jnp.sum(per * m.astype(per.dtype)).astype(loss_sum.dtype)
        labels = class_labels(pred, y)
        if conf is not None and labels is not None:
            guess = jnp.argmax(pred, axis=-1).astype(labels.dtype)
            conf = conf.at[labels, guess].add(m.astype(jnp.int32))
        return (loss_sum, conf), None

    pred_probe = jax.eval_shape(lambda x: model.apply(params, state, x)[0], xb[0])
    classify = is_classification(pred_probe, jax.ShapeDtypeStruct(yb.shape[1:], yb.dtype))
    m = pred_probe.shape[-1] if classify else 0
    conf0 = jnp.zeros((m, m), jnp.int32) if classify else None
    (loss_sum, conf), _ = jax.lax.scan(body, (jnp.zeros((), default_float()), conf0), (xb, yb, mb))
    return loss_sum, conf


@functools.lru_cache(maxsize=64)
def _compiled(model: Layer, loss: Loss):
    return jit(functools.partial(evaluation_sums, model, loss))


def padded_batches(x: DataArray, y: DataArray, batch_size: int) -> tuple[Array, Array, Array]:
    """(xb, yb, mb): x and y padded with their first examples to whole batches, (S, B, ...), and
    the (S, B) float32 mask that is 0 on the padding."""
    n = len(x)
    steps = -(-n // batch_size)
    pad = steps * batch_size - n
    x, y = jnp.asarray(x), jnp.asarray(y)
    if pad:
        x = jnp.concatenate([x, x[:pad]])
        y = jnp.concatenate([y, y[:pad]])
    mask = (jnp.arange(steps * batch_size) < n).astype(jnp.float32)
    return (x.reshape((steps, batch_size) + x.shape[1:]), y.reshape((steps, batch_size) + y.shape[1:]),
            mask.reshape(steps, batch_size))


def evaluate(model: Layer, loss: Loss, params: PyTree, state: PyTree, x: DataArray, y: DataArray, *,
             batch_size: int = 1000) -> dict:
    """Loss, accuracy and confusion matrix over a whole data set, in jitted batches.

    All batches have ``batch_size`` examples: the remainder is padded with the first
    examples and masked out, so every example counts exactly once and nothing recompiles.

    Args:
      model, loss: as given to ``fit``; the model runs with ``train=False``.
      params, state: e.g. ``ts.params, ts.state``.
      x: (N, ...) float inputs; y: (N,) integer labels (or (N, M) one-hot/targets).
      batch_size: examples per compiled batch (capped at N).

    Returns:
      dict with ``loss`` (mean over the N examples), ``accuracy`` (float, or None when not
      classification), ``confusion`` ((M, M) int64 NumPy array, rows = true class, columns =
      predicted class; None when not classification) and ``num_examples``.
    """
    name = "evaluate"
    x, y = check_xy(name, "data", x, y)
    batch_size = min(check_positive_int(name, "batch_size", batch_size), len(x))
    n = len(x)
    loss_sum, conf = _compiled(model, loss)(params, state, *padded_batches(x, y, batch_size))
    if conf is not None:  # out-of-range labels would have been dropped, negative ones wrapped around
        check_labels(name, "data", y, (None, conf.shape[0]))
    result: dict[str, Any] = {"loss": float(loss_sum) / n, "accuracy": None, "confusion": None, "num_examples": n}
    if conf is not None:
        conf = np.asarray(conf).astype(np.int64)
        result["confusion"] = conf
        result["accuracy"] = float(np.trace(conf)) / n
    return result
