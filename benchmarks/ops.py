"""Per-op speed of simple_cnn's layers on this machine, in GFLOP/s next to its own sgemm ceiling.

    python benchmarks/ops.py                 # batch 128, every op, PyTorch rows when torch is installed
    python benchmarks/ops.py --quick         # batch 16, fewer repeats (a smoke run)
    python benchmarks/ops.py --json ops.jsonl

Why: fnn's CPU speed rests on how fast XLA:CPU runs each convolution, and that differs by
machine (vector extensions, core count). Each row is one op of ``fnn.models.simple_cnn`` at
its real shape (batch 128; conv1 28x28x1 -> 32, conv2 14x14x32 -> 64, 3x3 SAME; dense1
3136 -> 128), in every formulation fnn has for it:

- ``fwd``: ``Conv.apply``'s convolution (NHWC x HWIO);
- ``dx``: the input gradient, ``fnn.layers.conv._input_grad`` (every grad mode uses it);
- ``dw textbook``: ``conv._weight_grad`` (the hand derivation gradcheck checks), the form autodiff emits;
- ``dw fast``: ``fnn.layers._fast_cpu.conv_weight_grad`` (what training on CPU runs, every grad mode but autodiff);
- ``jax.vjp``: what autodiff computes for (dx, dw) together.

Each is compiled as fnn compiles its programs (``fnn._compile.jit``: on CPU, convolutions to
XLA's own kernels rather than YNNPACK) and, for comparison, with a plain ``jax.jit`` ("xla
default"), and timed alone and inside a ``lax.scan`` over ``--scan`` steps (the fused epoch
runs every op there, and XLA:CPU may choose other layouts inside a loop): the best of
``--repeats`` calls (at least 3, fewer once one op has taken 3 s). ``x sgemm`` is the
machine's sgemm rate (a jitted ``jnp.dot`` of two 2048x2048 float32 matrices, the best of its
runs) over the op's rate: 1.0 is matmul speed. The PyTorch rows (``torch.nn.functional.conv2d``
and ``torch.nn.grad``) run the same shapes with ``torch.get_num_threads()`` threads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from machine import header_lines  # noqa: E402

from fnn import _compile  # noqa: E402
from fnn.layers import _fast_cpu  # noqa: E402
from fnn.layers._geometry import conv_dims, window_slice  # noqa: E402
from fnn.layers.conv import _input_grad, _weight_grad  # noqa: E402


def weight_grad_shifted(xp, dy, kernel, stride, dilation, pads):
    """A formulation measured and not used (slower than ``_fast_cpu.conv_weight_grad`` on the
    machines measured): dw as one matmul per kernel window offset, dw[k] = x_k (N·O, C_in)ᵀ ·
    dy (N·O, C_out), x_k the strided slice of x_pad at offset k·d."""
    out, c_in, c_out = dy.shape[1:-1], xp.shape[-1], dy.shape[-1]
    xpad = lax.pad(xp, jnp.zeros((), xp.dtype), ((0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)))
    dy2 = dy.reshape(-1, c_out)
    dws = [lax.dot_general(window_slice(xpad, [j * d for j, d in zip(offset, dilation, strict=True)], out, stride)
                           .reshape(-1, c_in), dy2, (((0,), (0,)), ((), ())))
           for offset in itertools.product(*(range(k) for k in kernel))]
    return jnp.stack(dws).reshape(*kernel, c_in, c_out)


class ConvShape(NamedTuple):
    name: str
    size: int     # square input, SAME padding, stride 1
    c_in: int
    c_out: int
    k: int = 3


CONVS = (ConvShape("conv1", 28, 1, 32), ConvShape("conv2", 14, 32, 64))
DENSE = ("dense1", 3136, 128)


def best_seconds(f, args, repeats: int, budget_s: float = 3.0) -> float:
    """The fastest of ``repeats`` synchronized calls (at least 3; fewer past ``budget_s`` seconds),
    after one call to compile and warm up."""
    jax.block_until_ready(f(*args))
    best, start = float("inf"), time.perf_counter()
    for i in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t)
        if i >= 2 and time.perf_counter() - start > budget_s:
            break
    return best


def in_scan(op, jit):
    """op applied to each slice of stacked arguments inside one ``lax.scan`` (as in a fused epoch)."""
    def run(*stacked):
        def body(carry, args):
            return carry, op(*args)
        return lax.scan(body, 0.0, stacked)[1]
    return jit(run)


COMPILERS = {"fnn": _compile.jit, "xla default": jax.jit}
"""fnn's programs compile with ``fnn._compile.jit`` (convolutions to XLA's own kernels, not
YNNPACK, on CPU); "xla default" is a plain ``jax.jit``."""


def sgemm_ceiling(repeats: int, n: int = 2048) -> float:
    """GFLOP/s of a jitted float32 ``jnp.dot`` of two n x n matrices (the best run)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    return 2 * n ** 3 / best_seconds(jax.jit(jnp.dot), (a, b), max(3, repeats // 2)) / 1e9


def conv_ops(s: ConvShape, batch: int) -> tuple[dict, tuple, float]:
    """The formulations of one SAME stride-1 conv, their arguments and the FLOPs of one of them."""
    nd, pads, one = 2, [(s.k // 2, s.k // 2)] * 2, (1, 1)
    rem = [0, 0]
    kx, kw, ky = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(kx, (batch, s.size, s.size, s.c_in), jnp.float32)
    w = jax.random.normal(kw, (s.k, s.k, s.c_in, s.c_out), jnp.float32)
    dy = jax.random.normal(ky, (batch, s.size, s.size, s.c_out), jnp.float32)

    def fwd(x, w, dy):
        return lax.conv_general_dilated(x, w, one, pads, dimension_numbers=conv_dims(nd))

    def vjp(x, w, dy):
        return jax.vjp(fwd, x, w, dy)[1](dy)[:2]

    ops = {
        "fwd": fwd,
        "dx": lambda x, w, dy: _input_grad(dy, w, one, one, pads, rem),
        "dw textbook": lambda x, w, dy: _weight_grad(x, dy, (s.k, s.k), one, one, pads, rem),
        "dw fast": lambda x, w, dy: _fast_cpu.conv_weight_grad(x, dy, (s.k, s.k), one, one, pads, rem),
        "dw patches": lambda x, w, dy: _fast_cpu._weight_grad_patches(x, dy, (s.k, s.k), one, one, pads),
        "dw shifted": lambda x, w, dy: weight_grad_shifted(x, dy, (s.k, s.k), one, one, pads),
        "jax.vjp (dx+dw)": vjp,
    }
    flops = 2 * batch * s.size ** 2 * s.c_out * s.k ** 2 * s.c_in
    return ops, (x, w, dy), flops


def check_weight_grads(layer: str, ops: dict, args: tuple) -> None:
    """Every dw formulation equals the textbook one (relative 1e-4 in float32) before it is timed."""
    want = jax.jit(ops["dw textbook"])(*args)
    for name in ("dw fast", "dw patches", "dw shifted"):
        got = jax.jit(ops[name])(*args)
        err = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
        if not err <= 1e-4:
            raise SystemExit(f"ops.py: {layer} {name} differs from the textbook dw: relative error {err:.2e}")


def dense_ops(batch: int) -> tuple[dict, tuple, float]:
    _, n_in, n_out = DENSE
    kx, kw, ky = jax.random.split(jax.random.key(2), 3)
    x = jax.random.normal(kx, (batch, n_in), jnp.float32)
    w = jax.random.normal(kw, (n_in, n_out), jnp.float32)
    dy = jax.random.normal(ky, (batch, n_out), jnp.float32)
    ops = {"fwd": lambda x, w, dy: x @ w, "dx": lambda x, w, dy: dy @ w.T, "dw": lambda x, w, dy: x.T @ dy}
    return ops, (x, w, dy), 2 * batch * n_in * n_out


def measure_jax(layer: str, ops: dict, args: tuple, flops: float, steps: int, repeats: int,
                ceiling: float, compilers: dict) -> list[dict]:
    rows = []
    stacked = tuple(jnp.stack([a] * steps) for a in args)
    for op_name, op in ops.items():
        op_flops = 2 * flops if op_name.startswith("jax.vjp") else flops
        for impl, jit in compilers.items():
            for where, f, a, n in (("alone", jit(op), args, 1), ("scan", in_scan(op, jit), stacked, steps)):
                sec = best_seconds(f, a, repeats) / n
                gflops = op_flops / sec / 1e9
                rows.append({"layer": layer, "op": op_name, "impl": impl, "where": where, "ms": sec * 1e3,
                             "gflops": gflops, "x_sgemm": ceiling / gflops})
                print(f"  {layer} {op_name} {impl} {where}: {sec * 1e3:.2f} ms", file=sys.stderr, flush=True)
    return rows


def measure_torch(s: ConvShape, batch: int, repeats: int, ceiling: float) -> list[dict]:
    try:
        import torch
    except ImportError:
        return []
    from torch.nn import grad as tgrad
    x = torch.randn(batch, s.c_in, s.size, s.size)
    w = torch.randn(s.c_out, s.c_in, s.k, s.k)
    dy = torch.randn(batch, s.c_out, s.size, s.size)
    pad = s.k // 2
    ops = {"fwd": lambda: torch.nn.functional.conv2d(x, w, padding=pad),
           "dx": lambda: tgrad.conv2d_input(x.shape, w, dy, padding=pad),
           "dw": lambda: tgrad.conv2d_weight(x, w.shape, dy, padding=pad)}
    flops = 2 * batch * s.size ** 2 * s.c_out * s.k ** 2 * s.c_in
    rows = []
    with torch.no_grad():
        for op_name, f in ops.items():
            f()
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                f()
                best = min(best, time.perf_counter() - t)
            gflops = flops / best / 1e9
            rows.append({"layer": s.name, "op": op_name, "impl": f"torch ({torch.get_num_threads()} threads)",
                         "where": "eager", "ms": best * 1e3, "gflops": gflops, "x_sgemm": ceiling / gflops})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| layer | op | impl | where | ms | GFLOP/s | x sgemm |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['op']} | {r['impl']} | {r['where']} | {r['ms']:.2f} | "
                     f"{r['gflops']:.1f} | {r['x_sgemm']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--scan", type=int, default=8, help="steps of the lax.scan rows (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="batch 16, 3 repeats, scan of 2 (a smoke run)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--fnn-only", action="store_true", help="only fnn's compiler options, not XLA's defaults too")
    p.add_argument("--json", type=Path, default=None, help="also write one JSON line per row here")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.scan = 16, 3, 2
    print(f"# fnn per-op benchmark: simple_cnn's layers, batch {args.batch}, float32; "
          f"jax {jax.__version__} on {jax.default_backend()}")
    for line in header_lines():
        print(line)
    ceiling = sgemm_ceiling(args.repeats)
    print(f"# sgemm at the start: {ceiling:.1f} GFLOP/s (jnp.dot, 2048x2048 float32, best run)", flush=True)
    compilers = {"fnn": COMPILERS["fnn"]} if args.fnn_only else COMPILERS
    print(f"# fnn's XLA:CPU compiler options: {_compile.cpu_options() or 'none (XLA defaults)'}", flush=True)
    rows = []
    for s in CONVS:
        ops, a, flops = conv_ops(s, args.batch)
        check_weight_grads(s.name, ops, a)
        rows += measure_jax(s.name, ops, a, flops, args.scan, args.repeats, ceiling, compilers)
        rows += [] if args.no_torch else measure_torch(s, args.batch, args.repeats, ceiling)
    ops, a, flops = dense_ops(args.batch)
    rows += measure_jax(DENSE[0], ops, a, flops, args.scan, args.repeats, ceiling, compilers)
    end = sgemm_ceiling(args.repeats)
    if end > ceiling:  # the ratios use the best sgemm rate seen, start or end
        for r in rows:
            r["x_sgemm"] *= end / ceiling
        ceiling = end
    print(f"# sgemm ceiling: {ceiling:.1f} GFLOP/s (the better of the start and the end: {end:.1f})")
    print(table(rows))
    if args.json:
        with args.json.open("w") as f:
            for r in rows:
                f.write(json.dumps({**r, "batch": args.batch, "sgemm_gflops": ceiling}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
