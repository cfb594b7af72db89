"""Optimizer trajectories on the Rosenbrock function, as a contour plot.

    python examples/optimizers_2d.py --out optimizers_2d.png [--steps 600]
    python examples/optimizers_2d.py --quick --out optimizers_2d.png   (500 steps, a coarser contour grid)

Runs SGD, momentum, Nesterov, AdaGrad, RMSprop, Adam and Rprop from (-1.5, 2) and draws
each path (left) and the loss per step (right). Each run is one jitted lax.scan.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from fnn import optim

START = (-1.5, 2.0)


def rosenbrock(xy):
    """(1 − x)² + 100 (y − x²)², minimum 0 at (1, 1)."""
    x, y = xy[0], xy[1]
    return (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2


# Learning rates tuned by hand for this surface and start; the labels show them.
OPTIMIZERS = {
    "SGD (lr 1.5e-3)": optim.sgd(1.5e-3),
    "Momentum (lr 1e-3, μ 0.9)": optim.momentum(1e-3, 0.9),
    "Nesterov (lr 1e-3, μ 0.9)": optim.nesterov(1e-3, 0.9),
    "AdaGrad (lr 1.0)": optim.adagrad(1.0),
    "RMSprop (lr 5e-4, μ 0.9)": optim.rmsprop(5e-4, momentum=0.9),
    "Adam (lr 0.1)": optim.adam(0.1),
    "Rprop (Δ₀ 0.01)": optim.rprop(0.01),
}


def trajectory(opt, steps: int) -> np.ndarray:
    """(steps + 1, 2) points visited from START."""

    def step(carry, _):
        xy, state = carry
        updates, state = opt.update(jax.grad(rosenbrock)(xy), state, xy)
        xy = optim.apply_updates(xy, updates)
        return (xy, state), xy

    @jax.jit
    def run(xy0):
        _, path = jax.lax.scan(step, (xy0, opt.init(xy0)), None, length=steps)
        return jnp.concatenate([xy0[None], path])

    return np.asarray(run(jnp.asarray(START, jnp.float32)))


def plot(paths: dict[str, np.ndarray], out: str, grid: int = 400) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(15, 6.5), gridspec_kw={"width_ratios": [1.35, 1]})
    xs, ys = np.meshgrid(np.linspace(-2.0, 2.0, grid), np.linspace(-1.0, 3.3, grid))
    zs = (1.0 - xs) ** 2 + 100.0 * (ys - xs**2) ** 2
    cs = ax.contourf(xs, ys, zs, levels=np.logspace(-2, 3.5, 23), norm=LogNorm(), cmap="Greys", alpha=0.55)
    ax.contour(xs, ys, zs, levels=np.logspace(-2, 3.5, 12), norm=LogNorm(), colors="grey", linewidths=0.4)
    fig.colorbar(cs, ax=ax, label="loss (log scale)", ticks=[1e-2, 1e-1, 1, 10, 100, 1000])
    colors = plt.get_cmap("tab10").colors
    steps = len(next(iter(paths.values()))) - 1
    for (name, path), c in zip(paths.items(), colors, strict=False):
        final = float(rosenbrock(path[-1]))
        ax.plot(path[:, 0], path[:, 1], "-", color=c, lw=1.6, alpha=0.9)
        ax.plot(path[-1, 0], path[-1, 1], "o", color=c, ms=6, mec="black", mew=0.6)
        losses = np.array([rosenbrock(p) for p in path])
        ax_loss.semilogy(np.arange(len(path)), np.maximum(losses, 1e-16), color=c, lw=1.5,
                         label=f"{name}: final {final:.1e}")
    ax.plot(*START, "s", color="black", ms=8, label=f"start {START}")
    ax.plot(1.0, 1.0, "*", color="gold", ms=18, mec="black", label="minimum (1, 1)")
    ax.set(xlim=(-2, 2), ylim=(-1, 3.3), xlabel="x", ylabel="y",
           title=f"Trajectories on Rosenbrock (1−x)² + 100(y−x²)², {steps} steps (• = end)")
    ax.legend(loc="lower right", fontsize=9, framealpha=0.9)
    ax_loss.set(xlabel="step", ylabel="loss (log scale)", title="Loss per step", ylim=(1e-12, 1e3))
    ax_loss.grid(True, which="major", alpha=0.3)
    ax_loss.legend(loc="lower left", fontsize=9, framealpha=0.9, title="optimizer (colour as on the left)")
    fig.suptitle("fnn.optim on a 2-D loss surface", fontsize=14)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="optimizers_2d.png", help="where to save the PNG")
    parser.add_argument("--quick", action="store_true", help="500 steps (unless --steps), a coarser contour grid")
    parser.add_argument("--steps", type=int, default=None, help="updates per optimizer: 1500 (500 with --quick)")
    args = parser.parse_args(argv)
    args.steps = args.steps or (500 if args.quick else 1500)
    paths = {name: trajectory(opt, args.steps) for name, opt in OPTIMIZERS.items()}
    for name, path in paths.items():
        print(f"{name:30s} final point ({path[-1, 0]: .4f}, {path[-1, 1]: .4f})  "
              f"loss {float(rosenbrock(path[-1])):.2e}")
    plot(paths, args.out, grid=150 if args.quick else 400)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
