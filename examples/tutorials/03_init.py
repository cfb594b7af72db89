"""Tutorial 3: weight initialization: zeros, too large, too small, Xavier/Glorot, He.

    python examples/tutorials/03_init.py [--out tutorial_out] [--quick]

What it shows, in order:
  1. the spread of activations through 10 Dense layers of width 256 (tanh and ReLU) for each
     initializer: it vanishes, explodes, or stays put;
  2. histograms of the tanh activations per layer: collapse to 0, or saturation at ±1;
  3. symmetry: zeros (or any constant) make every hidden unit the same, and training cannot
     tell them apart; random init breaks the tie;
  4. training a 6-layer ReLU network on Fashion-MNIST from each initializer.

Figures (in --out): 03_activation_std.png, 03_activation_hist.png, 03_symmetry.png,
03_training.png.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fnn import Dense, Relu, Tanh, data, init, losses, models, optim
from fnn.train import evaluate, fit, init_train_state


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tutorial_out"), help="directory for the figures")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("FNN_TUTORIAL_QUICK") == "1",
                        help="less data and fewer epochs (for CI); also set by FNN_TUTORIAL_QUICK=1")
    return parser.parse_args(argv)


def section(title):
    print(f"\n== {title}")


# --8<-- [start:inits]
# Every initializer is a function (key, shape, dtype) -> array; Dense(w_init=...) takes any of them.
INITS = {
    "zeros": init.zeros,
    "N(0, 1): too large": init.normal(1.0),
    "N(0, 0.01²): too small": init.normal(0.01),
    "Xavier/Glorot: N(0, 2/(n_in+n_out))": init.glorot_normal,
    "He: N(0, 2/n_in)": init.he_normal,
}
# --8<-- [end:inits]
COLORS = dict(zip(INITS, ("black", "tab:red", "tab:purple", "tab:blue", "tab:green"), strict=True))
DEPTH, WIDTH = 10, 256


# --8<-- [start:activations_per_layer]
def activations_per_layer(w_init, activation, x, key):
    """The output of each of DEPTH layers Dense(WIDTH, w_init) → activation, for the batch x."""
    outs = []
    for k in jax.random.split(key, DEPTH):
        layer = Dense(WIDTH, w_init=w_init)
        _, params, state = layer.init(k, (WIDTH,))
        z, _ = layer.apply(params, state, x)
        x, _ = activation.apply({}, {}, z)
        outs.append(np.asarray(x))
    return outs
# --8<-- [end:activations_per_layer]


def forward_statistics(key):
    section(f"1. Activation std through {DEPTH} layers of width {WIDTH}, inputs N(0, 1)")
    k_x, k_w = jax.random.split(key)
    x = jax.random.normal(k_x, (1000, WIDTH))
    acts = {(name, act.name): activations_per_layer(w, act, x, k_w)
            for name, w in INITS.items() for act in (Tanh(), Relu())}
    print(f"{'initializer':38s} {'act':5s} " + " ".join(f"L{i + 1:<7d}" for i in range(0, DEPTH, 3)))
    for (name, act), outs in acts.items():
        print(f"{name:38s} {act:5s} " + " ".join(f"{outs[i].std():<8.2g}" for i in range(0, DEPTH, 3)))
    return acts


# ----------------------------------------------------------------------------------------
# Symmetry


# --8<-- [start:symmetry]
def symmetry(key, x, y, epochs):
    section("3. Symmetry: a 784-32-10 ReLU net trained from zeros, from a constant, and from He init")
    results = {}
    opt = optim.sgd(0.1)
    loss = losses.softmax_cross_entropy
    base = models.mlp((784, 32, 10))                 # apply does not depend on the initializer
    for name, w_init in (("zeros", init.zeros), ("constant 0.01", init.constant(0.01)),
                         ("He normal", init.he_normal)):
        ts = init_train_state(models.mlp((784, 32, 10), w_init=w_init), opt, (784,), key=key)
        ts, hist = fit(base, loss, opt, (x, y), epochs=epochs, batch_size=100, key=key, train_state=ts)
        w1 = np.asarray(ts.params[0]["w"])            # (784, 32): one column per hidden unit
        distinct = len(np.unique(np.round(w1.T, 6), axis=0))
        results[name] = (w1, distinct, hist.train_accuracy[-1])
        print(f"{name:14s}: {distinct:2d} distinct hidden units out of 32 after {epochs} epochs, "
              f"train accuracy {hist.train_accuracy[-1]:.3f}")
    print("zeros: every hidden unit is 0, so no gradient reaches W1 (δ1 = δ2·W2ᵀ = 0) and only biases learn.")
    print("constant: all hidden units compute the same thing and receive the same gradient, forever.")
    return results
# --8<-- [end:symmetry]


# ----------------------------------------------------------------------------------------
# Training from each initializer


# --8<-- [start:training]
def training(key, train, val, epochs):
    section(f"4. A 784-(128x5)-10 ReLU net, SGD with momentum, {epochs} epochs, from each initializer")
    sizes = (784,) + (128,) * 5 + (10,)
    opt = optim.momentum(0.01, 0.9)
    loss = losses.softmax_cross_entropy
    base = models.mlp(sizes)        # one model for apply: fit compiles once for all five runs
    curves = {}
    for name, w_init in INITS.items():
        ts = init_train_state(models.mlp(sizes, w_init=w_init), opt, (784,), key=key)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ts, hist = fit(base, loss, opt, train, epochs=epochs, batch_size=100, key=key, train_state=ts,
                           val_data=val)
        note = f" (stopped: {caught[0].message})".split(";")[0] + ")" if caught else ""
        acc = evaluate(base, loss, ts.params, ts.state, *val)["accuracy"] if len(hist) else float("nan")
        curves[name] = hist
        print(f"{name:38s} val accuracy {acc:.3f} after {len(hist)} epochs{note}")
    return curves
# --8<-- [end:training]


def plot(out: Path, acts, sym, curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    layers = np.arange(1, DEPTH + 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), dpi=90, sharey=True)
    for ax, act in zip(axes, ("Tanh", "Relu"), strict=True):
        for name in INITS:
            stds = np.array([a.std() for a in acts[(name, act)]])
            if np.all(stds == 0):
                ax.plot(layers, np.full(DEPTH, 3e-11), "x--", color=COLORS[name], label=f"{name} (exactly 0)")
            else:
                ax.semilogy(layers, stds, "o-", color=COLORS[name], label=name)
        ax.set(title=f"{act}: std of each layer's output", xlabel="layer", xticks=layers, ylim=(1e-11, 1e12))
        ax.grid(alpha=0.3, which="major")
    axes[0].set_ylabel("std of activations (log scale)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9)
    fig.suptitle(f"{DEPTH} Dense layers of width {WIDTH}, 1000 inputs from N(0, 1)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(out / "03_activation_std.png")
    plt.close(fig)

    shown = [n for n in INITS if n != "zeros"]
    cols = [0, 3, 6, 9]
    fig, axes = plt.subplots(len(shown), len(cols), figsize=(11, 8), dpi=80, sharex=True)
    for r, name in enumerate(shown):
        for c, li in enumerate(cols):
            ax = axes[r, c]
            a = acts[(name, "Tanh")][li].ravel()
            ax.hist(a, bins=np.linspace(-1, 1, 41), color=COLORS[name], density=True)
            ax.set_yticks([])
            ax.text(0.03, 0.85, f"std {a.std():.2g}", transform=ax.transAxes, fontsize=8)
            if r == 0:
                ax.set_title(f"layer {li + 1}")
            if c == 0:
                ax.set_ylabel(name.replace(": ", "\n").replace("Xavier/Glorot\n", "Xavier\n"), fontsize=8)
        axes[-1, 0].set_xlabel("tanh activation")
    fig.suptitle("Tanh activations per layer: too small collapses to 0, too large saturates at ±1, "
                 "Xavier keeps its shape", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "03_activation_hist.png")
    plt.close(fig)

    fig, axes = plt.subplots(len(sym), 8, figsize=(11, 4.6), dpi=80)
    for r, (name, (w1, distinct, acc)) in enumerate(sym.items()):
        lim = np.abs(w1).max() or 1.0
        for c in range(8):
            ax = axes[r, c]
            ax.imshow(w1[:, c].reshape(28, 28), cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                what = f"{name} (all 0)" if not np.any(w1) else name
                ax.set_ylabel(f"{what}\n{distinct} distinct\nunit(s), acc {acc:.2f}", fontsize=8)
            if r == 0:
                ax.set_title(f"unit {c + 1}", fontsize=9)
    fig.suptitle("First-layer weights of 8 of the 32 hidden units after training (784 weights as 28x28; "
                 "red > 0 > blue)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "03_symmetry.png")
    plt.close(fig)

    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(12, 4.4), dpi=90)
    for name, hist in curves.items():
        label = name
        if len(hist) == 0:
            label += " (NaN in epoch 1: no point)"
        elif hist.train_loss[-1] > 2.2:
            label += " (stuck at ln 10 ≈ 2.30)"
        style = dict(color=COLORS[name], ms=4, lw=2.5 if name == "zeros" else 1.5,
                     ls=":" if name == "zeros" else "-", marker="o")
        ax_l.plot(hist.epoch, hist.train_loss, label=label, **style)
        ax_a.plot(hist.epoch, hist.val_accuracy, label=label, **style)
    ax_l.set(xlabel="epoch", ylabel="training loss", title="Training loss", yscale="log")
    ax_a.set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy", ylim=(0, 1))
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = ax_l.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9)
    fig.suptitle("784-(128x5)-10 ReLU net on Fashion-MNIST, SGD + momentum (lr 0.01), from each initializer")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(out / "03_training.png")
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    n_train, n_val, epochs = (1000, 500, 3) if args.quick else (6000, 2000, 8)
    ds = data.load_fashion_mnist(download=False, verbose=False)
    x_all, y_all = ds.train
    n_train = min(n_train, len(x_all) - n_val)       # the 3000-image sample, without the full data set
    scaler = data.Standardizer.fit(x_all[:n_train], per="global")
    flat = lambda x: scaler.apply(x).reshape(len(x), -1)  # noqa: E731
    train = (flat(x_all[:n_train]), jnp.asarray(y_all[:n_train]))
    val = (flat(x_all[n_train:n_train + n_val]), jnp.asarray(y_all[n_train:n_train + n_val]))

    key = jax.random.key(0)
    acts = forward_statistics(key)
    section("2. Histograms of the tanh activations: see 03_activation_hist.png")
    sym = symmetry(key, *train, epochs)
    curves = training(key, train, val, epochs)
    plot(args.out, acts, sym, curves)
    print(f"\nfigures in {args.out}/: 03_activation_std.png, 03_activation_hist.png, 03_symmetry.png, "
          f"03_training.png")


if __name__ == "__main__":
    main()
