"""Tutorial 7: diagnosing training: vanishing and exploding gradients, learning rates, a small search.

    python examples/tutorials/07_diagnostics.py [--out tutorial_out] [--quick]

What it shows, in order:
  1. per-layer gradient norms of four deep MLPs at initialization, with
     fnn.diagnostics.layer_report (and by hand from the gradient pytree), and the
     update-to-weight ratio of one SGD step: sigmoid layers and too-small weights make the
     gradient vanish toward the input, N(0, 1) weights make it explode, He init keeps it level;
  2. the learning rate: the loss per step for six learning rates, too low (crawls), right,
     too high (jumps, or diverges to NaN), all trained at once with jax.vmap; what
     fnn.train.fit does when the loss becomes NaN, and fnn.diagnostics.detect_exploding;
  3. a small grid search over learning rate and width with fnn.search.vmap_search, scored on
     a validation set, two seeds per point.

Figures (in --out): 07_grad_norms.png, 07_learning_rates.png, 07_search.png.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnn
from fnn import Dense, Relu, Sigmoid, data, diagnostics, init, losses, models, optim, serial
from fnn import search as search_lib
from fnn.train import fit

LOSS = losses.softmax_cross_entropy


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tutorial_out"), help="directory for the figures")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("FNN_TUTORIAL_QUICK") == "1",
                        help="less data, fewer steps, a smaller grid (for CI); "
                             "also set by FNN_TUTORIAL_QUICK=1")
    return parser.parse_args(argv)


def section(title):
    print(f"\n== {title}")


def load(n_train, n_val):
    ds = data.load_fashion_mnist(download=False, verbose=False)
    x, y = ds.train
    scaler = data.Standardizer.fit(x[:n_train], per="global")
    flat = lambda a: scaler.apply(a).reshape(len(a), -1)  # noqa: E731
    return ((flat(x[:n_train]), jnp.asarray(y[:n_train])),
            (flat(x[n_train:n_train + n_val]), jnp.asarray(y[n_train:n_train + n_val])))


# ----------------------------------------------------------------------------------------
# 1. Vanishing and exploding gradients

DEPTH, WIDTH = 8, 128
NETS = {
    "sigmoid, Xavier init": (Sigmoid, init.glorot_normal, "tab:purple"),
    "ReLU, N(0, 0.01²) init": (Relu, init.normal(0.01), "tab:grey"),
    "ReLU, N(0, 1) init": (Relu, init.normal(1.0), "tab:red"),
    "ReLU, He init": (Relu, init.he_normal, "tab:green"),
}


def deep_mlp(activation, w_init):
    layers = []
    for _ in range(DEPTH):
        layers += [Dense(WIDTH, w_init=w_init), activation()]
    return serial(*layers, Dense(10, w_init=w_init))


# --8<-- [start:layer_norms]
def layer_norms(tree):
    """‖w‖ of each Dense layer, in order: the params (or grads) tuple of a serial, one entry per layer."""
    return np.array([float(jnp.linalg.norm(p["w"])) for p in tree if isinstance(p, dict) and "w" in p])
# --8<-- [end:layer_norms]


# --8<-- [start:gradient_norms]
def gradient_norms(x, y, key):
    section(f"1. Per-layer gradient norms at init, {DEPTH} hidden layers of width {WIDTH}, "
            f"a batch of {len(x)}")
    results = {}
    for name, (act, w_init, _) in NETS.items():
        model = deep_mlp(act, w_init)
        _, params, state = model.init(key, (784,))
        # One probe batch: per layer, the gradient norm, the update/weight ratio the optimizer
        # would make, activation statistics, dead and saturated units.
        report = diagnostics.layer_report(model, LOSS, params, state, x, y, optimizer=optim.sgd(0.1))
        dense = [s for s in report.layers if s.grad_norm is not None]
        g = np.array([s.grad_norm for s in dense])
        ratio = np.array([s.update_ratio for s in dense])
        results[name] = (g, ratio, report.loss)
        print(f"{name:24s} loss {report.loss:10.3g}; gradient norm layer 1 {g[0]:9.2e}, "
              f"layer {len(g)} {g[-1]:9.2e}; SGD(0.1) update/weight {ratio.min():.1e} to {ratio.max():.1e}")
        print(f"    {diagnostics.detect_vanishing(report)}")
        if name == "sigmoid, Xavier init":
            print(diagnostics.format_report(report, verdicts=False))
            # The same numbers straight from the gradient pytree (weights only, so a little below
            # the report's norms, which include the biases):
            (_, _), grads = jax.jit(fnn.value_and_grad(model, LOSS, grad_mode="manual"))(params, state, x, y)
            print("    ‖dL/dW‖ from the grads tree:", np.array2string(layer_norms(grads), precision=2))
    return results
# --8<-- [end:gradient_norms]


# ----------------------------------------------------------------------------------------
# Training many configurations at once


# --8<-- [start:train_curve]
def train_curve(model, make_opt, x, y, epochs, batch_size, lr, key):
    """Init and train `model` with make_opt(lr) -> (params, state, loss of every step).

    A pure function of (lr, key): jax.vmap trains many learning rates or seeds at once.
    """
    k_init, k_epochs = jax.random.split(key)
    _, params, state = model.init(k_init, (x.shape[1],))
    opt = make_opt(lr)
    grad_fn = fnn.value_and_grad(model, LOSS, grad_mode="autodiff")

    def step(carry, batch):
        params, opt_state = carry
        (value, _), grads = grad_fn(params, state, *batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optim.apply_updates(params, updates), opt_state), value

    def epoch(carry, k):
        b = data.epoch_batches(x, y, batch_size, key=k)
        return jax.lax.scan(step, carry, (b.x, b.y))

    (params, _), values = jax.lax.scan(epoch, (params, opt.init(params)), jax.random.split(k_epochs, epochs))
    return params, state, values.reshape(-1)
# --8<-- [end:train_curve]


# --8<-- [start:learning_rates]
def learning_rates(train, epochs, key):
    lrs = np.array([1e-4, 1e-3, 1e-2, 1e-1, 1.0, 100.0])
    section(f"2. Learning rate: SGD on a 784-128-10 ReLU MLP, {epochs} epochs, learning rates {lrs.tolist()}")
    model = models.mlp((784, 128, 10))
    run = jax.jit(jax.vmap(lambda lr: train_curve(model, optim.sgd, *train, epochs, 50, lr, key)[2]))
    curves = np.asarray(run(jnp.asarray(lrs, jnp.float32)))
    for lr, c in zip(lrs, curves, strict=True):
        bad = np.flatnonzero(~np.isfinite(c))
        last_epoch = c[-len(c) // epochs:]
        end = f"NaN from step {bad[0] + 1}" if len(bad) else f"last-epoch mean {last_epoch.mean():.3f}"
        print(f"lr {lr:g}: first loss {c[0]:.3f}, {end}")

    print("fit with lr 100 stops at the first NaN and returns the state from the end of the last good epoch:")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ts, history = fit(model, LOSS, optim.sgd(100.0), train, epochs=2, batch_size=50, key=key)
    print(f"  History has {len(history)} epoch(s); stop_reason: {history.stop_reason}")
    print(f"  {diagnostics.detect_exploding(history)}")
    return lrs, curves
# --8<-- [end:learning_rates]


# --8<-- [start:search]
def search(train, val, widths, lrs, seeds, epochs):
    section(f"3. Grid search: widths {list(widths)} x {len(lrs)} learning rates (Adam) x {seeds} seeds, "
            f"{epochs} epochs each")
    configs = [{"learning_rate": float(lr), "seed": s} for lr in lrs for s in range(seeds)]
    scores = np.zeros((len(widths), len(lrs)))
    for i, width in enumerate(widths):
        # A width changes shapes, so each width is its own search; within it, every
        # (learning rate, seed) config runs through one compiled training program.
        result = search_lib.vmap_search(models.mlp((784, width, 10)), LOSS,
                                        lambda c: optim.adam(c["learning_rate"]), train, configs,
                                        epochs=epochs, batch_size=50, val_data=val, metric="val_accuracy",
                                        progress=False)
        final = result.history["val_accuracy"][:, -1]          # (K,), in the order of `configs`
        scores[i] = final.reshape(len(lrs), seeds).mean(1)
        print(f"width {width:4d}: best lr {lrs[scores[i].argmax()]:.0e}, "
              f"validation accuracy {scores[i].max():.3f} (mean of {seeds} seed(s))")
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    print(f"best overall: width {widths[i]}, lr {lrs[j]:.0e}, validation accuracy {scores[i, j]:.3f}")
    return scores
# --8<-- [end:search]


def plot(out: Path, grads, lrs, curves, epochs, widths, search_lrs, scores, n_train):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_g, ax_r) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=85)
    for name, (g, ratio, _) in grads.items():
        color = NETS[name][2]
        layers = np.arange(1, len(g) + 1)
        ax_g.semilogy(layers, g, "o-", color=color, label=name)
        ax_r.semilogy(layers, ratio, "o-", color=color, label=name)
    ax_r.axhspan(1e-4, 1e-2, color="tab:green", alpha=0.12, label="a common rule of thumb: ~1e-3")
    ax_g.set(title="Gradient norm per Dense layer (w and b) at initialization", xlabel="Dense layer (1 = input side)",
             ylabel="gradient norm (log scale)")
    ax_r.set(title="‖Δθ‖ / ‖θ‖ of one SGD step (lr 0.1)", xlabel="Dense layer (1 = input side)",
             ylabel="update / weight (log scale)")
    for ax in (ax_g, ax_r):
        ax.grid(alpha=0.3, which="major")
        ax.set_xticks(np.arange(1, DEPTH + 2))
    handles, labels = ax_r.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=9)
    fig.suptitle(f"{DEPTH} hidden layers of width {WIDTH} + output, one batch of Fashion-MNIST: "
                 "vanishing (purple, grey), exploding (red), level (green)", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out / "07_grad_norms.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4.6), dpi=85)
    cmap = plt.get_cmap("viridis")
    steps_per_epoch = curves.shape[1] // epochs
    for k, (lr, c) in enumerate(zip(lrs, curves, strict=True)):
        bad = np.flatnonzero(~np.isfinite(c))
        if len(bad):
            ax.plot(np.arange(bad[0]), c[:bad[0]], color="tab:red", lw=1.2,
                    label=f"lr {lr:g} (NaN at step {bad[0] + 1})")
            ax.plot(bad[0], 6e2, "X", color="tab:red", ms=10)
            ax.annotate("NaN", (bad[0], 6e2), xytext=(8, -4), textcoords="offset points", color="tab:red")
        else:
            ax.plot(c, color=cmap(k / (len(lrs) - 1)), lw=1.2, label=f"lr {lr:g}")
    ax.axhline(np.log(10), color="black", ls=":", lw=1)
    ax.text(len(curves[0]) * 0.99, np.log(10) * 1.25, "ln 10 = guessing", ha="right", fontsize=8,
            bbox=dict(fc="white", ec="none", alpha=0.8))
    ax.set_yscale("log")
    ax.set(xlabel=f"step (batch 50; {steps_per_epoch} steps per epoch)", ylabel="training loss (log scale)",
           ylim=(0.2, 1e3), title="SGD, 784-128-10 ReLU MLP: too low crawls, too high jumps, "
                                  "far too high NaNs")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=8, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "07_learning_rates.png")
    plt.close(fig)

    fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(12, 4.2), dpi=85, gridspec_kw={"width_ratios": [1.3, 1]})
    im = ax_h.imshow(scores, cmap="viridis", vmin=0.1, vmax=max(0.9, scores.max()), aspect="auto")
    ax_h.set_xticks(range(len(search_lrs)), [f"{lr:.0e}" for lr in search_lrs], rotation=45)
    ax_h.set_yticks(range(len(widths)), [str(w) for w in widths])
    for i in range(len(widths)):
        for j in range(len(search_lrs)):
            ax_h.text(j, i, f"{scores[i, j]:.2f}", ha="center", va="center", fontsize=8,
                      color="black" if scores[i, j] > 0.6 else "white")
    bi, bj = np.unravel_index(np.argmax(scores), scores.shape)
    ax_h.add_patch(plt.Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    ax_h.set(xlabel="learning rate (Adam)", ylabel="hidden width",
             title=f"Validation accuracy (mean of seeds), {n_train} training images")
    fig.colorbar(im, ax=ax_h, label="validation accuracy")
    for i, w in enumerate(widths):
        ax_c.semilogx(search_lrs, scores[i], "o-", label=f"width {w}")
    ax_c.set(xlabel="learning rate (log)", ylabel="validation accuracy", title="The same, one line per width",
             ylim=(0, 1))
    ax_c.grid(alpha=0.3)
    ax_c.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "07_search.png")
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        n_train, n_val, lr_epochs, widths, search_lrs, seeds, search_epochs = (
            500, 500, 2, (16, 64), np.logspace(-4, 0, 5), 1, 2)
    else:
        n_train, n_val, lr_epochs, widths, search_lrs, seeds, search_epochs = (
            2000, 1000, 5, (16, 64, 256), np.logspace(-4, 0, 9), 2, 5)
    train, val = load(n_train, n_val)
    key = jax.random.key(0)
    grads = gradient_norms(train[0][:256], train[1][:256], key)
    lrs, curves = learning_rates(train, lr_epochs, key)
    scores = search(train, val, widths, search_lrs, seeds, search_epochs)
    plot(args.out, grads, lrs, curves, lr_epochs, widths, search_lrs, scores, n_train)
    print(f"\nfigures in {args.out}/: 07_grad_norms.png, 07_learning_rates.png, 07_search.png")


if __name__ == "__main__":
    main()
