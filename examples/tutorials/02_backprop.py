"""Tutorial 2: backpropagation by hand, checked against jax.grad.

    python examples/tutorials/02_backprop.py [--out tutorial_out] [--quick]

What it shows, in order:
  1. the batched linear layer Y = X·W + b and its three gradients,
     dL/dX = dL/dY·Wᵀ, dL/dW = Xᵀ·dL/dY, dL/db = Σₙ dL/dY, checked against jax.vjp;
  2. the delta rules of a 784-128-64-10 sigmoid MLP with softmax cross-entropy, written out in
     jax.numpy, checked against jax.grad (float32 and float64);
  3. the same network built from fnn layers: value_and_grad(grad_mode="manual") chains the layers'
     hand-derived backward functions and gives the same numbers as mode="autodiff";
  4. fnn.check_layer / fnn.check_model: the same checks plus finite differences, for any layer;
  5. training with the manual gradient next to training with autodiff.

Figures (in --out): 02_grad_agreement.png, 02_manual_vs_autodiff.png.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnn
from fnn import Dense, Sigmoid, data, losses, optim, serial
from fnn.gradcheck import rel_err


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tutorial_out"), help="directory for the figures")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("FNN_TUTORIAL_QUICK") == "1",
                        help="less data and fewer steps (for CI); also set by FNN_TUTORIAL_QUICK=1")
    return parser.parse_args(argv)


def section(title):
    print(f"\n== {title}")


def load_slice(n):
    """The first n Fashion-MNIST training images, flattened to (n, 784) and standardized; labels (n,)."""
    ds = data.load_fashion_mnist(download=False, verbose=False)
    x, y = ds.train[0][:n], ds.train[1][:n]
    x = data.Standardizer.fit(x, per="global").apply(x).reshape(n, -1)
    return x, jnp.asarray(y)


# ----------------------------------------------------------------------------------------
# 1. The linear layer


# --8<-- [start:linear_layer_check]
def linear_layer_check(key):
    section("1. Y = X·W + b: dX = dY·Wᵀ, dW = Xᵀ·dY, db = Σ_n dY")
    kx, kw, kb, kdy = jax.random.split(key, 4)
    n, d, m = 8, 5, 3
    x = jax.random.normal(kx, (n, d))
    w = jax.random.normal(kw, (d, m))
    b = jax.random.normal(kb, (m,))
    dy = jax.random.normal(kdy, (n, m))          # the gradient arriving from above, dL/dY

    # By hand: each entry y[n, j] = Σ_i x[n, i]·w[i, j] + b[j], so
    # dL/dx[n, i] = Σ_j dy[n, j]·w[i, j]   -> dY·Wᵀ        (N, D)
    # dL/dw[i, j] = Σ_n x[n, i]·dy[n, j]   -> Xᵀ·dY        (D, M)
    # dL/db[j]    = Σ_n dy[n, j]                           (M,)
    dx, dw, db = dy @ w.T, x.T @ dy, dy.sum(axis=0)

    # The reference: JAX's vector-Jacobian product of the forward function.
    _, vjp = jax.vjp(lambda x, w, b: x @ w + b, x, w, b)
    rx, rw, rb = vjp(dy)
    errors = {"dL/dX": rel_err(dx, rx), "dL/dW": rel_err(dw, rw), "dL/db": rel_err(db, rb)}
    for (k, v), g in zip(errors.items(), (dx, dw, db), strict=True):
        print(f"{k}: shape {g.shape}, relative difference to jax.vjp {v:.1e}")

    # fnn's Dense.backward is exactly these three lines.
    layer = Dense(m)
    dparams, dx_fnn = layer.backward({"w": w, "b": b}, {}, x, dy)
    print(f"fnn Dense.backward: dx {rel_err(dx_fnn, rx):.1e}, dw {rel_err(dparams['w'], rw):.1e}, "
          f"db {rel_err(dparams['b'], rb):.1e}")
    return errors
# --8<-- [end:linear_layer_check]


# ----------------------------------------------------------------------------------------
# 2. An MLP, delta rules by hand


SIZES = (784, 128, 64, 10)


def init_mlp(key, dtype=jnp.float32):
    """[(W1, b1), (W2, b2), (W3, b3)] with W of shape (D, M), Glorot-uniform, biases zero."""
    params = []
    for k, (d, m) in zip(jax.random.split(key, 3), zip(SIZES[:-1], SIZES[1:], strict=True), strict=True):
        limit = np.sqrt(6.0 / (d + m))
        params.append((jax.random.uniform(k, (d, m), dtype, -limit, limit), jnp.zeros((m,), dtype)))
    return params


# --8<-- [start:forward]
def forward(params, x):
    """Keep every pre-activation z and activation a: the backward pass needs them."""
    (w1, b1), (w2, b2), (w3, b3) = params
    z1 = x @ w1 + b1
    a1 = jax.nn.sigmoid(z1)
    z2 = a1 @ w2 + b2
    a2 = jax.nn.sigmoid(z2)
    z3 = a2 @ w3 + b3                      # logits
    return (x, a1, a2), z3
# --8<-- [end:forward]


def loss_value(params, x, labels):
    """Mean over the batch of −log softmax(z3)[label]."""
    _, z3 = forward(params, x)
    logp = jax.nn.log_softmax(z3)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


# --8<-- [start:backward_by_hand]
def backward_by_hand(params, x, labels):
    """The delta rules. δ is dL/dz of a layer; every line is one of section 1's formulas."""
    (w1, b1), (w2, b2), (w3, b3) = params
    (a0, a1, a2), z3 = forward(params, x)
    n = x.shape[0]
    t = jax.nn.one_hot(labels, z3.shape[1], dtype=z3.dtype)
    delta3 = (jax.nn.softmax(z3) - t) / n              # softmax + cross-entropy: (p − t)/N
    delta2 = (delta3 @ w3.T) * a2 * (1 - a2)           # back through W3, then σ'(z2) = a2(1 − a2)
    delta1 = (delta2 @ w2.T) * a1 * (1 - a1)           # back through W2, then σ'(z1)
    return [(a0.T @ delta1, delta1.sum(0)),            # dW = (input of the layer)ᵀ·δ, db = Σ_n δ
            (a1.T @ delta2, delta2.sum(0)),
            (a2.T @ delta3, delta3.sum(0))]
