"""``format_report``: a report as a text table, with the detectors' verdicts."""

from __future__ import annotations

from fnn.diagnostics.detectors import detect_dead_units, detect_saturation, detect_vanishing
from fnn.diagnostics.report import Report


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
