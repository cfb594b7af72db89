"""Mixed precision: float32 master parameters, bfloat16 forward and backward passes.

    python examples/mixed_precision.py --quick     # an MLP, 1 epoch on the embedded sample: seconds
    python examples/mixed_precision.py             # simple_cnn, 2 epochs on all of Fashion-MNIST

Trains the same model from the same key twice, in float32 and as
``fit(apply_policy(model, jnp.bfloat16), ...)``, and prints test accuracy, training speed and the dtypes
that matter: the parameters and optimizer state stay float32, the matmuls and convolutions run
in bfloat16, the loss is float32. On CPUs bfloat16 is usually slower (XLA emulates it); the gain
is on GPUs and TPUs.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from fnn import data, losses, models, optim
from fnn.precision import apply_policy
from fnn.train import evaluate, fit


def compute_dtypes(model, params, state, x):
    """The dtypes of the matmuls and convolutions of one forward pass, from its jaxpr."""
    jaxpr = jax.make_jaxpr(lambda p, xx: model.apply(p, state, xx)[0])(params, x)
    ops = [e for e in jaxpr.eqns if e.primitive.name in ("dot_general", "conv_general_dilated")]
    return sorted({f"{e.primitive.name}: {e.invars[0].aval.dtype}" for e in ops})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="an MLP, 1 epoch on the embedded sample (3000 + 1000 images)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--grad-mode", default="auto", choices=("auto", "manual", "autodiff", "custom_vjp"))
    args = parser.parse_args()

    ds = data.load_sample() if args.quick else data.load_fashion_mnist(download=False, verbose=False)
    (x, y), (x_test, y_test) = ds.train, ds.test
    scaler = data.Standardizer.fit(x, per="global")
    x, x_test = np.asarray(scaler.apply(x)), np.asarray(scaler.apply(x_test))
    if args.quick:
        model = models.mlp((784, 256, 10))
        x, x_test = x.reshape(len(x), -1), x_test.reshape(len(x_test), -1)
    else:
        model = models.simple_cnn()
    epochs = args.epochs or (1 if args.quick else 2)
    print(f"{ds.source}: {len(x)} training images, {model.name}, {epochs} epoch(s), "
          f"grad_mode={args.grad_mode}")

    loss = losses.softmax_cross_entropy
    for compute_dtype in (None, jnp.bfloat16):
        # float32 master parameters, compute_dtype for the forward and backward passes
        run_model = model if compute_dtype is None else apply_policy(model, compute_dtype)
        t0 = time.perf_counter()
        ts, history = fit(run_model, loss, optim.adam(1e-3), (x, y), epochs=epochs, batch_size=128,
                          key=jax.random.key(0), grad_mode=args.grad_mode)
        wall = time.perf_counter() - t0
        result = evaluate(run_model, loss, ts.params, ts.state, x_test, y_test)
        name = "float32" if compute_dtype is None else "bfloat16"
        leaves = jax.tree.leaves((ts.params, ts.opt_state))
        print(f"{name:>8}: test accuracy {result['accuracy']:.4f}, train loss {history.train_loss[-1]:.4f}, "
              f"{sum(history.seconds):.1f} s training ({np.mean(history.images_per_second):.0f} img/s), "
              f"compile {history.compile_seconds:.1f} s, total {wall:.1f} s")
        print(f"          params + optimizer state: {sorted({str(a.dtype) for a in leaves})}; forward: "
              f"{compute_dtypes(run_model, ts.params, ts.state, x_test[:2])}; output "
              f"{run_model.apply(ts.params, ts.state, x_test[:2])[0].dtype}")


if __name__ == "__main__":
    main()
