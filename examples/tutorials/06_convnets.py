"""Tutorial 6: conv nets on Fashion-MNIST: LeNet-5, classic and with BatchNorm, on a small budget.

    python examples/tutorials/06_convnets.py [--out tutorial_out] [--quick]

What it shows, in order:
  1. the data pipeline: load, hold out a validation set, standardize with training statistics;
  2. two models from fnn.models, with their weight shapes and parameter counts: lenet5 as in
     1998 (tanh, average pooling) and the same network with BatchNorm before each activation,
     ReLU and max pooling (lenet5(batch_norm=True, activation=Relu, pool="max"));
  3. training with fnn.train.fit (one compiled call per epoch) on a slice of the training set;
  4. test accuracy, the confusion matrix (fnn.plot.plot_confusion), the most confident
     mistakes, and what the first conv layer computes (its feature maps).

The budget here is 3 epochs on 12,000 images, so that it runs in a couple of minutes on two CPU
cores. For full training on all 54,000 use the command line, e.g.
    fnn train --model lenet5 --epochs 5 --out runs/lenet5      # test accuracy 0.882 (measured)
    fnn train --model bn_cnn --epochs 10 --out runs/bn_cnn     # test accuracy 0.929 (README)

Figures (in --out): 06_curves.png, 06_confusion.png, 06_misclassified.png, 06_feature_maps.png.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fnn import Conv, Relu, Tanh, data, losses, models, optim
from fnn.train import evaluate, fit

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tutorial_out"), help="directory for the figures")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("FNN_TUTORIAL_QUICK") == "1",
                        help="less data and one epoch (for CI); also set by FNN_TUTORIAL_QUICK=1")
    return parser.parse_args(argv)


def section(title):
    print(f"\n== {title}")


# --8<-- [start:load]
def load(n_train, n_val, n_test, key):
    section("1. Data")
    ds = data.load_fashion_mnist(download=False, verbose=False)
    print(f"source: {ds.source}" + (" (the embedded sample: install the full data set for better numbers)"
                                    if ds.is_sample else ""))
    (x, y), (x_test, y_test) = ds.train, ds.test
    (x, y), (x_val, y_val) = data.train_val_split(x, y, 0.1, key=key)
    x, y = x[:n_train], y[:n_train]
    x_val, y_val = x_val[:n_val], y_val[:n_val]
    x_test, y_test = x_test[:n_test], y_test[:n_test]
    scaler = data.Standardizer.fit(x, per="global")        # statistics of the training part only
    x, x_val, x_test = scaler.apply(x), scaler.apply(x_val), scaler.apply(x_test)
    print(f"train {x.shape}, validation {x_val.shape}, test {x_test.shape}; images are NHWC float32, "
          f"standardized with mean {float(scaler.mean):.1f} and std {float(scaler.std):.1f} (of 0..255)")
    return (x, jnp.asarray(y)), (x_val, jnp.asarray(y_val)), (x_test, np.asarray(y_test))
# --8<-- [end:load]


def describe(name, model, key):
    _, params, state = model.init(key, (28, 28, 1))
    n = sum(p.size for p in jax.tree.leaves(params))
    shapes = [tuple(p["w"].shape) for p in params if isinstance(p, dict) and "w" in p]
    print(f"{name}: {n:,} parameters; weight shapes (conv kernels HWIO, dense (D, M)): {shapes}; "
          f"{sum(s.size for s in jax.tree.leaves(state))} numbers of BatchNorm running statistics in state")


# --8<-- [start:train_and_test]
def train_and_test(models_, train, val, test, epochs, key):
    section(f"3. Training, {epochs} epoch(s) on {len(train[0])} images (Adam 1e-3, batch 128)")
    loss = losses.softmax_cross_entropy
    results = {}
    for name, model in models_.items():
        ts, history = fit(model, loss, optim.adam(1e-3), train, epochs=epochs, batch_size=128, key=key,
                          val_data=val)
        result = evaluate(model, loss, ts.params, ts.state, *test)
        seconds = sum(history.seconds)
        print(f"{name:8s} val accuracy per epoch {[round(a, 3) for a in history.val_accuracy]}, "
              f"test accuracy {result['accuracy']:.4f}; {seconds:.1f} s of training "
              f"({np.mean(history.images_per_second):.0f} images/s), "
              f"compiling {history.compile_seconds:.1f} s")
        results[name] = (model, ts, history, result)
    return results
# --8<-- [end:train_and_test]


def plot(out: Path, results, test, n_train):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from fnn.plot import plot_confusion

    colors = {"lenet5": "tab:blue", "lenet5_bn": "tab:red"}
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 4), dpi=90)
    for name, (_, _, h, r) in results.items():
        c = colors[name]
        ax_l.plot(h.epoch, h.train_loss, "o--", color=c, label=f"{name} train")
        ax_l.plot(h.epoch, h.val_loss, "s-", color=c, label=f"{name} validation")
        ax_a.plot(h.epoch, h.train_accuracy, "o--", color=c, label=f"{name} train")
        ax_a.plot(h.epoch, h.val_accuracy, "s-", color=c,
                  label=f"{name} validation (test {r['accuracy']:.3f})")
    ax_l.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    ax_a.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.suptitle(f"LeNet-5 (tanh, avg pool) vs LeNet-5 with BatchNorm, ReLU, max pool: "
                 f"{n_train} training images")
    fig.tight_layout()
    fig.savefig(out / "06_curves.png")
    plt.close(fig)

    # --8<-- [start:mistakes]
    model, ts, _, result = results["lenet5_bn"]
    plot_confusion(result["confusion"], CLASSES, out / "06_confusion.png",
                   title=f"lenet5_bn on {result['num_examples']} test images: "
                         f"accuracy {result['accuracy']:.3f}")

    x_test, y_test = test
    logits = np.concatenate([np.asarray(model.apply(ts.params, ts.state, x_test[i:i + 1000])[0])
                             for i in range(0, len(x_test), 1000)])
    probs = np.asarray(jax.nn.softmax(logits))
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != y_test)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:24]      # the most confident mistakes first
    # --8<-- [end:mistakes]
    fig, axes = plt.subplots(3, 8, figsize=(12, 5.6), dpi=80)
    for ax, i in zip(axes.flat, wrong, strict=False):
        ax.imshow(np.asarray(x_test[i, :, :, 0]), cmap="gray_r")
        ax.set_title(f"{CLASSES[y_test[i]]}\n→ {CLASSES[pred[i]]} ({probs[i, pred[i]]:.0%})", fontsize=8,
                     color="darkred")
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("lenet5_bn's most confident mistakes on the test set: true class → predicted (probability)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "06_misclassified.png")
    plt.close(fig)

    # A model's params are a tuple, one entry per layer: the first layer can be run on its own.
    fig, axes = plt.subplots(2, 7, figsize=(11, 3.8), dpi=80)
    for row, (name, act) in zip(axes, (("lenet5", Tanh()), ("lenet5_bn", Relu())), strict=True):
        _, ts_m, _, _ = results[name]
        c1 = Conv(6, (5, 5), padding="SAME")                 # lenet5's layer C1
        image = x_test[:1]                                 # an ankle boot
        maps, _ = c1.apply(ts_m.params[0], {}, image)
        if name == "lenet5":                              # lenet5_bn normalizes before its ReLU
            maps, _ = act.apply({}, {}, maps)
        row[0].imshow(np.asarray(image[0, :, :, 0]), cmap="gray_r")
        row[0].set_title("input", fontsize=9)
        row[0].set_ylabel(name, fontsize=10)
        for k in range(6):
            row[k + 1].imshow(np.asarray(maps[0, :, :, k]), cmap="viridis")
            row[k + 1].set_title(f"C1 map {k + 1}", fontsize=9)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("The six 28x28 feature maps of layer C1 (5x5 filters) for one test image "
                 "(top: after tanh; bottom: before BatchNorm)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "06_feature_maps.png")
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    n_train, n_val, n_test, epochs = (2000, 1000, 1000, 1) if args.quick else (12000, 2000, 10000, 3)
    k_split, k_init, k_fit = jax.random.split(jax.random.key(0), 3)
    train, val, test = load(n_train, n_val, n_test, k_split)

    section("2. Models")
    # --8<-- [start:models]
    net = {
        "lenet5": models.lenet5(),
        "lenet5_bn": models.lenet5(batch_norm=True, activation=Relu, pool="max"),
    }
    # --8<-- [end:models]
    for name, model in net.items():
        describe(name, model, k_init)

    results = train_and_test(net, train, val, test, epochs, k_fit)
    section("4. Confusion matrix, mistakes and feature maps: see the figures")
    plot(args.out, results, test, n_train)
    print(f"\nfigures in {args.out}/: 06_curves.png, 06_confusion.png, 06_misclassified.png, "
          f"06_feature_maps.png")


if __name__ == "__main__":
    main()
