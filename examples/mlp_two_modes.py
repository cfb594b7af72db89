"""Train an MLP on two interleaved spirals and check, at every step, that the hand-derived
backward gives the same gradient as jax.grad.

Two checks:
1. float32 training with the manual backward; at every step the autodiff gradient of the same
   parameters is computed too, and the worst relative difference is reported.
2. two whole float64 trajectories, one per mode, from the same start: they stay equal.

(Two float32 *trajectories* would drift apart: rounding differences of 1e-7 grow along a
long non-convex optimization, which says nothing about the gradients. Hence check 1.)

Run:  python examples/mlp_two_modes.py [--steps 2000]
      python examples/mlp_two_modes.py --quick     (600 float32 steps, 100 float64 steps: seconds)
"""

import argparse
import math

import jax
import jax.numpy as jnp

from fnn import losses, optim
from fnn.backprop import value_and_grad
from fnn.gradcheck import rel_err
from fnn.layers.activation import Tanh
from fnn.models import mlp

LOSS = losses.softmax_cross_entropy


def spirals(key, n_per_class=200, noise=0.15):
    """Two interleaved spirals in 2-D: x (2n, 2) float32, y (2n,) int32 labels."""
    t = jnp.linspace(0.25, 3.0 * math.pi, n_per_class)
    arm = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=1) / (3.0 * math.pi)
    x = jnp.concatenate([arm, -arm]) + noise * jax.random.normal(key, (2 * n_per_class, 2)) / 3
    y = jnp.concatenate([jnp.zeros(n_per_class, jnp.int32), jnp.ones(n_per_class, jnp.int32)])
    return x.astype(jnp.float32), y


def make_step(model, state, x, y, opt, mode):
    grad_fn = value_and_grad(model, LOSS, grad_mode=mode)

    @jax.jit
    def step(params, opt_state):
        (value, _), grads = grad_fn(params, state, x, y, train=True)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state, value, grads

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="600 float32 steps (unless --steps), 100 float64 steps")
    parser.add_argument("--steps", type=int, default=None, help="float32 training steps: 2000 (600 with --quick)")
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()
    args.steps = args.steps or (600 if args.quick else 2000)
    steps64 = 100 if args.quick else 300

    key_data, key_init = jax.random.split(jax.random.key(0))
    x, y = spirals(key_data)
    model = mlp((2, 64, 64, 2), activation=Tanh)
    _, params, state = model.init(key_init, (2,))
    opt = optim.adam(args.lr)

    # 1. float32 training with the manual backward, autodiff alongside on the same params.
    manual_step = make_step(model, state, x, y, opt, "manual")
    autodiff_grad = jax.jit(lambda p: value_and_grad(model, LOSS, grad_mode="autodiff")(p, state, x, y)[1])
    p, opt_state, worst = params, opt.init(params), 0.0
    for i in range(args.steps):
        reference = autodiff_grad(p)
        p, opt_state, value, grads = manual_step(p, opt_state)
        worst = max(worst, rel_err(grads, reference))
        if i % (args.steps // 5) == 0 or i == args.steps - 1:
            print(f"step {i:5d}  loss {float(value):.4f}  worst grad rel. difference so far {worst:.1e}")
    accuracy = float(jnp.mean(jnp.argmax(model.apply(p, state, x)[0], -1) == y))
    print(f"train accuracy after {args.steps} steps (manual backward): {accuracy:.3f}")

    # 2. float64: two complete trajectories, one per mode.
    with jax.enable_x64(True):
        to64 = lambda t: jax.tree.map(lambda a: a.astype(jnp.float64), t)  # noqa: E731
        x64 = x.astype(jnp.float64)
        ends = []
        for mode in ("autodiff", "manual"):
            step = make_step(model, state, x64, y, opt, mode)
            q, s = to64(params), opt.init(to64(params))
            for _ in range(steps64):
                q, s, _, _ = step(q, s)
            ends.append(q)
        drift = rel_err(ends[1], ends[0])
    print(f"float64, {steps64} steps: params(manual) vs params(autodiff) relative difference {drift:.1e}")

    agree = worst < 1e-3 and drift < 1e-8
    print("the two gradient modes agree" if agree else "THE GRADIENT MODES DISAGREE")
    raise SystemExit(0 if agree else 1)


if __name__ == "__main__":
    main()
