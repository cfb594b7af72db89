"""Gradient and activation diagnostics: per-layer statistics, detectors, and a recorder for ``fit``.

One probe batch tells a lot about a network's health (Glorot & Bengio 2010; Karpathy's
"recipe for training neural networks"):

- ``layer_report``: per layer of a ``serial`` model, the gradient norm of each parameter,
  the update/parameter norm ratio (given an optimizer), the mean and standard deviation of
  the layer's output, the fraction of dead ReLU units and of saturated sigmoid/tanh outputs.
  ``format_report`` prints it as a table.
- Detectors with documented thresholds (module constants below): ``detect_vanishing``,
  ``detect_exploding``, ``detect_dead_units``, ``detect_saturation``.
- ``overfit_one_batch``: a model that cannot drive the loss on one small batch near zero
  has a bug (a wrong gradient sign, a layer that does not learn, a broken init).
- ``recorder``: a ``fit`` callback computing the full report (activations included) on a
  fixed probe batch at the end of every N-th epoch.
- Per step: ``fit(..., record_every=N)`` records each layer's gradient norm and update ratio
  (on the training batch) every N steps from inside the fused epoch into ``History.steps``.
  ``fnn.plot.plot_grad_norms`` draws either; ``detect_exploding`` reads either.

Typical use::

    report = layer_report(model, losses.softmax_cross_entropy, ts.params, ts.state, x[:256], y[:256])
    print(format_report(report))
    print(detect_vanishing(report))

Layers of a model. The report has one entry per layer of the top-level ``serial`` (also one
made by ``fnn.models``): ``report.grad_norms`` and ``report.param_norms`` have exactly the
tree structure of ``params`` (a tuple with one dict per layer), with a Python float per
array. The layers' names and their outputs come from the sub-layers of the ``serial``
(``sublayers``); a model whose sub-layers cannot be found is reported as one layer.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn.backprop import resolve_grad_mode, value_and_grad
from fnn.core import Layer, Loss, Optimizer, check_positive_int, layer_fwd
from fnn.layers.combinators import run_serial
from fnn.train import ACTIVATION_FIELDS, init_train_state, train_step
from fnn.train.probe import SIGMOID_SATURATION, TANH_SATURATION, activation_probe

# ----------------------------------------------------------------------------------------
# Thresholds (documented, and arguments of the detectors)

VANISHING_RATIO = 1e-3
"""Vanishing: the first parameterized layer's gradient norm is below this times the last one's."""

EXPLODING_GROWTH = 1e2
"""Exploding: the gradient norm rises above this times its first value."""

LOSS_SPIKE = 10.0
"""Exploding: the loss rises above this times its first value."""

DEAD_FRACTION = 0.5
"""detect_dead_units: a ReLU layer with more than this fraction of dead units is flagged."""

SATURATION_FRACTION = 0.5
"""detect_saturation: a sigmoid/tanh layer with more than this fraction of saturated outputs."""

OVERFIT_FRACTION = 1e-2
"""overfit_one_batch passes when the final loss is at most this fraction of the initial loss."""

ACTIVATION_KINDS = ("relu", "sigmoid", "tanh")


# ----------------------------------------------------------------------------------------
# Report types


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

    index: int
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


class Verdict(NamedTuple):
    """A detector's answer: ``detected`` with a one-line ``message`` that names the evidence.

    ``value`` is the measured quantity compared with ``threshold`` (None when there was
    nothing to measure). ``bool(verdict)`` is ``detected``.
    """

    detected: bool
    message: str
    value: float | None
    threshold: float

    def __bool__(self) -> bool:
        return bool(self.detected)

    def __str__(self) -> str:
        return self.message


# ----------------------------------------------------------------------------------------
# Layers of a serial model


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


_STAT_KINDS = ("relu", "sigmoid", "tanh")
"""Layer kinds with a statistic of their own: dead units (relu), saturation (sigmoid, tanh)."""


def _stat_kind(layer: Layer) -> str | None:
    """The layer's kind when the report has a statistic for it, else None."""
    return layer.kind if layer.kind in _STAT_KINDS else None


