"""Gradient and activation diagnostics: per-layer statistics, detectors, a sanity check, recorders.

One probe batch tells a lot about a network's health (Glorot & Bengio 2010; Karpathy's
"recipe for training neural networks"):

- ``layer_report`` (``report``): per layer of a ``serial`` model, the gradient norm of each
  parameter, the update/parameter norm ratio (given an optimizer), the mean and standard
  deviation of the layer's output, the fraction of dead ReLU units and of saturated
  sigmoid/tanh outputs. ``format_report`` (``table``) prints it as a table.
- Detectors with documented thresholds (``detectors``): ``detect_vanishing``,
  ``detect_exploding``, ``detect_dead_units``, ``detect_saturation``.
- ``overfit_one_batch`` (``sanity``): a model that cannot drive the loss on one small batch
  near zero has a bug (a wrong gradient sign, a layer that does not learn, a broken init).
- ``recorder`` (``recorder``): a ``fit`` callback computing the full report (activations
  included) on a fixed probe batch at the end of every N-th epoch.
- ``summary`` (``summarize``): per layer, as a tree, the output shape, parameter count and
  state size, and the totals, from shapes alone (``jax.eval_shape``); ``str()`` is the table.
- ``lr_find`` (``lr_range``): the learning-rate range test, a sweep of exponentially growing
  rates in one compiled scan, with a suggested rate; ``fnn.plot.plot_lr_find`` draws it.
- Per step: ``fit(..., callbacks=[fnn.train.StepRecorder(N)])`` records each layer's gradient
  norm, update ratio and activation statistics (on the training batch, with
  ``activation_probe``) every N steps from inside the fused epoch into ``History.steps``.
  ``fnn.plot.plot_grad_norms`` draws either; the detectors read either.

Typical use::

    report = layer_report(model, losses.softmax_cross_entropy, ts.params, ts.state, x[:256], y[:256])
    print(format_report(report))
    print(detect_vanishing(report))

The model's structure comes from ``Layer.children`` and each layer's ``kind``: nothing is
parsed from names or read from closures.
"""

from fnn.diagnostics.detectors import (
    DEAD_FRACTION,
    EXPLODING_GROWTH,
    LOSS_SPIKE,
    SATURATION_FRACTION,
    VANISHING_RATIO,
    Verdict,
    detect_dead_units,
    detect_exploding,
    detect_saturation,
    detect_vanishing,
)
from fnn.diagnostics.lr_range import RULES, LrFindResult, lr_find
from fnn.diagnostics.recorder import Record, Recorder, recorder, records_to_series
from fnn.diagnostics.report import ACTIVATION_KINDS, LayerStats, Report, layer_report, sublayers
from fnn.diagnostics.sanity import OVERFIT_FRACTION, OverfitResult, overfit_one_batch
from fnn.diagnostics.summarize import Summary, SummaryRow, format_summary, summary, summary_dict
from fnn.diagnostics.table import format_report
from fnn.train.history import ACTIVATION_FIELDS
from fnn.train.probe import SIGMOID_SATURATION, TANH_SATURATION, activation_probe

__all__ = [
    "VANISHING_RATIO", "EXPLODING_GROWTH", "LOSS_SPIKE", "DEAD_FRACTION", "SATURATION_FRACTION",
    "TANH_SATURATION", "SIGMOID_SATURATION", "OVERFIT_FRACTION", "ACTIVATION_KINDS",
    "LayerStats", "Report", "Verdict", "OverfitResult", "Record", "Recorder",
    "ACTIVATION_FIELDS", "activation_probe",
    "sublayers", "layer_report", "format_report", "detect_vanishing", "detect_exploding",
    "detect_dead_units", "detect_saturation", "overfit_one_batch", "recorder", "records_to_series",
    "Summary", "SummaryRow", "summary", "format_summary", "summary_dict", "RULES", "LrFindResult", "lr_find",
]
