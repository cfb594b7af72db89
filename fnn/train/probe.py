"""The activation probe a ``StepRecorder`` runs on recorded steps: per-layer output statistics.

It reads the model's structure from ``Layer.children`` and each layer's ``kind``; nothing is
parsed from names. ``fnn.diagnostics`` reads what it records (dead units, saturation).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fnn.core import Layer
from fnn.layers.combinators import run_serial
from fnn.train.history import ACTIVATION_FIELDS
from fnn.typing import PyTree

TANH_SATURATION = 0.99
"""|tanh(x)| above this counts as saturated (the gradient 1 − y² is then below 0.02)."""

SIGMOID_SATURATION = 0.01
"""σ(x) below this or above 1 − this counts as saturated (the gradient y(1 − y) is then below 0.01)."""


def _is_array(a) -> bool:
    return isinstance(a, jax.Array) and a.ndim >= 1 and jnp.issubdtype(a.dtype, jnp.floating)


def top_layers(model: Layer, params: PyTree | None = None) -> tuple[Layer, ...] | None:
    """The top-level layers of a ``serial`` model (``model.children``), or None for any other model.

    With `params`, also None unless they are a tuple with one entry per layer.
    """
    layers = tuple(model.children) if model.kind == "serial" else ()
    if not layers or (params is not None and not (isinstance(params, tuple) and len(params) == len(layers))):
        return None
    return layers


def _stats(y, kind):
    """Mean, std, dead fraction (relu) and saturated fraction (sigmoid/tanh) of one output, float32."""
    nan = jnp.full((), jnp.nan, jnp.float32)
    if not _is_array(y):
        return nan, nan, nan, nan
    y = y.astype(jnp.float32)
    units = y.reshape((-1, y.shape[-1]))
    dead = jnp.mean(jnp.all(units == 0, axis=0).astype(jnp.float32)) if kind == "relu" else nan
    if kind == "tanh":
        sat = jnp.mean((jnp.abs(y) > TANH_SATURATION).astype(jnp.float32))
    elif kind == "sigmoid":
        sat = jnp.mean(((y < SIGMOID_SATURATION) | (y > 1 - SIGMOID_SATURATION)).astype(jnp.float32))
    else:
        sat = nan
    return jnp.mean(y), jnp.std(y), dead, sat


@functools.lru_cache(maxsize=32)  # one probe per model: fit's compiled programs are cached by it
def activation_probe(model: Layer):
    """``(names, probe)``: a jittable ``probe(params, state, x, key, train) -> {field: (L,) float32}``
    with ``ACTIVATION_FIELDS`` for each of the L layers of the top-level ``serial`` (one entry
    for a model that is not one), and their ``"[i] name"`` labels.

    Mean and standard deviation of each layer's output, the dead fraction for layers of kind
    "relu", the saturated fraction for kinds "sigmoid" and "tanh" (NaN elsewhere, and for
    outputs that are not floating arrays). A ``StepRecorder`` runs it on recorded steps inside
    the fused epoch, on the training batch, with the step's own key (so dropout masks are the
    ones the step used).
    """
    layers = top_layers(model)
    names = [model.name] if layers is None else [f"[{i}] {layer.name}" for i, layer in enumerate(layers)]
    kinds = [layer.kind for layer in (layers or (model,))]

    def probe(params, state, x, key, train):
        if top_layers(model, params) is None:
            outs = [model.apply(params, state, x, key=key, train=train)[0]]
        else:  # serial's own per-layer keys (run_serial), so each layer sees the keys the step gave it
            outs = [y for y, _, _ in run_serial(layers, params, state, x, key=key, train=train)]  # type: ignore[arg-type]
        columns = zip(*(_stats(y, kind) for y, kind in zip(outs, kinds, strict=True)), strict=True)
        return {f: jnp.stack(col) for f, col in zip(ACTIVATION_FIELDS, columns, strict=True)}

    return names, probe
