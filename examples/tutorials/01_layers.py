"""Tutorial 1: layers are pure functions (init/apply), parameters are pytrees, jit compiles it all.

    python examples/tutorials/01_layers.py [--out tutorial_out] [--quick]

What it shows, in order:
  1. one Dense layer: init from a shape, apply to a batch, and that it is just x @ w + b;
  2. a network is a layer too (serial), its parameters a pytree you can map over;
  3. state and keys: Dropout takes a key, BatchNorm returns its new running statistics;
  4. jax.jit of apply: same numbers, much faster, retraced only for new shapes;
  5. a training loop built from these pure pieces, fitting y = sin(3x).

Figures (in --out): 01_sine_fit.png, 01_jit_speed.png.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fnn import BatchNorm, Dense, Dropout, Relu, Tanh, losses, optim, serial


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tutorial_out"), help="directory for the figures")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("FNN_TUTORIAL_QUICK") == "1",
                        help="fewer steps (for CI); also set by FNN_TUTORIAL_QUICK=1")
    return parser.parse_args(argv)


def section(title):
    print(f"\n== {title}")


# --8<-- [start:one_layer]
def one_layer(key):
    section("1. One layer: init from a shape, apply to a batch")
    layer = Dense(3)
    k_init, k_x = jax.random.split(key)
    # Shapes exclude the batch axis: this layer takes examples of 2 features.
    out_shape, params, state = layer.init(k_init, (2,))
    print(f"{layer.name}: output shape {out_shape}, params {jax.tree.map(jnp.shape, params)}, state {state}")
    x = jax.random.normal(k_x, (4, 2))                     # a batch of 4 examples
    y, state = layer.apply(params, state, x)
    print(f"apply: x {x.shape} -> y {y.shape}")
    # Nothing is hidden: the layer is the formula, with the parameters passed in.
    assert jnp.allclose(y, x @ params["w"] + params["b"])
    print("y == x @ w + b: True")
# --8<-- [end:one_layer]


# --8<-- [start:network_as_pytree]
def network_as_pytree(key):
    section("2. A network is a layer; its parameters are a pytree")
    model = serial(Dense(32), Tanh(), Dense(32), Tanh(), Dense(1))
    out_shape, params, state = model.init(key, (1,))
    print(f"serial of {len(params)} layers, output shape {out_shape}")
    print("params shapes:", jax.tree.map(jnp.shape, params))
    n = sum(p.size for p in jax.tree.leaves(params))
    print(f"{n} parameters in {len(jax.tree.leaves(params))} arrays")
    # Any function of arrays maps over the whole tree; the original is never modified.
    halved = jax.tree.map(lambda p: 0.5 * p, params)
    x = jnp.linspace(-1, 1, 5)[:, None]
    y1, _ = model.apply(params, state, x)
    y2, _ = model.apply(params, state, x)
    y3, _ = model.apply(halved, state, x)
    print(f"same inputs, same outputs: {bool(jnp.array_equal(y1, y2))}; halved params, other outputs: "
          f"{not bool(jnp.allclose(y1, y3))}")
    return model, params, state
# --8<-- [end:network_as_pytree]


# --8<-- [start:state_and_keys]
def state_and_keys(key):
    section("3. State and keys are explicit")
    k_init, k_x, k_drop1, k_drop2 = jax.random.split(key, 4)
    x = jax.random.normal(k_x, (6, 4)) + 3.0
    drop = Dropout(0.5)
    _, p, s = drop.init(k_init, (4,))
    a, _ = drop.apply(p, s, x, key=k_drop1, train=True)
    b, _ = drop.apply(p, s, x, key=k_drop1, train=True)
    c, _ = drop.apply(p, s, x, key=k_drop2, train=True)
    e, _ = drop.apply(p, s, x, train=False)
    print(f"Dropout(0.5), train=True: same key -> same mask: {bool(jnp.array_equal(a, b))}, "
          f"other key -> other mask: {not bool(jnp.array_equal(a, c))}; train=False is the identity: "
          f"{bool(jnp.array_equal(e, x))}")

    bn = BatchNorm()
    _, p, s = bn.init(k_init, (4,))
    y, s_new = bn.apply(p, s, x, train=True)
    print(f"BatchNorm state before: mean {np.round(s['mean'], 2)}; after one train batch: "
          f"mean {np.round(s_new['mean'], 2)} (momentum 0.9: 10% of the batch mean of ~3)")
    print(f"train=True output has mean {float(y.mean()):.1e} and std {float(y.std()):.2f} per batch")
# --8<-- [end:state_and_keys]


# --8<-- [start:jit_speed]
def jit_speed(model, params, state, reps):
    section("4. jax.jit: the same function, compiled")
    traces = []

    def forward(params, x):
        traces.append(x.shape)  # runs only while JAX traces, not when the compiled code runs
        return model.apply(params, state, x)[0]

    forward_jit = jax.jit(forward)
    x = jax.random.normal(jax.random.key(1), (256, 1))
    same = bool(jnp.allclose(forward(params, x), forward_jit(params, x), atol=1e-6))
    print(f"eager and jitted outputs agree: {same}")

    def per_call(f, *args):
        jax.block_until_ready(f(*args))          # warm up (and compile, for the jitted one)
        t0 = time.perf_counter()
        for _ in range(reps):
            out = f(*args)
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / reps * 1e3

    loss_fn = lambda p, x: jnp.mean(forward(p, x) ** 2)  # noqa: E731
    grad_eager = jax.grad(loss_fn)
    grad_jit = jax.jit(jax.grad(loss_fn))
    times = {
        "forward": (per_call(forward, params, x), per_call(forward_jit, params, x)),
        "gradient": (per_call(grad_eager, params, x), per_call(grad_jit, params, x)),
    }
    for what, (eager, jitted) in times.items():
        print(f"{what:8s}: eager {eager:7.3f} ms/call, jitted {jitted:6.3f} ms/call ({eager / jitted:5.1f}x)")
    traces.clear()
    forward_jit(params, x)
    forward_jit(params, x + 1.0)       # same shape: the compiled code is reused
    forward_jit(params, x[:100])       # a new batch size: traced and compiled again
    print(f"three jitted calls with x of shapes (256, 1), (256, 1), (100, 1): traced {len(traces)} time(s), "
          f"for {traces} ((256, 1) was compiled above)")
    return times
# --8<-- [end:jit_speed]


# --8<-- [start:train_sine]
def train_sine(key, steps):
    section(f"5. Training from pure pieces: fit sin(3x), {steps} Adam steps")
    k_data, k_init = jax.random.split(key)
    x = jax.random.uniform(k_data, (256, 1), minval=-1.5, maxval=1.5)
    y = jnp.sin(3 * x)
    model = serial(Dense(64), Relu(), Dense(64), Relu(), Dense(1))
    _, params, state = model.init(k_init, (1,))
    opt = optim.adam(3e-3)
    opt_state = opt.init(params)
    params0 = params

    def loss_fn(params, x, y):
        pred, _ = model.apply(params, state, x)
        return losses.mse.value(pred, y)

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state, loss

    history = []
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, x, y)
        history.append(float(loss))
        if i % max(steps // 5, 1) == 0 or i == steps - 1:
            print(f"step {i:5d}  mse {history[-1]:.5f}")
    return model, state, params0, params, (x, y), history
# --8<-- [end:train_sine]


def plot(out: Path, model, state, params0, params, data, history, times, steps):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = (np.asarray(a)[:, 0] for a in data)
    grid = jnp.linspace(-1.5, 1.5, 300)[:, None]
    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    ax.plot(x, y, ".", color="grey", ms=4, label="training data: sin(3x)")
    ax.plot(grid[:, 0], model.apply(params0, state, grid)[0][:, 0], "--", color="tab:orange",
            label="model at init")
    ax.plot(grid[:, 0], model.apply(params, state, grid)[0][:, 0], "-", color="tab:blue", lw=2,
            label=f"model after {steps} steps")
    ax.set(title="serial(Dense(64), Relu(), Dense(64), Relu(), Dense(1))", xlabel="x", ylabel="y")
    ax.set_ylim(-1.9, 1.25)
    ax.legend(loc="lower center", ncol=2, fontsize=8)
    ax.grid(alpha=0.3)
    ax_loss.semilogy(history, color="tab:blue")
    ax_loss.set(title="Training loss (Adam, lr 3e-3, full batch of 256)", xlabel="step",
                ylabel="MSE (log scale)")
    ax_loss.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out / "01_sine_fit.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=100)
    labels = list(times)
    eager = [times[k][0] for k in labels]
    jitted = [times[k][1] for k in labels]
    pos = np.arange(len(labels))
    bars_e = ax.bar(pos - 0.2, eager, 0.4, label="eager (op by op)", color="tab:orange")
    bars_j = ax.bar(pos + 0.2, jitted, 0.4, label="jax.jit (compiled)", color="tab:blue")
    for bars in (bars_e, bars_j):
        ax.bar_label(bars, fmt="%.2f ms", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(pos, [f"{k}\n(batch 256, 5-layer MLP)" for k in labels])
    ax.set(ylabel="time per call (ms, log scale)", title="Same pure function, eager vs compiled")
    ax.set_ylim(top=max(eager) * 5)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "01_jit_speed.png")
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    steps, reps = (300, 5) if args.quick else (2000, 30)
    keys = jax.random.split(jax.random.key(0), 4)
    one_layer(keys[0])
    model, params, state = network_as_pytree(keys[1])
    state_and_keys(keys[2])
    times = jit_speed(model, params, state, reps)
    sine = train_sine(keys[3], steps)
    plot(args.out, *sine, times, steps)
    print(f"\nfigures in {args.out}/: 01_sine_fit.png, 01_jit_speed.png")


if __name__ == "__main__":
    main()
