"""The course's weight scales, side by side: activation spread per layer of a deep tanh and ReLU MLP.

Each initializer is one fnn expression:
  N(0,1)·0.001               init.normal(0.001)
  N(0,1)·1/√n                init.variance_scaling(1.0, "fan_in", "normal")   (= lecun_normal)
  N(0,1)·√(2/n)              init.variance_scaling(2.0, "fan_in", "normal")   (= he_normal)
  N(0,1)·√(2/(n_in+n_out))   init.variance_scaling(1.0, "fan_avg", "normal")  (= glorot_normal)
  N(0,1)·1 (too large)       init.normal(1.0)

Run:  python examples/init_scales.py [--plot init_scales.png]
      python examples/init_scales.py --quick --plot init_scales.png   (a batch of 128 inputs, not 512)
"""

import argparse

import jax
import jax.numpy as jnp

from fnn import init
from fnn.layers.activation import Relu, Tanh
from fnn.layers.combinators import serial
from fnn.layers.dense import Dense

SCALES = {
    "N(0,1)·0.001": init.normal(0.001),
    "N(0,1)·1/√n": init.variance_scaling(1.0, "fan_in", "normal"),
    "N(0,1)·√(2/n)": init.variance_scaling(2.0, "fan_in", "normal"),
    "N(0,1)·√(2/(n_in+n_out))": init.variance_scaling(1.0, "fan_avg", "normal"),
    "N(0,1)·1": init.normal(1.0),
}
DEPTH, WIDTH = 10, 256


def activation_stds(w_init, activation, key, batch: int = 512):
    """Standard deviation of each hidden layer's output for a batch of N(0, 1) inputs."""
    layers = [serial(Dense(WIDTH, w_init=w_init), activation()) for _ in range(DEPTH)]
    k_x, k_init = jax.random.split(key)
    x = jax.random.normal(k_x, (batch, WIDTH))
    stds = []
    for layer, k in zip(layers, jax.random.split(k_init, DEPTH)):
        _, params, state = layer.init(k, (WIDTH,))
        x, _ = layer.apply(params, state, x)
        stds.append(float(jnp.std(x)))
    return stds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a batch of 128 inputs instead of 512")
    parser.add_argument("--plot", help="save a PNG of the activation spread per layer here")
    args = parser.parse_args()
    key = jax.random.key(0)
    batch = 128 if args.quick else 512
    table = {(name, act.__name__): activation_stds(w, act, key, batch)
             for name, w in SCALES.items() for act in (Tanh, Relu)}
    print(f"std of each layer's activations, {DEPTH} layers of width {WIDTH}")
    print(f"{'initializer':28s} {'act':5s} " + " ".join(f"L{i + 1:<7d}" for i in range(DEPTH)))
    for (name, act), stds in table.items():
        print(f"{name:28s} {act:5s} " + " ".join(f"{s:<8.2g}" for s in stds))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for ax, act in zip(axes, ("Tanh", "Relu")):
            for name in SCALES:
                ax.semilogy(range(1, DEPTH + 1), table[(name, act)], marker="o", label=name)
            ax.set_title(f"{act}: activation std per layer")
            ax.set_xlabel("layer")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("std of activations (log scale)")
        axes[1].legend(title="initializer", fontsize=8)
        fig.suptitle(f"{DEPTH} Dense layers of width {WIDTH}, N(0, 1) inputs "
                     "(1/√n and √(2/(n_in+n_out)) coincide: the layers are square)", fontsize=10)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
