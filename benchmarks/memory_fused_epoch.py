"""Peak memory of one fused training epoch of simple_cnn (batch 128 by default), on the host.

    python benchmarks/memory_fused_epoch.py [--limit N] [--batch-size 128] [--sizes 3000,60000]

Each size runs in a fresh subprocess, so that process's peak resident set (``ru_maxrss``)
belongs to this measurement alone. It reports two kinds of figures:

- XLA's ``memory_analysis()`` of the compiled programs ``fit`` runs: the fused epoch (one call
  per epoch, ``lax.scan`` over the steps) and, for comparison, the per-step program
  (``fit(fused=False)``). Arguments, outputs, aliased (donated) bytes and the temporaries XLA
  allocates while the program runs.
- The process's peak RSS at each stage: after importing, after putting the data on the device,
  after compiling, and after the epoch. The growth during the epoch is what running it cost.

The fused epoch draws its permutation on the device and scans over the (steps, batch) index
array (``fnn.data.epoch_indices``), gathering each batch inside the scan, so its temporaries
stay those of one step whatever N is (36 MB for simple_cnn at batch 128, N = 3000 or 60000;
gathering the whole shuffled set before the scan, as fnn did before, took 358 MB at 60000).
It is a benchmark: it prints, and asserts nothing.
Data: Fashion-MNIST when it is installed (60000 training images), else the embedded sample
(3000); ``--sizes`` takes the first N images of it (repeated if N is larger).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MB = 1 << 20


def _peak_rss_bytes() -> int:
    """ru_maxrss of this process: kilobytes on Linux, bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _analysis(compiled) -> dict:
    ma = compiled.memory_analysis()
    if ma is None:
        return {}
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
              "temp_size_in_bytes", "generated_code_size_in_bytes")
    return {f.replace("_size_in_bytes", ""): int(getattr(ma, f, 0) or 0) for f in fields}


def measure(n: int, batch_size: int) -> dict:
    """One fused epoch of simple_cnn on n images, in this process."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fnn import data, losses, models, optim
    from fnn.train import init_train_state, resolve_grad_mode
    from fnn.train.epoch import programs as fit_programs
    from fnn.train.epoch import zero_sums
    from fnn.train.state import copy_tree

    stages = {"imported": _peak_rss_bytes()}
    ds = data.load_fashion_mnist(download=False, verbose=False)
    x, y = ds.train
    reps = -(-n // len(x))
    x, y = np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n]
    x = data.Standardizer.fit(x, per="global").apply(x)  # float32 on the device
    y = jnp.asarray(y)
    jax.block_until_ready((x, y))
    stages["data on device"] = _peak_rss_bytes()

    model, loss, opt = models.simple_cnn(), losses.softmax_cross_entropy, optim.adam(1e-3)
    mode = resolve_grad_mode("auto")
    # As fit does: one buffer per leaf, since the epoch donates them (adam's m and v share zeros).
    ts = copy_tree(init_train_state(model, opt, x.shape[1:], key=jax.random.key(0)))
    scale = jnp.ones((), jnp.float32)
    programs = fit_programs(model, loss, opt, None, mode, batch_size, "drop")
    t = time.perf_counter()
    epoch = programs.epoch.lower(ts, x, y, scale).compile()
    compile_s = time.perf_counter() - t
    xb = jax.ShapeDtypeStruct((batch_size,) + x.shape[1:], x.dtype)
    yb = jax.ShapeDtypeStruct((batch_size,), y.dtype)
    mb = jax.ShapeDtypeStruct((batch_size,), x.dtype)
    step = programs.step.lower((ts, zero_sums()), (xb, yb, mb), scale).compile()
    stages["compiled"] = _peak_rss_bytes()

    t = time.perf_counter()
    ts, acc, _ = epoch(ts, x, y, scale)
    jax.block_until_ready((ts, acc))
    epoch_s = time.perf_counter() - t
    stages["after one epoch"] = _peak_rss_bytes()
    params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(ts.params))
    return {"n": n, "batch_size": batch_size, "steps": n // batch_size, "grad_mode": mode,
            "source": ds.source, "params": params, "data_bytes": int(x.nbytes + y.nbytes),
            "fused_epoch": _analysis(epoch), "per_step": _analysis(step), "peak_rss": stages,
            "compile_seconds": compile_s, "epoch_seconds": epoch_s,
            "train_loss": float(acc.loss) / max(int(acc.count), 1), "jax": jax.__version__,
            "backend": jax.default_backend()}


def _report(r: dict) -> None:
    print(f"\nsimple_cnn ({r['params']:,} parameters), one fused epoch: N={r['n']}, "
          f"batch {r['batch_size']}, {r['steps']} steps, grad_mode {r['grad_mode']}, "
          f"data from {r['source']}, {r['backend']} (jax {r['jax']})")
    print(f"  training set on the device: {r['data_bytes'] / MB:8.1f} MB")
    for name in ("fused_epoch", "per_step"):
        a = r[name]
        if not a:
            print(f"  {name}: memory_analysis() not available")
            continue
        print(f"  {name + ' program':20s} arguments {a['argument'] / MB:8.1f} MB, "
              f"outputs {a['output'] / MB:6.1f} MB (aliased {a['alias'] / MB:6.1f} MB), "
              f"temporaries {a['temp'] / MB:8.1f} MB, "
              f"code {a['generated_code'] / MB:5.1f} MB")
    s = r["peak_rss"]
    print("  peak RSS: " + ", ".join(f"{k} {v / MB:.0f} MB" for k, v in s.items()))
    print(f"  growth of the peak RSS during the epoch: {(s['after one epoch'] - s['compiled']) / MB:.0f} MB; "
          f"since the data was on the device: {(s['after one epoch'] - s['data on device']) / MB:.0f} MB")
    print(f"  compile {r['compile_seconds']:.1f} s, epoch {r['epoch_seconds']:.1f} s "
          f"({r['n'] / max(r['epoch_seconds'], 1e-9):.0f} images/s), train loss {r['train_loss']:.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None,
                        help="comma-separated training-set sizes (default: 3000 and the full training set)")
    parser.add_argument("--limit", type=int, default=None, help="a single size (same as --sizes N)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="also print one JSON line per size")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:  # the measuring subprocess
        print(json.dumps(measure(args.child, args.batch_size)), flush=True)
        return 0

    if args.limit is not None:
        sizes = [args.limit]
    elif args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        from fnn import data
        full = len(data.load_fashion_mnist(download=False, verbose=False).train[0])
        sizes = sorted({min(3000, full), full})
    for n in sizes:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n),
               "--batch-size", str(args.batch_size)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"N={n}: the measuring process failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        _report(r)
        if args.json:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
