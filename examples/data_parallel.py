"""Data-parallel training over a device mesh: the same numbers as one device, split 8 ways.

    python examples/data_parallel.py                    # simple_cnn, 1 epoch on 2048 images
    python examples/data_parallel.py --model mlp --examples 8192
    python examples/data_parallel.py --quick            # mlp, 1024 images of the embedded sample: seconds

On a machine with one device (a plain CPU) the script re-executes itself with 8 fake CPU
devices (XLA_FLAGS=--xla_force_host_platform_device_count=8), which shows the mechanics, not a
speed-up: the 8 "devices" share the same cores. On a machine with several GPUs or TPUs it uses
them all. It trains once with ``fit(..., mesh=fnn.parallel.data_mesh())`` and once on one
device from the same key, and prints the per-device batch shape and the largest difference.
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

FAKE_DEVICES = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the mlp on 1024 images of the embedded sample, whatever data is installed")
    parser.add_argument("--model", choices=("simple_cnn", "mlp"), default=None,
                        help="default simple_cnn, or mlp with --quick")
    parser.add_argument("--examples", type=int, default=None,
                        help="training examples (a slice); default 2048, or 1024 with --quick")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    args.model = args.model or ("mlp" if args.quick else "simple_cnn")
    args.examples = args.examples or (1024 if args.quick else 2048)

    if len(jax.devices()) == 1 and not os.environ.get("FNN_EXAMPLE_CHILD"):
        flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={FAKE_DEVICES}"
        env = dict(os.environ, FNN_EXAMPLE_CHILD="1", XLA_FLAGS=flags.strip())
        if jax.default_backend() == "cpu":
            print(f"one device: re-running with {FAKE_DEVICES} fake CPU devices", flush=True)
            os.execve(sys.executable, [sys.executable, *sys.argv], env)

    from fnn import data, losses, models, optim, parallel
    from fnn.train import fit

    ds = data.load_sample() if args.quick else data.load_fashion_mnist(download=False, verbose=False)
    (x, y), (x_test, y_test) = ds.train, ds.test
    x, y = x[: args.examples], y[: args.examples]
    scaler = data.Standardizer.fit(x, per="global")
    x, x_test = np.asarray(scaler.apply(x)), np.asarray(scaler.apply(x_test[:2000]))
    y_test = y_test[:2000]
    if args.model == "mlp":
        model, x, x_test = models.mlp((784, 256, 10)), x.reshape(len(x), -1), x_test.reshape(len(x_test), -1)
    else:
        model = models.simple_cnn()

    mesh = parallel.data_mesh()
    dp = parallel.data_parallel(mesh, "data", batch_size=args.batch_size)
    shards = dp.put_batch(x[: args.batch_size]).addressable_shards
    print(f"{ds.source}: {len(x)} training images; mesh {dict(mesh.shape)} over {jax.default_backend()}; "
          f"a batch of {args.batch_size} is {len(shards)} shards of shape {shards[0].data.shape}")

    kw = {"epochs": 1, "batch_size": args.batch_size, "key": jax.random.key(0), "val_data": (x_test, y_test)}
    runs = {}
    for name, mesh_arg in (("mesh", mesh), ("one device", None)):
        t0 = time.perf_counter()
        ts, history = fit(model, losses.softmax_cross_entropy, optim.adam(1e-3), (x, y), mesh=mesh_arg, **kw)
        runs[name] = ts
        leaf = jax.tree.leaves(ts.params)[0]
        print(f"{name:>10}: val accuracy {history.val_accuracy[-1]:.4f}, "
              f"train loss {history.train_loss[-1]:.4f}, "
              f"{time.perf_counter() - t0:.1f} s (compile {history.compile_seconds:.1f} s); params on "
              f"{len(leaf.sharding.device_set)} device(s)")
    pairs = zip(jax.tree.leaves(runs["mesh"].params), jax.tree.leaves(runs["one device"].params), strict=True)
    diffs = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel() for a, b in pairs])
    # The mesh sums each gradient in another order: ~1e-7 apart after one step. Training then
    # amplifies such rounding differences (adam most where a gradient is near zero).
    print(f"|params(mesh) - params(one device)|: median {np.median(diffs):.1e}, largest {diffs.max():.1e}")


if __name__ == "__main__":
    main()
