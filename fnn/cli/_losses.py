"""The losses ``fnn train --loss`` offers, and what each means for the model, the targets and
the scores ``fnn predict`` shows.

Every loss of ``fnn.losses`` that fits a classifier of class labels is here:

| --loss | model output | targets | ``fnn predict`` shows |
|---|---|---|---|
| softmax_cross_entropy (default) | logits | labels (N,) | softmax probabilities |
| cross_entropy | a ``Softmax`` layer appended: probabilities | labels (N,) | those probabilities |
| sigmoid_binary_cross_entropy | logits, one per class | one-hot (N, M) | sigmoid of each logit |
| binary_cross_entropy | a ``Sigmoid`` layer appended | one-hot (N, M) | those sigmoids |
| mse, mae | raw scores | one-hot (N, M) | the raw scores |

``triplet_margin`` trains embeddings of (anchor, positive, negative) triples, not a classifier of
labels: it is not a ``fnn train`` loss (``fit`` trains it; tests/train/test_targets.py).
Accuracy is the argmax of the output against the label in every case.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fnn.core import Layer, Loss


class CliLoss(NamedTuple):
    """How ``fnn train`` uses one loss."""

    output: str | None     # None, "softmax" or "sigmoid": the layer appended to the model
    one_hot: bool          # targets one-hot (N, M) instead of labels (N,)
    score: str             # what predict computes from the output: "softmax", "sigmoid" or "identity"
    score_name: str        # the word predict prints: "probability" or "score"


LOSSES = {
    "softmax_cross_entropy": CliLoss(None, False, "softmax", "probability"),
    "cross_entropy": CliLoss("softmax", False, "identity", "probability"),
    "sigmoid_binary_cross_entropy": CliLoss(None, True, "sigmoid", "score"),
    "binary_cross_entropy": CliLoss("sigmoid", True, "identity", "score"),
    "mse": CliLoss(None, True, "identity", "score"),
    "mae": CliLoss(None, True, "identity", "score"),
}
DEFAULT = "softmax_cross_entropy"


def loss_fn(name: str) -> Loss:
    """The ``fnn.losses`` object named `name`."""
    from fnn import losses
    return getattr(losses, name)


def with_output(model: Layer, name: str) -> Layer:
    """The model with the output layer `name`'s loss needs (``Softmax``/``Sigmoid``), or itself."""
    from fnn.layers import Sigmoid, Softmax, serial
    out = LOSSES[name].output
    if out is None:
        return model
    return serial(model, Softmax() if out == "softmax" else Sigmoid())


def targets(name: str, labels: Any, num_classes: int) -> np.ndarray:
    """Labels (N,) as the targets `name` trains on: themselves, or one-hot float32 (N, M)."""
    labels = np.asarray(labels)
    if not LOSSES[name].one_hot:
        return labels
    return np.eye(num_classes, dtype=np.float32)[labels]


def scores(name: str, outputs: Any) -> np.ndarray:
    """(N, M) per-class scores to rank and print, from the model's outputs."""
    import jax
    rule = LOSSES[name].score
    if rule == "softmax":
        return np.asarray(jax.nn.softmax(outputs, axis=-1))
    if rule == "sigmoid":
        return np.asarray(jax.nn.sigmoid(outputs))
    return np.asarray(outputs)
