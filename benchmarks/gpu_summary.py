"""The goals of an accelerator run, met or missed, from the files gpu_run.sh wrote.

    python benchmarks/gpu_summary.py DIR        # reads DIR/checks.jsonl and DIR/bench.jsonl

Prints Markdown: the correctness checks, then every goal with its figure and MET / MISSED /
NOT MEASURED. Goals (per 60,000-image epoch, batch 128; ``wide`` batch 512):

- cnn: ``fnn-fused`` epoch <= 0.10 s; mlp: ``fnn-fused`` epoch <= 0.02 s;
- wide bf16: ``fnn-fused`` >= 400 TFLOP/s; bf16 >= 1.5x float32 on ``wide`` (epoch time);
- the fused epoch >= 3x the per-step loop (``fnn-step``), per workload;
- ``grad_mode="auto"`` (``fnn-fused``) is the fastest of the three modes (within 5%);
- ``vmap_search`` of 16 configurations >= 4x 16 sequential ``fit`` calls.

A quick run (``--quick``, CPU smoke test) is summarized the same way; its figures mean nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def row(bench: list[dict], impl: str, workload: str, precision: str = "float32") -> dict | None:
    for r in bench:
        if (r.get("impl"), r.get("workload"), r.get("precision", "float32")) == (impl, workload, precision) \
                and "error" not in r:
            return r
    return None


REFS = ("stax", "equinox", "flax-nnx", "torch-eager", "torch-compile")
EXPECTED = ([("cnn", i, "float32") for i in ("fnn-fused", "fnn-step", "fnn-manual-fused", "fnn-autodiff-fused") + REFS]
            + [("wide", i, p) for p in ("float32", "bfloat16") for i in ("fnn-fused", "fnn-step") + REFS]
            + [("mlp", i, "float32") for i in ("fnn-fused", "fnn-step", "fnn-manual-fused") + REFS])
"""(workload, impl, precision) of every row a full gpu_run.sh run measures."""


def missing_rows(bench: list[dict]) -> list[str]:
    """The rows of EXPECTED that no record holds (a stage cut short by its time limit, say)."""
    have = {(r.get("workload"), r.get("impl"), r.get("precision", "float32")) for r in bench}
    return [f"{i} on {w} ({p})" for w, i, p in EXPECTED if (w, i, p) not in have]


def verdict(ok: bool | None) -> str:
    return "NOT MEASURED" if ok is None else "MET" if ok else "MISSED"


def goals(bench: list[dict], checks: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(goal, figure, verdict) per goal of the GPU issue."""
    out = []

    def epoch_goal(workload, limit):
        r = row(bench, "fnn-fused", workload)
        fig = f"{r['epoch_s']:.3f} s" if r else "-"
        out.append((f"{workload}: fnn-fused epoch <= {limit} s", fig, verdict(r and r["epoch_s"] <= limit)))

    epoch_goal("cnn", 0.10)
    epoch_goal("mlp", 0.02)
    r = row(bench, "fnn-fused", "wide", "bfloat16")
    tf = r.get("tflops") if r else None
    out.append(("wide bf16: fnn-fused >= 400 TFLOP/s", f"{tf:.0f} TFLOP/s" if tf else "-",
                verdict(None if tf is None else tf >= 400)))
    f32, b16 = row(bench, "fnn-fused", "wide"), row(bench, "fnn-fused", "wide", "bfloat16")
    ratio = f32["epoch_s"] / b16["epoch_s"] if f32 and b16 else None
    out.append(("wide: bf16 >= 1.5x float32 (fnn-fused epoch)",
                f"{f32['epoch_s']:.3f} / {b16['epoch_s']:.3f} s = {ratio:.2f}x" if ratio else "-",
                verdict(None if ratio is None else ratio >= 1.5)))
    for w in ("cnn", "mlp", "wide"):
        fused, step = row(bench, "fnn-fused", w), row(bench, "fnn-step", w)
        if fused and step:
            ratio = step["epoch_s"] / fused["epoch_s"]
            out.append((f"{w}: fused epoch >= 3x the per-step loop",
                        f"{step['epoch_s']:.3f} / {fused['epoch_s']:.3f} s = {ratio:.2f}x", verdict(ratio >= 3.0)))
    for w in ("cnn", "mlp", "wide"):
        modes = {name: row(bench, name, w) for name in ("fnn-fused", "fnn-manual-fused", "fnn-custom_vjp-fused",
                                                         "fnn-autodiff-fused")}
        modes = {k: v for k, v in modes.items() if v}
        if len(modes) >= 2 and "fnn-fused" in modes:
            best = min(modes, key=lambda k: modes[k]["epoch_s"])
            auto = modes["fnn-fused"]
            ok = auto["epoch_s"] <= 1.05 * modes[best]["epoch_s"]
            figs = ", ".join(f"{v.get('grad_mode', k)} {v['epoch_s']:.3f} s" for k, v in modes.items())
            out.append((f"{w}: grad_mode='auto' picks the fastest mode (within 5%)", figs, verdict(ok)))
    v = checks.get("vmap_search")
    if v and "speedup" in v:
        out.append(("vmap_search of 16 configs >= 4x 16 sequential fits (training seconds, vmapped vs vectorize=False)",
                    f"{v['sequential_s']:.2f} / {v['vmap_s']:.2f} s = {v['speedup']:.2f}x "
                    f"(wall with compilation: {v['wall_speedup']:.2f}x)", verdict(v["speedup"] >= 4.0)))
    else:
        out.append(("vmap_search of 16 configs >= 4x 16 sequential fits", "-", verdict(None)))
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    folder = Path(argv[0])
    checks = {c["check"]: c for c in read_jsonl(folder / "checks.jsonl")}
    bench = read_jsonl(folder / "bench.jsonl")
    quick = any(c.get("quick") for c in checks.values()) or any(r.get("quick") for r in bench)
    print(f"# Accelerator run summary{' (QUICK smoke run: figures mean nothing)' if quick else ''}\n")
    print("| check | result | figures |\n|---|---|---|")
    for name, c in checks.items():
        result = "error" if "error" in c else verdict(c.get("ok")) if c.get("ok") is not None else "measured"
        result = {"MET": "ok", "MISSED": "FAILED"}.get(result, result)
        figs = c.get("error") or ", ".join(f"{k} {c[k]:.3g}" if isinstance(c[k], float) else f"{k} {c[k]}"
                                           for k in ("steps4_rel_err", "rel_err", "bitwise", "loss_rel_err",
                                                     "rerun_rel_err", "speedup", "epoch_s") if k in c)
        if name == "grads" and "rows" in c:
            worst = {p: max(r["grad_rel_err"] for r in c["rows"] if r["precision"] == p)
                     for p in ("highest", "default")}
            figs = (f"worst rel err: {worst['highest']:.1e} at 'highest' (tol 1e-4), "
                    f"{worst['default']:.1e} at default (tol 2e-2)")
        print(f"| {name} | {result} | {figs} |")
    failed_rows = [r for r in bench if "error" in r]
    print(f"\n{len(bench)} benchmark rows, {len(failed_rows)} failed"
          + "".join(f"\n- failed: {r['impl']} on {r['workload']}: {r['error'][:120]}" for r in failed_rows))
    if not quick:
        missing = missing_rows(bench)
        print(f"\n{len(missing)} rows not measured" + "".join(f"\n- {m}" for m in missing))
    print("\n| goal | figure | verdict |\n|---|---|---|")
    for goal, fig, v in goals(bench, checks):
        print(f"| {goal} | {fig} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
