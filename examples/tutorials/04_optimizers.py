"""Tutorial 4: optimizers on 2-D loss surfaces: SGD, momentum, Nesterov, AdaGrad, RMSprop, Adam, Rprop.

    python examples/tutorials/04_optimizers.py [--out tutorial_out] [--quick]

What it shows, in order:
  1. the optimizer contract: init(params) -> state (a NamedTuple), update(grads, state, params)
     -> (updates, state), apply_updates; one step of each rule by hand;
  2. trajectories on an ill-conditioned quadratic bowl (a long narrow valley) and on the
     Rosenbrock banana, each run one jitted lax.scan;
  3. the loss per step on both surfaces;
  4. learning-rate sensitivity: the loss after a fixed budget of steps for 40 learning rates,
     all trained at once with jax.vmap (a learning rate may be a traced value).

Figures (in --out): 04_trajectories.png, 04_loss.png, 04_lr_sensitivity.png.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fnn import optim


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tutorial_out"), help="directory for the figures")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("FNN_TUTORIAL_QUICK") == "1",
                        help="fewer steps and learning rates (for CI); also set by FNN_TUTORIAL_QUICK=1")
    return parser.parse_args(argv)


def section(title):
    print(f"\n== {title}")


# ----------------------------------------------------------------------------------------
# Two surfaces

_THETA = np.pi / 6
_ROT = np.array([[np.cos(_THETA), -np.sin(_THETA)], [np.sin(_THETA), np.cos(_THETA)]])
_HESSIAN = jnp.asarray(_ROT @ np.diag([1.0, 40.0]) @ _ROT.T, jnp.float32)


# --8<-- [start:valley]
def valley(p):
    """½·pᵀHp with H of eigenvalues 1 and 40 (condition number 40), rotated 30°; minimum 0 at 0."""
    return 0.5 * p @ _HESSIAN @ p
# --8<-- [end:valley]


def rosenbrock(p):
    """(1 − x)² + 100·(y − x²)²; minimum 0 at (1, 1) at the end of a curved, flat-bottomed valley."""
    return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2


# Each surface: the function, its start, its minimum, the plot window, and learning rates tuned
# by hand for that surface (the labels show them: a fair race needs each rule at its own best).
SURFACES = {
    "valley": dict(f=valley, start=(-3.0, 0.0), minimum=(0.0, 0.0), window=((-3.5, 2.0), (-2.5, 1.5)), rules={
        "SGD": ("lr 0.045", optim.sgd(0.045)),
        "Momentum": ("lr 0.01, μ 0.9", optim.momentum(0.01, 0.9)),
        "Nesterov": ("lr 0.01, μ 0.9", optim.nesterov(0.01, 0.9)),
        "AdaGrad": ("lr 1.0", optim.adagrad(1.0)),
        "RMSprop": ("lr 0.1", optim.rmsprop(0.1)),
        "Adam": ("lr 0.3", optim.adam(0.3)),
        "Rprop": ("Δ₀ 0.1", optim.rprop(0.1)),
    }),
    "rosenbrock": dict(f=rosenbrock, start=(-1.5, 2.0), minimum=(1.0, 1.0), window=((-2.0, 2.0), (-1.0, 3.3)),
                       rules={
        "SGD": ("lr 1.5e-3", optim.sgd(1.5e-3)),
        "Momentum": ("lr 1e-3, μ 0.9", optim.momentum(1e-3, 0.9)),
        "Nesterov": ("lr 1e-3, μ 0.9", optim.nesterov(1e-3, 0.9)),
        "AdaGrad": ("lr 1.0", optim.adagrad(1.0)),
        "RMSprop": ("lr 5e-4, μ 0.9", optim.rmsprop(5e-4, momentum=0.9)),
        "Adam": ("lr 0.1", optim.adam(0.1)),
        "Rprop": ("Δ₀ 0.01", optim.rprop(0.01)),
    }),
}
RULES = list(SURFACES["valley"]["rules"])
COLORS = dict(zip(RULES, ("tab:grey", "tab:blue", "tab:cyan", "tab:green", "tab:purple", "tab:red",
                          "tab:orange"), strict=True))


# --8<-- [start:run]
def run(f, opt, start, steps):
    """(steps + 1, 2) points and (steps + 1,) losses from `start`: one lax.scan, jit it."""
    def step(carry, _):
        p, state = carry
        updates, state = opt.update(jax.grad(f)(p), state, p)
        p = optim.apply_updates(p, updates)
        return (p, state), p

    p0 = jnp.asarray(start, jnp.float32)
    _, path = jax.lax.scan(step, (p0, opt.init(p0)), None, length=steps)
    path = jnp.concatenate([p0[None], path])
    return path, jax.vmap(f)(path)
# --8<-- [end:run]


# --8<-- [start:contract]
def contract():
    section("1. The optimizer contract, one Adam step by hand")
    params = {"xy": jnp.array([-3.0, 0.0])}           # any pytree of arrays
    opt = optim.adam(0.3)
    state = opt.init(params)
    print(f"adam state: {type(state).__name__}{tuple(state._fields)}, count {int(state.count)}")
    grads = jax.grad(lambda p: valley(p["xy"]))(params)
    updates, state = opt.update(grads, state, params)
    new = optim.apply_updates(params, updates)
    print(f"grad {np.round(grads['xy'], 3)} -> update {np.round(updates['xy'], 3)} (sign included; "
          f"Adam's first step is −lr·sign(g)) -> params {np.round(new['xy'], 3)}")
    for name in RULES:
        _, rule = SURFACES["valley"]["rules"][name]
        print(f"{name:9s} state fields: {type(rule.init(params)).__name__}{tuple(rule.init(params)._fields)}")
# --8<-- [end:contract]


def race(steps):
    results = {}
    for surface, spec in SURFACES.items():
        n = steps[surface]
        section(f"2. {surface}: {n} steps from {spec['start']}")
        results[surface] = {}
        for name, (label, opt) in spec["rules"].items():
            path, loss = jax.jit(run, static_argnums=(0, 1, 2, 3))(spec["f"], opt, spec["start"], n)
            results[surface][name] = (label, np.asarray(path), np.asarray(loss))
            print(f"{name:9s} ({label:15s}) final point ({path[-1, 0]: .4f}, {path[-1, 1]: .4f}), "
                  f"loss {float(loss[-1]):.2e}")
    return results


# --8<-- [start:lr_sensitivity]
def lr_sensitivity(lrs, steps):
    section(f"4. Learning-rate sensitivity on the valley: loss after {steps} steps, "
            f"{len(lrs)} learning rates")
    makers = {"SGD": optim.sgd, "Momentum": lambda lr: optim.momentum(lr, 0.9),
              "Nesterov": lambda lr: optim.nesterov(lr, 0.9), "AdaGrad": optim.adagrad,
              "RMSprop": optim.rmsprop, "Adam": optim.adam}
    start = SURFACES["valley"]["start"]
    finals = {}
    for name, make in makers.items():
        # The optimizer is built inside the vmapped function, so its learning rate is a traced value:
        # one compiled program trains all the learning rates at once.
        final = jax.jit(jax.vmap(lambda lr, make=make: run(valley, make(lr), start, steps)[1][-1]))(lrs)
        finals[name] = np.asarray(final)
    # rprop wants its initial step as a Python number (it is checked when the rule is built),
    # so it gets a plain loop, one small compilation per value, over every other learning rate.
    lrs_rprop = lrs[::2]
    finals["Rprop"] = np.array([
        float(jax.jit(lambda lr=float(lr): run(valley, optim.rprop(lr), start, steps)[1][-1])())
        for lr in lrs_rprop])
    for name in finals:
        grid = np.asarray(lrs if name != "Rprop" else lrs_rprop)
        ok = np.isfinite(finals[name]) & (finals[name] < 1e-3)
        span = f"{grid[ok].min():.1e} to {grid[ok].max():.1e}" if ok.any() else "none"
        print(f"{name:9s} learning rates reaching loss < 1e-3: {span}")
    return finals
# --8<-- [end:lr_sensitivity]


def plot(out: Path, results, lrs, finals, sens_steps):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(2, len(RULES), figsize=(17, 6.4), dpi=75)
    for row, (surface, spec) in zip(axes, SURFACES.items(), strict=True):
        (x0, x1), (y0, y1) = spec["window"]
        xs, ys = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
        zs = np.asarray(jax.vmap(spec["f"])(jnp.stack([xs.ravel(), ys.ravel()], 1).astype(jnp.float32)))
        zs = zs.reshape(xs.shape) + 1e-3
        levels = np.logspace(np.log10(zs.min()), np.log10(zs.max()), 14)
        for ax, (name, (label, path, loss)) in zip(row, results[surface].items(), strict=True):
            ax.contour(xs, ys, zs, levels=levels, norm=LogNorm(), colors="silver", linewidths=0.6)
            ax.plot(path[:, 0], path[:, 1], "-", color=COLORS[name], lw=1.4)
            ax.plot(path[-1, 0], path[-1, 1], "o", color=COLORS[name], ms=5, mec="black", mew=0.6)
            ax.plot(*spec["start"], "s", color="black", ms=6)
            ax.plot(*spec["minimum"], "*", color="gold", ms=13, mec="black")
            ax.set(xlim=(x0, x1), ylim=(y0, y1), xticks=[], yticks=[])
            ax.set_title(f"{name} ({label})\nfinal loss {loss[-1]:.1e}", fontsize=9)
        steps = len(path) - 1
        what = "valley ½·pᵀHp,\ncondition 40" if surface == "valley" else "Rosenbrock\n(1−x)² + 100(y−x²)²"
        row[0].set_ylabel(f"{what}\n{steps} steps", fontsize=10)
    fig.suptitle("Trajectories from ■ toward the minimum ★ (• = where each run ends); "
                 "grey: loss contours, log-spaced", fontsize=12)
    fig.tight_layout()
    fig.savefig(out / "04_trajectories.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), dpi=80)
    for ax, surface in zip(axes, SURFACES, strict=True):
        for name, (label, _, loss) in results[surface].items():
            ax.semilogy(np.maximum(loss, 1e-16), color=COLORS[name], lw=1.5, label=f"{name} ({label})")
        ax.set(title=f"{surface}: loss per step", xlabel="step", ylabel="loss (log scale)", ylim=(1e-14, 1e3))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "04_loss.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8.5, 4.8), dpi=85)
    for name, final in finals.items():
        shown = np.where(np.isfinite(final), np.clip(final, 1e-14, 1e6), 1e6)
        grid = lrs if name != "Rprop" else lrs[::2]
        ax.loglog(grid, shown, "o-", ms=3, color=COLORS[name], label=name)
    ax.axhline(1e6, color="black", lw=0.5)
    ax.text(lrs[0], 2e6, "diverged (or ≥ 1e6)", fontsize=8, va="bottom")
    ax.set(xlabel="learning rate (Rprop: initial step Δ₀)",
           ylabel=f"loss after {sens_steps} steps (log scale)", ylim=(1e-15, 1e8),
           title="The valley: how much does each rule care about its learning rate?")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=8, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "04_lr_sensitivity.png")
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        steps, lrs, sens_steps = {"valley": 100, "rosenbrock": 400}, np.logspace(-4, 1, 12), 100
    else:
        steps, lrs, sens_steps = {"valley": 150, "rosenbrock": 1500}, np.logspace(-4, 1, 40), 150
    contract()
    results = race(steps)
    section("3. Loss per step: see 04_loss.png")
    finals = lr_sensitivity(jnp.asarray(lrs, jnp.float32), sens_steps)
    plot(args.out, results, lrs, finals, sens_steps)
    print(f"\nfigures in {args.out}/: 04_trajectories.png, 04_loss.png, 04_lr_sensitivity.png")


if __name__ == "__main__":
    main()
