"""Hyperparameter search on Fashion-MNIST: random search with fit, then 16 configs at once with vmap.

1. ``random_search`` over the learning rate (log-uniform), the hidden width and the batch
   size of an MLP, each trial trained with ``fit`` and scored on a validation split; the
   table, the JSONL file, and the best config refit and evaluated on the test set.
2. ``vmap_search``: K configs differing in learning rate, weight decay, init scale and seed,
   trained at once as one vmapped, jitted epoch.
3. ``--bench``: the time of (2) against the same K configs one after another (the same
   compiled program without vmap, and K separate ``fit`` calls).

Run:  python examples/hparam_search.py --quick   (3 trials and 4 configs on the embedded sample: seconds)
      python examples/hparam_search.py           (12 trials and 16 configs on Fashion-MNIST: minutes)
      python examples/hparam_search.py --bench --k 16 --model mlp   (the speedup measurement)
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

from fnn import losses, models, optim, search
from fnn.data import Standardizer, load_fashion_mnist, load_sample, train_val_split
from fnn.train import evaluate, fit

CE = losses.softmax_cross_entropy


def load(train_size: int, flat: bool, quick: bool):
    ds = load_sample() if quick else load_fashion_mnist(verbose=False)
    (x, y), (xt, yt) = ds.train, ds.test
    (x, y), (xv, yv) = train_val_split(x, y, 1 / 6, key=jax.random.key(1))
    x, y = x[:train_size], y[:train_size]
    xv, yv = xv[: max(train_size // 5, 1000)], yv[: max(train_size // 5, 1000)]
    scaler = Standardizer.fit(x, per="global")
    shape = (-1, 784) if flat else (-1, 28, 28, 1)

    def prep(a):
        return np.asarray(scaler.apply(a)).reshape(shape)

    return (prep(x), y), (prep(xv), yv), (prep(xt), yt), ds.source


def make_optimizer(config):
    """SGD with momentum; config values may be traced scalars inside vmap_search."""
    return optim.momentum(config["learning_rate"], 0.9)


def random_search_demo(args, train, val, test):
    space = {"learning_rate": search.loguniform(1e-3, 3e-1), "hidden": [64, 128, 256],
             "batch_size": [64, 128]}
    run = search.fit_objective(lambda c: models.mlp((784, c["hidden"], 10)), CE, make_optimizer, train,
                               val, epochs=args.epochs, batch_size=128, key=jax.random.key(0),
                               metric="val_accuracy")
    result = search.random_search(run, space, num_trials=args.trials, key=jax.random.key(42),
                                  jsonl=Path(args.out) / "random_search.jsonl")
    print("\nrandom search (fit per trial), best first:")
    print(result.table())
    ts, _ = result.refit
    best = result.best_config
    ev = evaluate(models.mlp((784, best["hidden"], 10)), CE, ts.params, ts.state, *test)
    print(f"best config {best} refit: test accuracy {ev['accuracy']:.4f}")


def vmap_configs(k: int):
    space = {"learning_rate": search.loguniform(3e-3, 3e-1), "weight_decay": search.loguniform(1e-6, 1e-3),
             "init_scale": search.uniform_range(0.5, 1.5)}
    configs = search.sample(space, k, key=jax.random.key(7))
    for i, c in enumerate(configs):
        c["seed"] = i % 4
    return configs


def vmap_demo(args, train, val):
    model = models.mlp((784, 256, 10))
    configs = vmap_configs(args.k)
    result = search.vmap_search(model, CE, make_optimizer, train, configs, epochs=args.epochs,
                                batch_size=128, val_data=val, metric="val_accuracy", vectorize=args.vectorize,
                                jsonl=Path(args.out) / "vmap_search.jsonl")
    vectorized = args.vectorize if args.vectorize is not None else jax.default_backend() != "cpu"
    how = "at once (vmapped)" if vectorized else "with one program run per config (the CPU default)"
    print(f"\nvmap_search: {len(configs)} configs {how}, {result.seconds:.1f} s training "
          f"(+{result.compile_seconds:.1f} s compile), best first:")
    print(result.table(max_rows=8))


def bench(args, train):
    """vmapped vs one after another, for K configs of one model."""
    model = models.mlp((784, 256, 256, 10)) if args.model == "mlp" else models.simple_cnn()
    configs = vmap_configs(args.k)
    kw = dict(epochs=args.epochs, batch_size=128, progress=False)
    print(f"\nbench: {args.model}, K={len(configs)} configs, {len(train[0])} training examples, "
          f"{args.epochs} epoch(s), batch 128, backend {jax.default_backend()}, "
          f"{jax.device_count()} device(s)")
    vm = search.vmap_search(model, CE, make_optimizer, train, configs, vectorize=True, **kw)
    print(f"  vmapped (one program, K configs at once):  {vm.seconds:7.2f} s train  "
          f"+ {vm.compile_seconds:5.1f} s compile")
    seq = search.vmap_search(model, CE, make_optimizer, train, configs, vectorize=False, **kw)
    print(f"  sequential (same program, one config at a time): {seq.seconds:7.2f} s train  "
          f"+ {seq.compile_seconds:5.1f} s compile")
    leaves = zip(jax.tree.leaves(vm.train_state.params), jax.tree.leaves(seq.train_state.params), strict=True)
    same = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))
               for a, b in leaves)
    vm_total, seq_total = vm.seconds + vm.compile_seconds, seq.seconds + seq.compile_seconds
    print(f"  speedup of vmap (steady state): {seq.seconds / vm.seconds:.2f}x; end to end incl. compile: "
          f"{seq_total / vm_total:.2f}x; params max relative difference {same:.1e}")
    if args.fit_baseline:
        t0 = time.perf_counter()
        for c in configs:
            opt = optim.chain(optim.add_weight_decay(c["weight_decay"]), make_optimizer(c))
            fit(model, CE, opt, train, key=jax.random.key(c["seed"]), epochs=args.epochs, batch_size=128)
        total = time.perf_counter() - t0
        print(f"  {len(configs)} separate fit calls (each compiles its own optimizer): {total:7.2f} s "
              f"end to end -> vmapped end to end is {total / vm_total:.2f}x, sequential program "
              f"{total / seq_total:.2f}x faster")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the embedded sample (whatever data is installed), few trials and configs")
    parser.add_argument("--vectorize", action=argparse.BooleanOptionalAction, default=None,
                        help="vmap_search: vmapped (--vectorize) or per config (--no-vectorize); "
                             "default: vmapped except on CPU")
    parser.add_argument("--bench", action="store_true", help="only time vmapped vs sequential training")
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp", help="the model of --bench")
    parser.add_argument("--k", type=int, default=None, help="number of configs trained at once: 16 (4 with --quick)")
    parser.add_argument("--trials", type=int, default=None, help="random-search trials")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--train-size", type=int, default=None, help="training examples used")
    parser.add_argument("--fit-baseline", action="store_true", help="--bench: also time K separate fit calls")
    parser.add_argument("--out", default="hparam_search_out", help="directory for the JSONL files")
    args = parser.parse_args()
    quick = args.quick
    args.trials = args.trials or (3 if quick else 12)
    args.epochs = args.epochs or (2 if quick else 5)
    args.train_size = args.train_size or (2000 if quick else 50000)
    args.k = args.k or (4 if quick else 16)
    Path(args.out).mkdir(parents=True, exist_ok=True)

    train, val, test, source = load(args.train_size, flat=not (args.bench and args.model == "cnn"), quick=quick)
    print(f"data: {source}, {len(train[0])} train / {len(val[0])} validation / {len(test[0])} test",
          file=sys.stderr)
    if args.bench:
        bench(args, train)
        return
    random_search_demo(args, train, val, test)
    vmap_demo(args, train, val)


if __name__ == "__main__":
    main()
