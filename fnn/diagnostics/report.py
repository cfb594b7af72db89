"""``layer_report``: per-layer gradient, parameter and activation statistics on one probe batch.

The report has one entry per layer of the top-level ``serial`` (also one made by
``fnn.models``), read from ``Layer.children`` and each layer's ``kind``: ``report.grad_norms``
and ``report.param_norms`` have exactly the tree structure of ``params`` (a tuple with one
dict per layer), with a Python float per array. A model that is not a ``serial`` is reported
as one layer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn._compile import jit
from fnn.backprop import resolve_grad_mode, value_and_grad
from fnn.core import Layer, Loss, Optimizer, layer_fwd
from fnn.layers.combinators import run_serial
from fnn.train.probe import SIGMOID_SATURATION, TANH_SATURATION
from fnn.typing import DataArray, PyTree

ACTIVATION_KINDS = ("relu", "sigmoid", "tanh")
"""Layer kinds with a statistic of their own: dead units (relu), saturation (sigmoid, tanh)."""


class LayerStats(NamedTuple):
    """Statistics of one layer of the top-level ``serial`` on the probe batch.

    Attributes:
      index: the position in the ``serial``.
      name: the layer's name (``Dense(256)``), or ``layer[i]`` when unknown.
      kind: "relu", "sigmoid", "tanh" (elementwise activations, from the name or, for an
        unnamed layer, from its output matching the function of its input), "params" (a
        layer with parameters) or "other".
      num_params: number of scalar parameters.
      grad_norm: l2 norm of all this layer's gradients (None without parameters).
      param_norm: l2 norm of all this layer's parameters (None without parameters).
      update_ratio: ‖update‖ / ‖params‖ for this layer, given an optimizer (else None). The
        rule of thumb is around 1e-3 per step: much smaller learns slowly, much larger is unstable.
      act_mean, act_std: mean and standard deviation of the layer's output over the batch
        (None when the output is not an array).
      dead_fraction: ReLU only: the fraction of units (last axis: features or channels) that
        output exactly 0 for every example of the batch (and every spatial position).
      saturated_fraction: sigmoid/tanh only: the fraction of outputs (over examples and
        units) in the flat region: |y| > 0.99 for tanh, y < 0.01 or y > 0.99 for sigmoid.
    """

    index: int  # type: ignore[assignment]  # a field named like tuple.index
    name: str
    kind: str
    num_params: int
    grad_norm: float | None
    param_norm: float | None
    update_ratio: float | None
    act_mean: float | None
    act_std: float | None
    dead_fraction: float | None
    saturated_fraction: float | None


class Report(NamedTuple):
    """What ``layer_report`` measured.

    Attributes:
      layers: one ``LayerStats`` per layer of the top-level ``serial``.
      grad_norms: the l2 norm of each gradient array, as a tree with params' structure
        (for a ``serial``: a tuple with one dict per layer, e.g. ``({"w": 0.3, "b": 0.1}, {}, ...)``).
      param_norms: the l2 norm of each parameter array, params' structure.
      update_norms: the l2 norm of each update array (params' structure), or None without optimizer.
      loss: the loss on the probe batch.
      global_grad_norm: the l2 norm of the whole gradient.
    """

    layers: tuple[LayerStats, ...]
    grad_norms: Any
    param_norms: Any
    update_norms: Any
    loss: float
    global_grad_norm: float

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.layers)


def sublayers(model: Layer) -> tuple[Layer, ...] | None:
    """The layers of a ``serial`` (also wrapped by ``fnn.models``, ``with_own_vjp`` or
    ``apply_policy``, which keep its ``children`` and ``kind``), or None for any other layer,
    so callers fall back to treating the model as one layer."""
    return tuple(model.children) if model.kind == "serial" and model.children else None


def _layers_of(model: Layer, params) -> tuple[Layer, ...] | None:
    layers = sublayers(model)
    if layers is not None and isinstance(params, tuple) and len(layers) == len(params):
        return layers
    return None


def _stat_kind(layer: Layer) -> str | None:
    """The layer's kind when the report has a statistic for it, else None."""
    return layer.kind if layer.kind in ACTIVATION_KINDS else None




def _wide(a) -> jax.Array:
    """a in its own float dtype when that has at least 32 bits, else in float32."""
    a = jnp.asarray(a)
    if jnp.issubdtype(a.dtype, jnp.floating) and jnp.dtype(a.dtype).itemsize >= 4:
        return a
    return a.astype(jnp.float32)


def _norm(a) -> jax.Array:
    """l2 norm in (at least) float32."""
    a = _wide(a)
    return jnp.sqrt(jnp.sum(a * a))


def _is_array(a) -> bool:
    return isinstance(a, jax.Array) and a.ndim >= 1 and jnp.issubdtype(a.dtype, jnp.floating)


def _output_stats(y: np.ndarray | None) -> dict | None:
    """Mean, std, dead and saturated fractions of one layer's output y (N, ..., M), on the host."""
    if y is None:
        return None
    y = np.asarray(y, np.float64)
    units = y.reshape((-1, y.shape[-1])) if y.ndim >= 2 else y.reshape((-1, 1))
    with np.errstate(all="ignore"):  # Inf/NaN activations (a diverged net) give NaN statistics
        return {
            "mean": float(np.mean(y)), "std": float(np.std(y)),
            "dead": float(np.mean(np.all(units == 0, axis=0))),
            "sat_tanh": float(np.mean(np.abs(y) > TANH_SATURATION)),
            "sat_sigmoid": float(np.mean((y < SIGMOID_SATURATION) | (y > 1 - SIGMOID_SATURATION))),
        }


_ACTIVATION_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),  # σ(x), without overflow in exp
    "tanh": np.tanh,
}