# --8<-- [end:backward_by_hand]


def per_param_errors(grads, ref):
    names = [f"{p}{i + 1}" for i in range(3) for p in ("W", "b")]
    flat, flat_ref = jax.tree.leaves(grads), jax.tree.leaves(ref)
    return {name: rel_err(g, r) for name, g, r in zip(names, flat, flat_ref, strict=True)}


def mlp_by_hand(key, x, y):
    section(f"2. Delta rules of a {'-'.join(map(str, SIZES))} sigmoid MLP, by hand, vs jax.grad")
    results = {}
    for dtype in (jnp.float32, jnp.float64):
        with jax.enable_x64(dtype == jnp.float64):
            params = init_mlp(key, dtype)
            xd = x.astype(dtype)
            mine = jax.jit(backward_by_hand)(params, xd, y)
            ref = jax.jit(jax.grad(loss_value))(params, xd, y)
            results[np.dtype(dtype).name] = per_param_errors(mine, ref)
    for dtype, errs in results.items():
        print(f"{dtype}: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    return results


# ----------------------------------------------------------------------------------------
# 3. The same network from fnn layers


# --8<-- [start:fnn_modes]
def fnn_modes(key, x, y):
    section("3. fnn: value_and_grad(grad_mode='manual') vs 'autodiff' vs 'custom_vjp'")
    model = serial(Dense(128), Sigmoid(), Dense(64), Sigmoid(), Dense(10))
    # The hand-made parameters drop straight in: fnn's Dense keeps w as (D, M) too.
    hand = init_mlp(key)
    params = ({"w": hand[0][0], "b": hand[0][1]}, {}, {"w": hand[1][0], "b": hand[1][1]}, {},
              {"w": hand[2][0], "b": hand[2][1]})
    state = ({},) * 5                     # no layer here keeps state
    loss = losses.softmax_cross_entropy
    grads = {}
    for mode in ("manual", "autodiff", "custom_vjp"):
        (value, _), grads[mode] = jax.jit(fnn.value_and_grad(model, loss, grad_mode=mode))(params, state, x, y)
        print(f"mode={mode:10s} loss {float(value):.6f}")
    by_hand = jax.jit(backward_by_hand)(hand, x, y)
    as_fnn = ({"w": by_hand[0][0], "b": by_hand[0][1]}, {}, {"w": by_hand[1][0], "b": by_hand[1][1]}, {},
              {"w": by_hand[2][0], "b": by_hand[2][1]})
    errors = {
        "manual vs autodiff": rel_err(grads["manual"], grads["autodiff"]),
        "custom_vjp vs autodiff": rel_err(grads["custom_vjp"], grads["autodiff"]),
        "section 2 by hand vs manual": rel_err(as_fnn, grads["manual"]),
    }
    for k, v in errors.items():
        print(f"{k:28s} relative difference {v:.1e}")
    per_layer = {f"Dense {i // 2 + 1} {p}": rel_err(grads["manual"][i][p], grads["autodiff"][i][p])
                 for i in (0, 2, 4) for p in ("w", "b")}
    return model, params, state, per_layer
# --8<-- [end:fnn_modes]


# ----------------------------------------------------------------------------------------
# 4. gradcheck


# --8<-- [start:gradchecks]
def gradchecks(key):
    section("4. fnn.check_layer / fnn.check_model: vs jax.vjp and finite differences (float64)")
    k1, k2, k3 = jax.random.split(key, 3)
    results = {}
    with jax.enable_x64(True):
        for layer, shape in ((Dense(7), (5,)), (Sigmoid(), (5,)), (fnn.Softmax(), (5,))):
            report = fnn.check_layer(layer, shape, key=k1)
            results[f"check_layer({layer.name})"] = report
        model = serial(Dense(6), Sigmoid(), Dense(4))
        labels = jnp.array([0, 3, 1, 2])
        results["check_model(3-layer MLP)"] = fnn.check_model(model, losses.softmax_cross_entropy, (5,),
                                                              labels, key=k2)
    for name, r in results.items():
        print(f"{name:28s} vs jax.vjp/autodiff {r.vjp_rel_err:.1e}, vs finite differences {r.fd_rel_err:.1e}")
    # A wrong backward is caught: here a Sigmoid whose derivative forgot the (1 − σ) factor.
    bad = fnn.Layer("BadSigmoid", Sigmoid().init, Sigmoid().apply,
                    lambda p, s, x, dy, *, key=None, train=False: ({}, dy * jax.nn.sigmoid(x)))
    try:
        with jax.enable_x64(True):
            fnn.check_layer(bad, (5,), key=k3)
    except fnn.gradcheck.GradCheckError as e:
        print(f"a wrong backward is caught: {str(e).splitlines()[0]}")
    return results
# --8<-- [end:gradchecks]


# ----------------------------------------------------------------------------------------
# 5. Training with the manual gradient


def train_two_modes(model, params, state, x, y, steps):
    section(f"5. {steps} SGD+momentum steps with mode='manual' and with mode='autodiff', side by side")
    opt = optim.momentum(0.1, 0.9)

    def make_step(mode):
        grad_fn = fnn.value_and_grad(model, losses.softmax_cross_entropy, grad_mode=mode)

        @jax.jit
        def step(params, opt_state, x, y):
            (value, _), grads = grad_fn(params, state, x, y)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optim.apply_updates(params, updates), opt_state, value

        return step

    steps_by_mode = {mode: make_step(mode) for mode in ("manual", "autodiff")}
    current = {mode: (params, opt.init(params)) for mode in steps_by_mode}
    curves = {mode: [] for mode in steps_by_mode}
    drift = []
    batches = list(data.iterate_batches(np.asarray(x), np.asarray(y), 100, key=jax.random.key(1),
                                        remainder="drop"))
    for i in range(steps):
        xb, yb = batches[i % len(batches)]
        for mode, step in steps_by_mode.items():
            p, s, v = step(*current[mode], xb, yb)
            current[mode] = (p, s)
            curves[mode].append(float(v))
        drift.append(rel_err(current["manual"][0], current["autodiff"][0]))
    for mode, values in curves.items():
        print(f"mode={mode:8s} loss: first {values[0]:.4f}, last {values[-1]:.4f}")
    print(f"parameters after {steps} steps, manual vs autodiff: relative difference {drift[-1]:.1e} "
          f"(float32 rounding)")
    return curves, drift


def plot(out: Path, linear, hand, per_layer, checks, curves, drift):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("§1 Y=XW+b by hand vs jax.vjp (f32)", k, v) for k, v in linear.items()]
    rows += [(f"§2 delta rules vs jax.grad ({dt[:1]}{dt[5:]})", k, v) for dt, errs in hand.items()
             for k, v in errs.items()]
    rows += [("§3 fnn manual vs autodiff (f32)", k, v) for k, v in per_layer.items()]
    rows += [("§4 gradcheck vs finite differences (f64)", k.replace("check_", ""), r.fd_rel_err)
             for k, r in checks.items()]
    groups = list(dict.fromkeys(g for g, _, _ in rows))
    colors = dict(zip(groups, plt.get_cmap("tab10").colors, strict=False))
    fig, ax = plt.subplots(figsize=(9, 8.5), dpi=90)
    pos = np.arange(len(rows))[::-1]
    vals = [max(v, 1e-18) for _, _, v in rows]
    ax.barh(pos, vals, color=[colors[g] for g, _, _ in rows])
    for y_pos, (_, _, v) in zip(pos, rows, strict=True):
        if v == 0:
            ax.text(2e-18, y_pos, "exactly 0", va="center", fontsize=8, color="dimgrey")
    ax.set_yticks(pos, [k for _, k, _ in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(1e-18, 1e-2)
    for eps, name in ((np.finfo(np.float32).eps, "float32 eps"), (np.finfo(np.float64).eps, "float64 eps")):
        ax.axvline(eps, color="black", ls="--", lw=0.8)
        ax.text(eps * 1.3, pos[0] + 0.6, name, fontsize=8, va="bottom")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[g]) for g in groups]
    ax.legend(handles, groups, loc="lower right", fontsize=8)
    ax.set(xlabel="relative difference max|a − b| / max|b| (log scale)",
           title="Hand-derived gradients agree with autodiff to rounding error")
    ax.set_ylim(-1, len(rows) + 0.5)
    fig.tight_layout()
    fig.savefig(out / "02_grad_agreement.png")
    plt.close(fig)

    fig, (ax, ax_diff) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for mode, style in (("autodiff", dict(color="tab:orange", lw=3, alpha=0.6)),
                        ("manual", dict(color="tab:blue", lw=1, ls="--"))):
        ax.plot(curves[mode], label=f"mode='{mode}'", **style)
    ax.set(xlabel="step (batch of 100)", ylabel="cross-entropy loss",
           title="Same start, same batches: the two curves coincide")
    ax.grid(alpha=0.3)
    ax.legend()
    ax_diff.semilogy(np.arange(1, len(drift) + 1), np.maximum(drift, 1e-10), color="tab:purple")
    ax_diff.axhline(np.finfo(np.float32).eps, color="black", ls="--", lw=0.8, label="float32 eps")
    ax_diff.set(xlabel="step", ylabel="max|θ_manual − θ_autodiff| / max|θ| (log)", ylim=(1e-10, 1e-3),
                title="Parameters of the two runs: rounding-level drift")
    ax_diff.grid(alpha=0.3, which="both")
    ax_diff.legend()
    fig.suptitle("SGD + momentum on 784-128-64-10 sigmoid MLP: hand-derived backward vs jax.grad")
    fig.tight_layout()
    fig.savefig(out / "02_manual_vs_autodiff.png")
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    n, steps = (500, 100) if args.quick else (3000, 600)
    x, y = load_slice(n)
    keys = jax.random.split(jax.random.key(0), 4)
    linear = linear_layer_check(keys[0])
    hand = mlp_by_hand(keys[1], x, y)
    model, params, state, per_layer = fnn_modes(keys[1], x, y)
    checks = gradchecks(keys[2])
    curves, drift = train_two_modes(model, params, state, x, y, steps)
    plot(args.out, linear, hand, per_layer, checks, curves, drift)
    print(f"\nfigures in {args.out}/: 02_grad_agreement.png, 02_manual_vs_autodiff.png")


if __name__ == "__main__":
    main()
