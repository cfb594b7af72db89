"""Detectors with documented thresholds: vanishing and exploding gradients, dead and saturated units.

Each returns a ``Verdict`` (truthy when the problem is detected, with a one-line message). The
thresholds are module constants and arguments of the detectors. They read a ``Report`` from
``layer_report`` or a ``History`` recorded with a ``StepRecorder`` (its last per-step record).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from fnn.diagnostics.recorder import Record, Recorder
from fnn.diagnostics.report import LayerStats, Report
from fnn.diagnostics.sanity import OverfitResult
from fnn.train import History

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
    if not (math.isfinite(first.grad_norm) and math.isfinite(last.grad_norm)):  # type: ignore[arg-type]  # layers with grad_norm None were filtered out
        return Verdict(False, "vanishing gradients: non-finite gradient norms (see detect_exploding)",
                       None, ratio)
    if last.grad_norm == 0.0:
        return Verdict(False, f"vanishing gradients: the last layer [{last.index}] {last.name} has a zero "
                              f"gradient, nothing to compare with", None, ratio)
    r = first.grad_norm / last.grad_norm  # type: ignore[operator]
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
    if isinstance(obj, History) and obj.steps:  # per-step records from a StepRecorder
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


def detect_exploding(history_or_norms: Any, *, growth: float = EXPLODING_GROWTH,
                     loss_spike: float = LOSS_SPIKE) -> Verdict:
    """Exploding gradients or divergence over training.

    Flagged when any of: a NaN/Inf gradient norm or loss (or ``fit`` stopped on one, as its
    ``History.stop_reason`` says); the gradient norm rises above ``growth`` (default 100)
    times its first value; the loss rises above ``loss_spike`` (default 10) times its first
    value.

    Args:
      history_or_norms: a ``fnn.train.History`` (its per-step records from
        a ``StepRecorder`` when there are any, else per-epoch ``grad_norm`` and ``train_loss``),
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
    return _last_step_layers(report_or_history) if isinstance(report_or_history, History) else report_or_history.layers


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
    `report` may also be a ``History`` from a ``StepRecorder``: its last per-step record."""
    return _worst_layer(report, "dead_fraction", fraction, "dead units: no ReLU layer", "DEAD units",
                        "no dead-unit problem", "dead units")


def detect_saturation(report: Report, *, fraction: float = SATURATION_FRACTION) -> Verdict:
    """Saturated sigmoid/tanh: some such layer has more than ``fraction`` (default 50%) of its
    outputs in the flat region (see ``LayerStats.saturated_fraction``). `report` may also be a
    ``History`` from a ``StepRecorder``: its last per-step record."""
    return _worst_layer(report, "saturated_fraction", fraction, "saturation: no sigmoid or tanh layer",
                        "SATURATED units", "no saturation problem", "saturated outputs")