def _kind_from_output(x: np.ndarray | None, y: np.ndarray | None) -> str | None:
    """The activation an unnamed parameter-free layer computes, judged from its input and output.

    It must be that function of its input and differ from its input, so identities (Dropout
    at evaluation, Flatten of a flat input) match nothing.
    """
    if x is None or y is None or np.shape(x) != np.shape(y):
        return None
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if np.array_equal(x, y):
        return None
    with np.errstate(all="ignore"):
        for kind, f in _ACTIVATION_FUNCTIONS.items():
            if np.allclose(y, f(x), rtol=1e-5, atol=1e-6):
                return kind
    return None


@functools.lru_cache(maxsize=32)
def _stats_fn(model: Layer, loss: Loss, optimizer: Optimizer | None, grad_mode: str, train: bool,
              layers: tuple[Layer, ...] | None, need_input: frozenset):
    """The jitted statistics: loss, norms, and each layer's output (and input, for the layers in
    `need_input`, whose kind is judged from what they compute)."""
    vg = value_and_grad(model, loss, grad_mode=grad_mode)

    def outputs(params, state, x, key):
        """(input, output) of each layer of the top-level serial, run in sequence as serial does."""
        if layers is None:
            y, _, _ = layer_fwd(model, params, state, x, key=key, train=train)
            return [(x, y)]
        ys = [y for y, _, _ in run_serial(layers, params, state, x, key=key, train=train)]
        return list(zip([x, *ys[:-1]], ys, strict=True))

    def run(params, state, opt_state, x, y, key):
        if grad_mode == "autodiff":
            # One forward pass gives both the gradient and every layer's output.
            def objective(p):
                pairs = outputs(p, state, x, key)
                return loss.value(pairs[-1][1], y), pairs

            (value, pairs), grads = jax.value_and_grad(objective, has_aux=True)(params)
        else:
            (value, _), grads = vg(params, state, x, y, key=key, train=train)
            pairs = outputs(params, state, x, key)
        out = {
            "loss": value,
            "grad_norms": jax.tree.map(_norm, grads),
            "param_norms": jax.tree.map(_norm, params),
            "global_grad_norm": jnp.sqrt(sum((_norm(g).astype(jnp.float32) ** 2
                                              for g in jax.tree.leaves(grads)), jnp.zeros((), jnp.float32))),
            "layers": [(a if i in need_input and _is_array(a) else None, b if _is_array(b) else None)
                       for i, (a, b) in enumerate(pairs)],
        }
        if optimizer is not None:
            updates, _ = optimizer.update(grads, opt_state, params)
            out["update_norms"] = jax.tree.map(_norm, updates)
        return out

    return jit(run)


