"""Tutorial 5: regularization and normalization: L1/L2, dropout, BatchNorm; over- and under-fitting.

    python examples/tutorials/05_regularization.py [--out tutorial_out] [--quick]

A wide MLP trained on a small slice of Fashion-MNIST (1000 images) memorizes it: the training
loss goes to 0 while the validation loss turns back up. Each regularizer is one argument:

  - L2 / L1 penalties:  fit(model, losses.penalized(loss, losses.l2(λ)), ...)  or  losses.l1(λ)
  - dropout:            models.mlp(..., dropout=0.5), a Dropout layer after each hidden activation
  - BatchNorm:          serial(Dense, BatchNorm(), Relu, ...)
  - too much of it:     a large λ underfits: train and validation stay poor together.

Everything is trained with fnn.train.fit (one compiled call per epoch) and drawn with fnn.plot.

Figures (in --out): 05_curves.png, 05_weights.png, 05_history_none.png, 05_history_dropout.png.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fnn import BatchNorm, Dense, Relu, data, losses, models, optim, serial
from fnn.train import fit


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tutorial_out"), help="directory for the figures")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("FNN_TUTORIAL_QUICK") == "1",
                        help="less data and fewer epochs (for CI); also set by FNN_TUTORIAL_QUICK=1")
    return parser.parse_args(argv)


def section(title):
    print(f"\n== {title}")


def load(n_train, n_val):
    ds = data.load_fashion_mnist(download=False, verbose=False)
    x, y = ds.train
    scaler = data.Standardizer.fit(x[:n_train], per="global")         # training statistics only
    flat = lambda a: scaler.apply(a).reshape(len(a), -1)  # noqa: E731
    train = (flat(x[:n_train]), jnp.asarray(y[:n_train]))
    val = (flat(x[n_train:n_train + n_val]), jnp.asarray(y[n_train:n_train + n_val]))
    return train, val


# --8<-- [start:configs]
def configs(width):
    """name -> (model, penalty). The same 784-width-width-10 ReLU MLP unless said otherwise."""
    sizes = (784, width, width, 10)
    plain = models.mlp(sizes)
    bn = serial(Dense(width), BatchNorm(), Relu(), Dense(width), BatchNorm(), Relu(), Dense(10))
    return {
        "no regularization": (plain, None),
        "L2, λ = 1e-2": (plain, losses.l2(1e-2)),
        "L1, λ = 1e-3": (plain, losses.l1(1e-3)),
        "dropout 0.5": (models.mlp(sizes, dropout=0.5), None),
        "BatchNorm": (bn, None),
        "L2, λ = 0.3 (too much)": (plain, losses.l2(0.3)),
    }
# --8<-- [end:configs]


# --8<-- [start:run_all]
def run_all(train, val, width, epochs, key):
    runs = {}
    for name, (model, penalty) in configs(width).items():
        loss = losses.softmax_cross_entropy if penalty is None else losses.penalized(losses.softmax_cross_entropy,
                                                                                      penalty)
        ts, history = fit(model, loss, optim.adam(1e-3), train, epochs=epochs, batch_size=50, key=key,
                          val_data=val)
        runs[name] = (ts, history)
        best = int(np.argmin(history.val_loss))
        print(f"{name:24s} train loss {history.train_loss[-1]:.3f} acc {history.train_accuracy[-1]:.3f} | "
              f"val loss {history.val_loss[-1]:.3f} (best {history.val_loss[best]:.3f} at epoch {best + 1}) "
              f"acc {history.val_accuracy[-1]:.3f}")
    return runs
# --8<-- [end:run_all]


def plot(out: Path, runs, n_train, width):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fnn.plot import plot_history

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), dpi=80, sharex=True)
    top = max(max(h.val_loss) for _, h in runs.values())
    for ax, (name, (_, h)) in zip(axes.flat, runs.items(), strict=True):
        ax.plot(h.epoch, h.train_loss, "-", color="tab:blue", label="train")
        ax.plot(h.epoch, h.val_loss, "-", color="tab:orange", label="validation")
        best = int(np.argmin(h.val_loss))
        ax.plot(h.epoch[best], h.val_loss[best], "v", color="tab:orange", ms=8, label="best validation")
        ax.set_title(f"{name}\nval acc {h.val_accuracy[-1]:.3f} (train {h.train_accuracy[-1]:.3f})",
                     fontsize=10)
        ax.set_ylim(0, min(top, 2.5) * 1.05)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("cross-entropy loss")
    axes[0, 0].legend(fontsize=9)
    fig.suptitle(f"784-{width}-{width}-10 MLP on {n_train} Fashion-MNIST images (Adam 1e-3, batch 50): "
                 "the gap between the curves is overfitting", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "05_curves.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=85)
    bins = np.linspace(-0.15, 0.15, 121)
    shown = (("no regularization", "tab:grey"), ("L2, λ = 1e-2", "tab:blue"), ("L1, λ = 1e-3", "tab:red"))
    for name, color in shown:
        w = np.asarray(runs[name][0].params[0]["w"]).ravel()
        near_zero = np.mean(np.abs(w) < 1e-3)
        ax.hist(w, bins=bins, histtype="step", lw=1.8, color=color, density=True,
                label=f"{name}: std {w.std():.3f}, {100 * near_zero:.0f}% of |w| < 1e-3")
    ax.set_yscale("log")
    ax.set(xlabel="first-layer weight", ylabel="density (log scale)",
           title="First-layer weights after training: L2 shrinks them, L1 piles them up at 0")
    ax.legend(fontsize=8, loc="lower center")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "05_weights.png")
    plt.close(fig)

    # fnn.plot draws a History directly: loss and accuracy, train and validation.
    plot_history(runs["no regularization"][1], out / "05_history_none.png",
                 title="No regularization: validation loss turns up while training loss goes to 0")
    plot_history(runs["dropout 0.5"][1], out / "05_history_dropout.png",
                 title="Dropout 0.5: a smaller gap; the validation loss rises much less")


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    n_train, n_val, width, epochs = (500, 500, 64, 6) if args.quick else (1000, 1000, 256, 30)
    train, val = load(n_train, n_val)
    section(f"Training 6 configurations for {epochs} epochs on {n_train} images, validating on {n_val}")
    runs = run_all(train, val, width, epochs, jax.random.key(0))
    plot(args.out, runs, n_train, width)
    print(f"\nfigures in {args.out}/: 05_curves.png, 05_weights.png, 05_history_none.png, "
          f"05_history_dropout.png")


if __name__ == "__main__":
    main()