# ----------------------------------------------------------------------------------------
# The jitted statistics


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


_ACTIVATION_FUNCTIONS = {
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

    return jax.jit(run)


def _to_float(tree):
    return jax.tree.map(lambda a: float(a), jax.device_get(tree))


def _combined(norms) -> float | None:
    leaves = jax.tree.leaves(norms)
    return math.sqrt(sum(v * v for v in leaves)) if leaves else None


def layer_report(model: Layer, loss: Loss, params, state, x, y, *, optimizer: Optimizer | None = None,
                 opt_state=None, key: jax.Array | None = None, train: bool = False,
                 grad_mode: str = "auto") -> Report:
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
            ratio = un / pn if pn else (math.inf if un else 0.0)
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


def format_report(report: Report, *, verdicts: bool = True) -> str:
    """The report as a fixed-width table, one row per layer, then the detectors' verdicts."""
    def num(v, fmt, width):
        return f"{'-':>{width}}" if v is None else format(v, f">{width}{fmt}")

    def pct(v):
        return f"{'-':>6}" if v is None else f"{100 * v:>5.1f}%"

    width = max([len(s.name) for s in report.layers] + [5])
    lines = [f"{'#':>3}  {'layer':<{width}}  {'params':>8}  {'grad_norm':>9}  {'param_norm':>10}  "
             f"{'upd/param':>9}  {'act_mean':>9}  {'act_std':>9}  {'dead':>6}  {'satur':>6}"]
    for s in report.layers:
        lines.append(f"{s.index:>3}  {s.name:<{width}}  {s.num_params:>8}  {num(s.grad_norm, '.2e', 9)}  "
                     f"{num(s.param_norm, '.2e', 10)}  {num(s.update_ratio, '.1e', 9)}  "
                     f"{num(s.act_mean, '.3g', 9)}  {num(s.act_std, '.3g', 9)}  {pct(s.dead_fraction)}  "
                     f"{pct(s.saturated_fraction)}")
    lines.append(f"loss {report.loss:.4g}, global gradient norm {report.global_grad_norm:.3e}")
    if verdicts:
        for v in (detect_vanishing(report), detect_dead_units(report), detect_saturation(report)):
            lines.append(("WARNING: " if v.detected else "ok: ") + v.message)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Detectors


def detect_vanishing(report: Report, *, ratio: float = VANISHING_RATIO) -> Verdict:
    """Vanishing gradients: the first layer with parameters gets a gradient norm below
    ``ratio`` (default 1e-3) times the last one's.

    A healthy network keeps these within one or two orders of magnitude; a deep sigmoid net
    with a small init loses a factor of at least 4 (σ' ≤ 1/4) times ‖W‖ per layer.
    """
    layers = [s for s in report.layers if s.grad_norm is not None]
    if len(layers) < 2:
        return Verdict(False, "vanishing gradients: needs two layers with parameters to compare", None, ratio)
    first, last = layers[0], layers[-1]
    if not (math.isfinite(first.grad_norm) and math.isfinite(last.grad_norm)):
        return Verdict(False, "vanishing gradients: non-finite gradient norms (see detect_exploding)",
                       None, ratio)
    if last.grad_norm == 0.0:
        return Verdict(False, f"vanishing gradients: the last layer [{last.index}] {last.name} has a zero "
                              f"gradient, nothing to compare with", None, ratio)
    r = first.grad_norm / last.grad_norm
    detected = r < ratio
    verb = "VANISHING gradients" if detected else "no vanishing gradients"
    return Verdict(detected, f"{verb}: first layer [{first.index}] {first.name} gradient norm "
                             f"{first.grad_norm:.2e} is {r:.2e} x the last layer's "
                             f"[{last.index}] {last.name} {last.grad_norm:.2e} (threshold {ratio:.0e})",
                   r, ratio)


def _series(obj) -> tuple[list[float], list[float], str | None]:
    """(grad norms, losses, stop reason) from the many things detect_exploding accepts."""
    if isinstance(obj, OverfitResult):
        return list(map(float, obj.grad_norms)), list(map(float, obj.losses)), None
    if isinstance(obj, Recorder):
        obj = obj.records
    if _is_history(obj) and obj.steps:  # per-step records from fit(record_every=N)
        return [r["grad_norm"] for r in obj.steps], [r["loss"] for r in obj.steps], obj.stop_reason
    if hasattr(obj, "records") and hasattr(obj, "stop_reason"):  # fnn.train.History
        recs = obj.records
        return ([r.get("grad_norm") for r in recs if r.get("grad_norm") is not None],
                [r.get("train_loss") for r in recs if r.get("train_loss") is not None], obj.stop_reason)
    if isinstance(obj, dict):
        return list(map(float, obj.get("grad_norm", []))), list(map(float, obj.get("loss", []))), None
    obj = list(obj)
    if obj and isinstance(obj[0], Record):
        return ([r.report.global_grad_norm for r in obj], [r.report.loss for r in obj], None)
    if obj and isinstance(obj[0], Report):
        return [r.global_grad_norm for r in obj], [r.loss for r in obj], None
    return [float(v) for v in np.ravel(np.asarray(obj, dtype=np.float64))], [], None


def detect_exploding(history_or_norms, *, growth: float = EXPLODING_GROWTH,
                     loss_spike: float = LOSS_SPIKE) -> Verdict:
    """Exploding gradients or divergence over training.

    Flagged when any of: a NaN/Inf gradient norm or loss (or ``fit`` stopped on one, as its
    ``History.stop_reason`` says); the gradient norm rises above ``growth`` (default 100)
    times its first value; the loss rises above ``loss_spike`` (default 10) times its first
    value.

    Args:
      history_or_norms: a ``fnn.train.History`` (its per-step records from
        ``fit(record_every=N)`` when there are any, else per-epoch ``grad_norm`` and ``train_loss``),
        a ``Recorder`` or its records, an ``OverfitResult`` (per step), a dict with
        ``"grad_norm"`` and/or ``"loss"`` lists, or a sequence of gradient norms.
      growth: the gradient-norm growth factor threshold.
      loss_spike: the loss growth factor threshold.
    """
    norms, losses_, stop = _series(history_or_norms)
    reasons, value = [], None
    if stop is not None and ("NaN" in stop or "non-finite" in stop):
        reasons.append(f"training stopped on a non-finite value ({stop.split(';')[0]})")
    bad = [i for i, v in enumerate(norms) if not math.isfinite(v)]
    bad_loss = [i for i, v in enumerate(losses_) if not math.isfinite(v)]
    if bad or bad_loss:
        first = min(bad + bad_loss)
        reasons.append(f"non-finite gradient norm or loss at record {first}")
    finite = [v for v in norms if math.isfinite(v)]
    if finite and finite[0] > 0:
        value = max(finite) / finite[0]
        if value > growth:
            reasons.append(f"gradient norm grew {value:.3g}x (from {finite[0]:.3g} to {max(finite):.3g}; "
                           f"threshold {growth:g}x)")
    fl = [v for v in losses_ if math.isfinite(v)]
    if fl and fl[0] > 0 and max(fl) > loss_spike * fl[0]:
        reasons.append(f"loss spiked to {max(fl):.3g}, {max(fl) / fl[0]:.3g}x its first value "
                       f"{fl[0]:.3g} (threshold {loss_spike:g}x)")
    if reasons:
        return Verdict(True, "EXPLODING: " + "; ".join(reasons), value, growth)
    if not norms and not losses_:
        return Verdict(False, "exploding gradients: nothing recorded", None, growth)
    growth_txt = (f"gradient norm growth {value:.3g}x <= {growth:g}x" if value is not None
                  else "no gradient norms")
    return Verdict(False, f"no exploding gradients: {growth_txt}, all values finite, no loss spike "
                          f"over {loss_spike:g}x", value, growth)


def _last_step_layers(history) -> tuple[LayerStats, ...]:
    """LayerStats (activation fields only) from the last per-step record of a History."""
    if not history.steps:
        return ()
    rec = history.steps[-1]
    real = lambda v: None if v is None or not math.isfinite(v) else float(v)
    return tuple(LayerStats(i, name, "other", 0, None, None, None, real(rec["act_mean"][i]), real(rec["act_std"][i]),
                            real(rec["dead_fraction"][i]), real(rec["saturated_fraction"][i]))
                 for i, name in enumerate(history.activation_names))


def _layers(report_or_history) -> tuple[LayerStats, ...]:
    return _last_step_layers(report_or_history) if _is_history(report_or_history) else report_or_history.layers


def _worst_layer(report, field: str, fraction: float, none: str, flagged: str, fine: str, what: str) -> Verdict:
    """The verdict on the layer with the largest `field` (a LayerStats fraction) against `fraction`."""
    layers = [s for s in _layers(report) if getattr(s, field) is not None]
    if not layers:
        return Verdict(False, none, None, fraction)
    worst = max(layers, key=lambda s: getattr(s, field))
    value = getattr(worst, field)
    detected = value > fraction
    return Verdict(detected, f"{flagged if detected else fine}: at most {100 * value:.1f}% {what} "
                             f"(layer [{worst.index}] {worst.name}; threshold {100 * fraction:.0f}%)",
                   value, fraction)


def detect_dead_units(report: Report, *, fraction: float = DEAD_FRACTION) -> Verdict:
    """Dead ReLUs: some ReLU layer has more than ``fraction`` (default 50%) of its units
    outputting 0 for every example of the probe batch (they get no gradient, so they stay dead).
    `report` may also be a ``History`` from ``fit(record_every=N)``: its last per-step record."""
    return _worst_layer(report, "dead_fraction", fraction, "dead units: no ReLU layer", "DEAD units",
                        "no dead-unit problem", "dead units")


def detect_saturation(report: Report, *, fraction: float = SATURATION_FRACTION) -> Verdict:
    """Saturated sigmoid/tanh: some such layer has more than ``fraction`` (default 50%) of its
    outputs in the flat region (see ``LayerStats.saturated_fraction``). `report` may also be a
    ``History`` from ``fit(record_every=N)``: its last per-step record."""
    return _worst_layer(report, "saturated_fraction", fraction, "saturation: no sigmoid or tanh layer",
                        "SATURATED units", "no saturation problem", "saturated outputs")


# ----------------------------------------------------------------------------------------
# Overfitting one batch


class OverfitResult(NamedTuple):
    """What ``overfit_one_batch`` measured.

    Attributes:
      passed: the final loss is finite and ``|final_loss| <= threshold``.
      losses: (steps,) loss before each update; grad_norms: (steps,) gradient norms.
      final_loss: the loss after the last update (evaluation mode).
      initial_loss: ``losses[0]``.
      threshold: the pass threshold used.
      message: a one-line verdict.
    """

    passed: bool
    losses: np.ndarray
    grad_norms: np.ndarray
    final_loss: float
    initial_loss: float
    threshold: float
    message: str

    def __bool__(self) -> bool:
        return bool(self.passed)


@functools.lru_cache(maxsize=16)
def _overfit_fn(model, loss, optimizer, grad_mode, steps):
    step = train_step(model, loss, optimizer, grad_mode=grad_mode)

    def run(ts, x, y):
        def body(ts, _):
            ts, m = step(ts, x, y)
            return ts, (m["loss"], m["grad_norm"])

        ts, (losses_, norms) = jax.lax.scan(body, ts, None, length=steps)
        pred, _ = model.apply(ts.params, ts.state, x, train=False)
        return losses_, norms, loss.value(pred, y)

    return jax.jit(run)


def overfit_one_batch(model: Layer, loss: Loss, optimizer: Optimizer, x, y, *, key: jax.Array,
                      steps: int = 300, threshold: float | None = None,
                      grad_mode: str = "auto") -> OverfitResult:
    """Train on one small batch only, and check that the loss goes (near) zero.

    A correct model with enough capacity memorizes a few examples; when it cannot, something
    is broken (a wrong gradient, a layer that does not learn, a loss with the wrong sign, a
    degenerate init). Run it before any long training (Karpathy's "overfit one batch").

    Args:
      model, loss, optimizer: as for ``fit``.
      x: (N, ...) a small batch (8 to 64 examples); y: (N, ...) its targets.
      key: PRNG key for the init (and dropout).
      steps: number of full-batch updates (one compiled ``lax.scan``).
      threshold: pass when the final loss ``|L|`` is at most this; default
        ``OVERFIT_FRACTION`` (1e-2) times the initial loss.
      grad_mode: as for ``fit``: "auto" (default), "autodiff", "manual" or "custom_vjp".

    Returns:
      An ``OverfitResult`` (truthy when it passed) with the per-step loss curve.
    """
    steps = check_positive_int("overfit_one_batch", "steps", steps)
    resolve_grad_mode(grad_mode, name="overfit_one_batch")  # "auto" goes on: train_step keeps its CPU kernels
    x, y = jnp.asarray(x), jnp.asarray(y)
    ts = init_train_state(model, optimizer, x.shape[1:], key=key)
    losses_, norms, final = jax.device_get(_overfit_fn(model, loss, optimizer, grad_mode, steps)(ts, x, y))
    losses_, norms, final = np.asarray(losses_, np.float64), np.asarray(norms, np.float64), float(final)
    initial = float(losses_[0])
    thr = float(threshold) if threshold is not None else OVERFIT_FRACTION * abs(initial)
    passed = bool(math.isfinite(final) and abs(final) <= thr)
    how = "PASSED" if passed else "FAILED"
    hint = "" if passed else (" - the model cannot memorize one batch: check the gradient (sign, "
                              "layers that do not learn), the init and the learning rate")
    msg = (f"overfit one batch {how}: loss {initial:.4g} -> {final:.4g} after {steps} steps on "
           f"{x.shape[0]} examples (threshold {thr:.3g}){hint}")
    return OverfitResult(passed, losses_, norms, final, initial, thr, msg)


# ----------------------------------------------------------------------------------------
# Recording during fit


class Record(NamedTuple):
    """One recorded report: after `epoch` (0 = before training), at global `step`."""

    epoch: int
    step: int
    report: Report


class Recorder:
    """A ``fit`` callback: ``layer_report`` on a fixed probe batch at the end of every N-th epoch.

    Use ``diagnostics.recorder(...)`` to make one, pass it in ``fit(..., callbacks=[rec])``,
    then read ``rec.records`` (a list of ``Record``), ``rec.grad_norms()`` or plot them with
    ``fnn.plot.plot_grad_norms(rec, path)``. Call ``rec(0, ts)`` yourself on the initial
    TrainState to record the start. The statistics are computed (and copied to the host)
    inside the callback, before ``fit`` donates the buffers to the next epoch.
    """

    def __init__(self, model: Layer, loss: Loss, x_probe, y_probe, *, every: int = 1,
                 optimizer: Optimizer | None = None, grad_mode: str = "auto"):
        grad_mode = resolve_grad_mode(grad_mode, name="recorder")
        self.model, self.loss, self.optimizer, self.grad_mode = model, loss, optimizer, grad_mode
        self.every = check_positive_int("recorder", "every", every)
        self.x_probe, self.y_probe = jnp.asarray(x_probe), jnp.asarray(y_probe)
        self.records: list[Record] = []
        self.__name__ = "diagnostics.recorder"

    def __call__(self, epoch: int, train_state, record: dict | None = None) -> None:
        if epoch % self.every:
            return None
        rep = layer_report(self.model, self.loss, train_state.params, train_state.state, self.x_probe,
                           self.y_probe, optimizer=self.optimizer,
                           opt_state=train_state.opt_state if self.optimizer is not None else None,
                           grad_mode=self.grad_mode)
        self.records.append(Record(int(epoch), int(train_state.step), rep))
        return None

    def grad_norms(self) -> dict[str, list[float]]:
        """Per layer with parameters (``"[i] name"``): its gradient norm at each record."""
        out: dict[str, list[float]] = {}
        for r in self.records:
            for s in r.report.layers:
                if s.grad_norm is not None:
                    out.setdefault(f"[{s.index}] {s.name}", []).append(s.grad_norm)
        return out

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"Recorder(every={self.every}, {len(self.records)} records)"


def recorder(model: Layer, loss: Loss, x_probe, y_probe, *, every: int = 1,
             optimizer: Optimizer | None = None, grad_mode: str = "auto") -> Recorder:
    """A ``fit`` callback recording ``layer_report`` on (x_probe, y_probe) every `every` epochs.

    Args:
      model, loss: as given to ``fit``.
      x_probe: (N, ...) a fixed probe batch (a few hundred examples); y_probe: its targets.
      every: record after epochs every, 2·every, ...
      optimizer: pass ``fit``'s optimizer to also record update/parameter ratios (computed
        from the TrainState's optimizer state; nothing is changed).
      grad_mode: gradient mode of the report: "auto" (default, the gradient ``fit`` uses),
        "autodiff", "manual" or "custom_vjp".

    Example::

        rec = diagnostics.recorder(model, loss, x_val[:256], y_val[:256], every=1)
        ts, history = fit(model, loss, opt, data, epochs=5, batch_size=128, key=key, callbacks=[rec])
        fnn.plot.plot_grad_norms(rec, "grad_norms.png")
    """
    return Recorder(model, loss, x_probe, y_probe, every=every, optimizer=optimizer, grad_mode=grad_mode)


def _is_history(obj) -> bool:
    """A ``fnn.train.History`` (duck-typed: train imports this module, not the other way round)."""
    return hasattr(obj, "steps") and hasattr(obj, "layer_names") and hasattr(obj, "stop_reason")


def records_to_series(records) -> tuple[list[int], dict[str, list[float]], dict[str, list[float]]]:
    """(x axis, grad norms per layer, update ratios per layer) from a Recorder, a list of
    ``Record`` or a list of ``Report`` (x = record index then), or a ``History`` from
    ``fit(record_every=N)`` (x = global step); layers without parameters are left out."""
    if _is_history(records):
        xs = [r["step"] for r in records.steps]
        grads = {name: [r["layer_grad_norms"][i] for r in records.steps]
                 for i, name in enumerate(records.layer_names)}
        ratios = {name: [r["layer_update_ratios"][i] for r in records.steps]
                  for i, name in enumerate(records.layer_names)}
        return xs, grads, ratios
    if isinstance(records, Recorder):
        records = records.records
    records = list(records)
    xs, grads, ratios = [], {}, {}
    for i, r in enumerate(records):
        rep = r.report if isinstance(r, Record) else r
        xs.append(r.epoch if isinstance(r, Record) else i)
        for s in rep.layers:
            if s.grad_norm is None:
                continue
            label = f"[{s.index}] {s.name}"
            grads.setdefault(label, []).append(s.grad_norm)
            if s.update_ratio is not None:
                ratios.setdefault(label, []).append(s.update_ratio)
    return xs, grads, ratios


__all__ = [
    "VANISHING_RATIO", "EXPLODING_GROWTH", "LOSS_SPIKE", "DEAD_FRACTION", "SATURATION_FRACTION",
    "TANH_SATURATION", "SIGMOID_SATURATION", "OVERFIT_FRACTION",
    "LayerStats", "Report", "Verdict", "OverfitResult", "Record", "Recorder",
    "ACTIVATION_FIELDS", "activation_probe",
    "sublayers", "layer_report", "format_report", "detect_vanishing", "detect_exploding",
    "detect_dead_units", "detect_saturation", "overfit_one_batch", "recorder", "records_to_series",
]
