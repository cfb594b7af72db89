"""Gradient diagnostics on Fashion-MNIST: vanishing, healthy and exploding training, detected.

Three runs of a deep MLP (8 hidden layers of 128 units), each recorded by a
``diagnostics.recorder`` on a fixed probe batch at every epoch:

1. sigmoid, weights N(0, 0.01²): the gradient shrinks by ~100x per layer on the way down,
   so the first layers do not learn: ``detect_vanishing`` flags it;
2. ReLU, He init: gradient norms of all layers within a small factor: healthy;
3. the same ReLU net with a far too large learning rate: the loss and the gradient blow up
   and ``fit`` stops on NaN: ``detect_exploding`` flags it. A step-by-step trace (a report
   before each of the first steps) shows the blow-up layer by layer.

Run:  python examples/diagnose_gradients.py --out diagnose_out     (under a minute on CPU)
Writes ``grad_norms_<run>.png`` (per-layer gradient norms and update ratios per epoch) and
``grad_norms_exploding_steps.png`` (per step) into --out.
"""

import argparse
import warnings
from pathlib import Path

import jax
import numpy as np

from fnn import diagnostics, init, losses, optim
from fnn.data import Standardizer, load_fashion_mnist
from fnn.layers import Dense, Relu, Sigmoid, serial
from fnn.plot import plot_grad_norms
from fnn.train import fit, init_train_state, train_step

CE = losses.softmax_cross_entropy
DEPTH, WIDTH = 8, 128


def deep_mlp(activation, w_init):
    layers = []
    for _ in range(DEPTH):
        layers += [Dense(WIDTH, w_init=w_init), activation()]
    return serial(*layers, Dense(10, w_init=w_init))


def load(n_train: int):
    ds = load_fashion_mnist(verbose=False)
    x, y = ds.train
    x, y = x[:n_train], y[:n_train]
    scaler = Standardizer.fit(x, per="global")
    return np.asarray(scaler.apply(x)).reshape(len(x), -1), y, ds.source


def run(title, model, optimizer, data, probe, out: Path, epochs: int):
    """fit with a recorder; print the first report, the History and the verdicts; plot."""
    key = jax.random.key(0)
    rec = diagnostics.recorder(model, CE, *probe, optimizer=optimizer)
    ts0 = init_train_state(model, optimizer, (784,), key)
    rec(0, ts0)  # the state before training
    print(f"\n=== {title} ===")
    print(diagnostics.format_report(rec.records[0].report, verdicts=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the NaN stop is reported below
        _, history = fit(model, CE, optimizer, data, epochs=epochs, batch_size=128, key=key, callbacks=[rec],
                         progress=False, train_state=ts0)
    print(history.as_table())
    last = rec.records[-1].report
    verdicts = [diagnostics.detect_vanishing(last), diagnostics.detect_exploding(history),
                diagnostics.detect_dead_units(last), diagnostics.detect_saturation(last)]
    for v in verdicts:
        print(("  DETECTED  " if v.detected else "  ok        ") + v.message)
    slug = title.split(":")[0].strip().lower().replace(" ", "_")
    path = plot_grad_norms(rec, out / f"grad_norms_{slug}.png", title=title)
    print(f"  plot: {path}")
    return verdicts


def trace_steps(model, optimizer, data, probe, steps: int):
    """A report on the probe batch before each of the first `steps` training steps."""
    step = jax.jit(train_step(model, CE, optimizer))
    ts = init_train_state(model, optimizer, (784,), jax.random.key(0))
    (x, y), reports = data, []
    for i in range(steps):
        reports.append(diagnostics.layer_report(model, CE, ts.params, ts.state, *probe, optimizer=optimizer,
                                                opt_state=ts.opt_state))
        ts, _ = step(ts, x[128 * i: 128 * (i + 1)], y[128 * i: 128 * (i + 1)])
    return reports


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="diagnose_out", help="directory for the PNG files")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=6000)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y, source = load(args.train_size)
    print(f"data: {source}, {len(x)} training images; probe batch: the first 256")
    data, probe = (x, y), (x[:256], y[:256])

    sgd = optim.momentum(0.05, 0.9)
    vanishing = run("vanishing: sigmoid, N(0, 0.01^2) init", deep_mlp(Sigmoid, init.normal(0.01)), sgd, data,
                    probe, out, args.epochs)
    relu_he = deep_mlp(Relu, init.he_normal)
    healthy = run("healthy: ReLU, He init", relu_he, sgd, data, probe, out, args.epochs)
    too_fast = optim.momentum(0.5, 0.9)
    exploding = run("exploding: ReLU, He init, learning rate 0.5", relu_he, too_fast, data, probe, out,
                    args.epochs)
    reports = trace_steps(relu_he, too_fast, data, probe, steps=7)
    print("  per step: global gradient norm " + " -> ".join(f"{r.global_grad_norm:.3g}" for r in reports)
          + "; loss " + " -> ".join(f"{r.loss:.3g}" for r in reports))
    per_step = diagnostics.detect_exploding(reports)
    print(("  DETECTED  " if per_step.detected else "  ok        ") + "per step: " + per_step.message)
    path = plot_grad_norms(reports, out / "grad_norms_exploding_steps.png", xlabel="step",
                           title="exploding: ReLU, He init, learning rate 0.5 (first steps)")
    print(f"  plot: {path}")

    print("\nsummary:")
    print(f"  sigmoid/N(0,0.01): vanishing detected = {vanishing[0].detected}")
    print(f"  ReLU/He:           vanishing detected = {healthy[0].detected}, exploding detected = "
          f"{healthy[1].detected}")
    print(f"  ReLU/He, lr 0.5:   exploding detected = {exploding[1].detected} (fit), {per_step.detected} "
          f"(per step)")
    ok = (vanishing[0].detected and not healthy[0].detected and not healthy[1].detected
          and exploding[1].detected and per_step.detected)
    print("  all three verdicts as expected" if ok else "  UNEXPECTED verdicts (see above)")


if __name__ == "__main__":
    main()