def _to_float(tree):
    return jax.tree.map(lambda a: float(a), jax.device_get(tree))


def _combined(norms) -> float | None:
    leaves = jax.tree.leaves(norms)
    return math.sqrt(sum(v * v for v in leaves)) if leaves else None


def layer_report(model: Layer, loss: Loss, params: PyTree, state: PyTree, x: DataArray, y: DataArray, *,
                 optimizer: Optimizer | None = None, opt_state: PyTree | None = None, key: jax.Array | None = None,
                 train: bool = False,                 grad_mode: str = "auto") -> Report:
    """Per-layer gradient, update and activation statistics of `model` on one batch.

    Args:
      model: the Layer (a ``serial``, or a model from ``fnn.models``).
      loss: the Loss the gradient is taken of.
      params, state: the model's parameters and state (e.g. ``ts.params, ts.state``).
      x: (N, ...) probe inputs; y: (N, ...) targets.
      optimizer: if given, the update this optimizer would make from `opt_state` (default:
        a fresh ``optimizer.init(params)``) gives ``update_ratio``; nothing is changed.
      opt_state: the optimizer state (e.g. ``ts.opt_state``).
      key: PRNG key for stochastic layers; needed with ``train=True`` and Dropout.
      train: run the layers in training mode (Dropout on, BatchNorm on batch statistics).
      grad_mode: "auto" (default: as ``fit``, see ``fnn.backprop.resolve_grad_mode``), "autodiff",
        "manual" or "custom_vjp". "autodiff" takes the gradient and the layer outputs from one
        forward pass; the others run one more forward pass for the outputs.

    Returns:
      A ``Report``; ``format_report`` prints it.
    """
    grad_mode = resolve_grad_mode(grad_mode, name="layer_report")
    layers = _layers_of(model, params)
    if optimizer is not None and opt_state is None:
        opt_state = optimizer.init(params)
    need_input = frozenset() if layers is None else frozenset(
        i for i, (layer, p) in enumerate(zip(layers, params, strict=True))
        if _stat_kind(layer) is None and not jax.tree.leaves(p))
    raw = _stats_fn(model, loss, optimizer, grad_mode, bool(train), layers, need_input)(
        params, state, opt_state, jnp.asarray(x), jnp.asarray(y), key)
    raw = jax.device_get(raw)
    grad_norms = _to_float(raw["grad_norms"])
    param_norms = _to_float(raw["param_norms"])
    update_norms = _to_float(raw["update_norms"]) if optimizer is not None else None

    per_layer = list(params) if layers is not None else [params]
    per_grad = list(grad_norms) if layers is not None else [grad_norms]
    per_param = list(param_norms) if layers is not None else [param_norms]
    per_update = None
    if update_norms is not None:
        per_update = list(update_norms) if layers is not None else [update_norms]
    stats = []
    for i, (layer_in, layer_out) in enumerate(raw["layers"]):
        st = _output_stats(layer_out)
        name = layers[i].name if layers is not None else model.name
        num = int(sum(np.size(a) for a in jax.tree.leaves(per_layer[i])))
        kind = _stat_kind(layers[i]) if layers is not None else None
        if kind is None and num == 0 and layers is not None:
            kind = _kind_from_output(layer_in, layer_out)
        if kind is None:
            kind = "params" if num else "other"
        gn, pn = (_combined(per_grad[i]), _combined(per_param[i])) if num else (None, None)
        ratio = None
        if num and per_update is not None:
            un = _combined(per_update[i])
            ratio = un / pn if pn else (math.inf if un else 0.0)  # type: ignore[operator]  # pn: float when num
        sat = None
        if kind in ("sigmoid", "tanh") and st is not None:
            sat = float(st[f"sat_{kind}"])
        stats.append(LayerStats(
            index=i, name=name, kind=kind, num_params=num, grad_norm=gn, param_norm=pn, update_ratio=ratio,
            act_mean=None if st is None else float(st["mean"]),
            act_std=None if st is None else float(st["std"]),
            dead_fraction=float(st["dead"]) if kind == "relu" and st is not None else None,
            saturated_fraction=sat))
    return Report(tuple(stats), grad_norms, param_norms, update_norms, float(raw["loss"]),
                  float(raw["global_grad_norm"]))
