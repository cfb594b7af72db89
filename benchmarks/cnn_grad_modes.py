"""Gradient time of simple_cnn per mode (autodiff / manual / custom_vjp), alone and inside lax.scan.

    python benchmarks/cnn_grad_modes.py [--batch 128] [--steps 5] [--repeats 10] [--hlo] [--dw]

Why: on XLA:CPU, inside ``lax.scan`` (a fused training epoch), the weight-gradient convolution
that autodiff emits is assigned a non-canonical layout and runs on a slow generic path; the
hand-derived backward (fnn.layers.conv) writes it as a canonical NHWC x HWIO convolution.
"Looped" times one SGD step inside a jitted ``lax.scan`` over ``--steps`` batches (time per
step: the median over max(3, ⌈repeats/steps⌉) calls, so at least ``--repeats`` steps are
timed); "one step" times a jitted gradient alone (median of ``--repeats`` calls). Every
function is called once first to compile and warm up. ``--hlo`` prints each convolution of the
compiled looped program with its
dimension labels and layouts (the canonical, fast form reads ``b01f_01io->b01f``). ``--dw`` times
the weight gradient of simple_cnn's second conv alone, written three ways (see _dw_variants).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import time

import jax
import jax.numpy as jnp

from fnn.backprop import MODES, value_and_grad
from fnn.losses import softmax_cross_entropy
from fnn.models import simple_cnn


def _median_time(f, *args, repeats):
    jax.block_until_ready(f(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build(mode, model, state, lr=0.01):
    grad_fn = value_and_grad(model, softmax_cross_entropy, grad_mode=mode)

    def sgd_step(params, batch):
        x, y = batch
        (loss, _), grads = grad_fn(params, state, x, y, train=True)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss

    one = jax.jit(lambda params, x, y: grad_fn(params, state, x, y, train=True)[1])
    looped = jax.jit(lambda params, xs, ys: jax.lax.scan(sgd_step, params, (xs, ys)))
    return one, looped


def conv_lines(compiled_text):
    """The convolutions of an optimized HLO module: output shape{layout} and dim_labels per line."""
    out = []
    for line in compiled_text.splitlines():
        if " convolution(" in line:
            shape = line.split("=", 1)[1].split("convolution(")[0].strip()
            labels = re.search(r"dim_labels=(\S+?)[,\s}]", line + " ")
            out.append(f"{shape:>32}  {labels.group(1) if labels else '?'}")
    return out


def _dw_variants(batch, steps, repeats):
    """dw of a 3x3 SAME conv, x (N, 14, 14, 32), dy (N, 14, 14, 64), alone and summed inside lax.scan.

    canonical: fnn's form, a b01f_01io->b01f conv of transposed operands; roles: the same conv
    with the roles named by dimension_numbers only (what autodiff emits); patches: im2col and a
    matmul.
    """
    from jax import lax

    k1, k2 = jax.random.split(jax.random.key(1))
    xs = jax.random.normal(k1, (steps, batch, 14, 14, 32), jnp.float32)
    dys = jax.random.normal(k2, (steps, batch, 14, 14, 64), jnp.float32)
    nhwc = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
    pads = [(1, 1), (1, 1)]

    def canonical(x, dy):
        dw = lax.conv_general_dilated(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1), pads,
                                      dimension_numbers=nhwc)
        return dw.transpose(1, 2, 0, 3)

    def roles(x, dy):
        return lax.conv_general_dilated(x, dy, (1, 1), pads, dimension_numbers=("CHWN", "IHWO", "HWNC"))

    def patches(x, dy):
        p = lax.conv_general_dilated_patches(x, (3, 3), (1, 1), pads,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.einsum("nhwk,nhwo->ko", p, dy).reshape(32, 3, 3, 64).transpose(1, 2, 0, 3)

    print(f"\nweight gradient of a 3x3 conv 32->64 at 14x14, batch {batch} (ms)")
    print(f"{'form':<12}{'alone':>10}{'in scan/step':>14}")
    for name, f in (("canonical", canonical), ("roles", roles), ("patches", patches)):
        def body(acc, b, f=f):
            return acc + f(*b), None
        one = jax.jit(f)
        loop = jax.jit(lambda xs, dys, body=body: lax.scan(body, jnp.zeros((3, 3, 32, 64)), (xs, dys))[0])
        t_one = _median_time(one, xs[0], dys[0], repeats=repeats)
        t_loop = _median_time(loop, xs, dys, repeats=max(3, math.ceil(repeats / steps))) / steps
        print(f"{name:<12}{1e3 * t_one:>10.1f}{1e3 * t_loop:>14.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="batches per lax.scan")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--hlo", action="store_true", help="print the convolutions of the compiled scan")
    ap.add_argument("--dw", action="store_true", help="also time the weight-gradient conv written three ways")
    args = ap.parse_args()

    model = simple_cnn()
    key = jax.random.key(0)
    k_init, k_x, k_y = jax.random.split(key, 3)
    _, params, state = model.init(k_init, (28, 28, 1))
    xs = jax.random.normal(k_x, (args.steps, args.batch, 28, 28, 1), jnp.float32)
    ys = jax.random.randint(k_y, (args.steps, args.batch), 0, 10)

    print(f"simple_cnn, batch {args.batch}, float32, {jax.devices()[0].platform}, jax {jax.__version__}; "
          f"median of {args.repeats} (ms)")
    print(f"{'mode':<12}{'one step':>12}{'looped/step':>14}{'looped/one':>12}")
    rows = {}
    for mode in MODES:
        one, looped = build(mode, model, state)
        t_one = _median_time(one, params, xs[0], ys[0], repeats=args.repeats)
        calls = max(3, math.ceil(args.repeats / args.steps))
        t_loop = _median_time(looped, params, xs, ys, repeats=calls) / args.steps
        rows[mode] = (t_one, t_loop)
        print(f"{mode:<12}{1e3 * t_one:>12.1f}{1e3 * t_loop:>14.1f}{t_loop / t_one:>12.2f}")
        if args.hlo:
            text = looped.lower(params, xs, ys).compile().as_text()
            for line in conv_lines(text):
                print("    " + line)
    base_one, base_loop = rows["autodiff"]
    for mode in ("manual", "custom_vjp"):
        t_one, t_loop = rows[mode]
        print(f"{mode} / autodiff: one step {t_one / base_one:.2f}x, looped {t_loop / base_loop:.2f}x")
    if args.dw:
        _dw_variants(args.batch, args.steps, args.repeats)


if __name__ == "__main__":
    main()
