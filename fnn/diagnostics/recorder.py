"""``recorder``: a ``fit`` callback taking a ``layer_report`` on a probe batch every N epochs, and
``records_to_series`` reading what it (or a ``StepRecorder``) recorded."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from fnn.backprop import resolve_grad_mode
from fnn.core import Layer, Loss, Optimizer, check_positive_int
from fnn.diagnostics.report import Report, layer_report
from fnn.train import Callback, History
from fnn.typing import DataArray


class Record(NamedTuple):
    """One recorded report: after `epoch` (0 = before training), at global `step`."""

    epoch: int
    step: int
    report: Report


class Recorder(Callback):
    """A ``fit`` callback: ``layer_report`` on a fixed probe batch at the end of every N-th epoch.

    Use ``diagnostics.recorder(...)`` to make one, pass it in ``fit(..., callbacks=[rec])``,
    then read ``rec.records`` (a list of ``Record``), ``rec.grad_norms()`` or plot them with
    ``fnn.plot.plot_grad_norms(rec, path)``. Call ``rec(0, ts)`` yourself on the initial
    TrainState to record the start. The statistics are computed (and copied to the host)
    inside the callback, before ``fit`` donates the buffers to the next epoch.
    """

    def __init__(self, model: Layer, loss: Loss, x_probe: DataArray, y_probe: DataArray, *, every: int = 1,
                 optimizer: Optimizer | None = None, grad_mode: str = "auto"):
        grad_mode = resolve_grad_mode(grad_mode, name="recorder")
        self.model, self.loss, self.optimizer, self.grad_mode = model, loss, optimizer, grad_mode
        self.every = check_positive_int("recorder", "every", every)
        self.x_probe, self.y_probe = jnp.asarray(x_probe), jnp.asarray(y_probe)
        self.records: list[Record] = []
        self.__name__ = "diagnostics.recorder"

    def on_epoch_end(self, run: Any) -> None:
        self(run.epoch, run.ts)

    def __call__(self, epoch: int, train_state: Any, record: dict | None = None) -> None:
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


def recorder(model: Layer, loss: Loss, x_probe: DataArray, y_probe: DataArray, *, every: int = 1,
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




def records_to_series(records: Any) -> tuple[list[int], dict[str, list[float]], dict[str, list[float]]]:
    """(x axis, grad norms per layer, update ratios per layer) from a Recorder, a list of
    ``Record`` or a list of ``Report`` (x = record index then), or a ``History`` from
    a ``StepRecorder`` (x = global step); layers without parameters are left out."""
    if isinstance(records, History):
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
