"""Gradient diagnostics on Fashion-MNIST: vanishing, healthy and exploding training, detected.

Three runs of a deep MLP (8 hidden layers of 128 units), each recorded two ways: a
``diagnostics.recorder`` (the full report on a fixed probe batch) at every epoch, and
``fit(..., callbacks=[StepRecorder(N)])`` (per-layer gradient norms and update ratios on the training batch,
from inside the fused epoch) every N steps:

1. sigmoid, weights N(0, 0.01²): the gradient shrinks by ~100x per layer on the way down,
   so the first layers do not learn: ``detect_vanishing`` flags it;
2. ReLU, He init: gradient norms of all layers within a small factor: healthy;
3. the same ReLU net with a far too large learning rate: the loss and the gradient blow up
   and ``fit`` stops on NaN: ``detect_exploding`` flags it, and the per-step records show
   the blow-up layer by layer up to the step that produced the NaN.

Run:  python examples/diagnose_gradients.py --out diagnose_out     (under a minute on CPU)
      python examples/diagnose_gradients.py --quick --out diagnose_out   (2 epochs on 1024 images of the
      embedded sample, whatever data is installed: seconds)
Writes ``grad_norms_<run>.png`` (per-layer gradient norms and update ratios per epoch) and
``grad_norms_<run>_steps.png`` (the same per step) into --out.
"""

import argparse
import warnings
from pathlib import Path

import jax
import numpy as np

from fnn import diagnostics, init, losses, optim
from fnn.data import Standardizer, load_fashion_mnist, load_sample
from fnn.layers import Dense, Relu, Sigmoid, serial
from fnn.plot import plot_grad_norms
from fnn.train import StepRecorder, fit, init_train_state

CE = losses.softmax_cross_entropy
DEPTH, WIDTH = 8, 128


def deep_mlp(activation, w_init):
    layers = []
    for _ in range(DEPTH):
        layers += [Dense(WIDTH, w_init=w_init), activation()]
    return serial(*layers, Dense(10, w_init=w_init))


def load(n_train: int, quick: bool):
    ds = load_sample() if quick else load_fashion_mnist(verbose=False)
    x, y = ds.train
    x, y = x[:n_train], y[:n_train]
    scaler = Standardizer.fit(x, per="global")
    return np.asarray(scaler.apply(x)).reshape(len(x), -1), y, ds.source


def run(title, model, optimizer, data, probe, out: Path, epochs: int, every: int):
    """fit with a recorder and per-step records; print the first report, the History and the verdicts; plot."""
    key = jax.random.key(0)
    rec = diagnostics.recorder(model, CE, *probe, optimizer=optimizer)
    ts0 = init_train_state(model, optimizer, (784,), key=key)
    rec(0, ts0)  # the state before training
    print(f"\n=== {title} ===")
    print(diagnostics.format_report(rec.records[0].report, verdicts=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the NaN stop is reported below
        _, history = fit(model, CE, optimizer, data, epochs=epochs, batch_size=128, key=key,
                         callbacks=[rec, StepRecorder(every)], train_state=ts0)
    print(history.as_table())
    steps = history.steps
    print(f"  per step ({len(steps)} records, every {every}): global gradient norm "
          + " -> ".join(f"{r['grad_norm']:.3g}" for r in steps[:: max(len(steps) // 8, 1)]))
    last = rec.records[-1].report
    verdicts = [diagnostics.detect_vanishing(last), diagnostics.detect_exploding(history),
                diagnostics.detect_dead_units(last), diagnostics.detect_saturation(last)]
    for v in verdicts:
        print(("  DETECTED  " if v.detected else "  ok        ") + v.message)
    slug = title.split(":")[0].strip().lower().replace(" ", "_")
    for path in (plot_grad_norms(rec, out / f"grad_norms_{slug}.png", title=title + " (per epoch)"),
                 plot_grad_norms(history, out / f"grad_norms_{slug}_steps.png", title=title + " (per step)")):
        print(f"  plot: {path}")
    return verdicts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the embedded sample, fewer images and epochs (defaults below in parentheses)")
    parser.add_argument("--out", default="diagnose_out", help="directory for the PNG files")
    parser.add_argument("--epochs", type=int, default=None, help="default 3 (2)")
    parser.add_argument("--train-size", type=int, default=None, help="default 6000 (1024)")
    parser.add_argument("--record-every", type=int, default=None, help="per-step records every N steps: 5 (2)")
    args = parser.parse_args()
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.train_size = args.train_size or (1024 if args.quick else 6000)
    args.record_every = args.record_every or (2 if args.quick else 5)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y, source = load(args.train_size, args.quick)
    print(f"data: {source}, {len(x)} training images; probe batch: the first 256")
    data, probe = (x, y), (x[:256], y[:256])

    sgd = optim.momentum(0.05, 0.9)
    every = args.record_every
    vanishing = run("vanishing: sigmoid, N(0, 0.01^2) init", deep_mlp(Sigmoid, init.normal(0.01)), sgd, data,
                    probe, out, args.epochs, every)
    relu_he = deep_mlp(Relu, init.he_normal)
    healthy = run("healthy: ReLU, He init", relu_he, sgd, data, probe, out, args.epochs, every)
    too_fast = optim.momentum(0.5, 0.9)
    exploding = run("exploding: ReLU, He init, learning rate 0.5", relu_he, too_fast, data, probe, out,
                    args.epochs, 1)

    print("\nsummary:")
    print(f"  sigmoid/N(0,0.01): vanishing detected = {vanishing[0].detected}")
    print(f"  ReLU/He:           vanishing detected = {healthy[0].detected}, exploding detected = "
          f"{healthy[1].detected}")
    print(f"  ReLU/He, lr 0.5:   exploding detected = {exploding[1].detected}")
    ok = (vanishing[0].detected and not healthy[0].detected and not healthy[1].detected
          and exploding[1].detected)
    print("  all three verdicts as expected" if ok else "  UNEXPECTED verdicts (see above)")


if __name__ == "__main__":
    main()
