"""Every rule converges on an elongated quadratic and on Rosenbrock (jitted fori_loop, <= 2000 steps).

Convergence alone proves little (a Rprop that lags one step still converges); the step-by-step
parity tests in tests/parity and test_optim_rules.py are what pin the formulas down.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import optim


def quadratic(params):
    """½(x² + 20 y²): condition number 20, minimum 0 at the origin."""
    x, y = params["xy"][0], params["xy"][1]
    return 0.5 * (x * x + 20.0 * y * y)


def rosenbrock(params):
    """(1 − x)² + 100 (y − x²)²: a curved valley, minimum 0 at (1, 1)."""
    x, y = params["xy"][0], params["xy"][1]
    return (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2


def minimize(opt, loss, start, steps):
    """`steps` jitted updates from `start`; returns the final (loss, point)."""

    def body(_, carry):
        params, state = carry
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return optim.apply_updates(params, updates), state

    @jax.jit
    def run(params):
        return jax.lax.fori_loop(0, steps, body, (params, opt.init(params)))[0]

    params = run({"xy": jnp.asarray(start, jnp.float64)})
    return float(loss(params)), np.asarray(params["xy"])


# rule: (optimizer, steps, loss tolerance) on the quadratic from (3, −2)
QUADRATIC = {
    "sgd": (optim.sgd(0.05), 300, 1e-10),
    "momentum": (optim.momentum(0.02, 0.9), 300, 1e-10),
    "ema_momentum": (optim.ema_momentum(0.2, 0.9), 300, 1e-10),
    "nesterov": (optim.nesterov(0.02, 0.9), 300, 1e-10),
    "adagrad": (optim.adagrad(1.0), 300, 1e-10),
    "rmsprop": (optim.rmsprop(optim.cosine_decay(0.03, 600)), 600, 1e-8),
    "rmsprop_centered_momentum": (optim.rmsprop(3e-3, centered=True, momentum=0.9), 600, 1e-8),
    "adam": (optim.adam(0.1), 300, 1e-10),
    "adam_uncorrected": (optim.adam(0.1, bias_correction=False), 300, 1e-10),
    "adamw": (optim.adamw(0.1, weight_decay=1e-4), 300, 1e-10),
    "rprop": (optim.rprop(0.01), 300, 1e-10),
    "clip_sgd": (optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.05)), 400, 1e-10),
}

# rule: (optimizer, steps, loss tolerance) on Rosenbrock from (−1.5, 2), where the loss is 12.5.
# AdaGrad's shrinking steps make it the slowest along the valley, as expected.
ROSENBROCK = {
    "sgd": (optim.sgd(2e-3), 2000, 1e-3),
    "momentum": (optim.momentum(1e-3, 0.9), 2000, 1e-6),
    "ema_momentum": (optim.ema_momentum(1e-2, 0.9), 2000, 1e-6),
    "nesterov": (optim.nesterov(1e-3, 0.9), 2000, 1e-6),
    "adagrad": (optim.adagrad(1.5), 2000, 2e-2),
    "rmsprop": (optim.rmsprop(optim.cosine_decay(1e-2, 2000)), 2000, 1e-2),
    "rmsprop_momentum": (optim.rmsprop(3e-4, momentum=0.9), 2000, 1e-6),
    "adam": (optim.adam(0.1), 2000, 1e-10),
    "adam_uncorrected": (optim.adam(0.03, bias_correction=False), 2000, 1e-5),
    "adamw": (optim.adamw(0.03, weight_decay=1e-4), 2000, 1e-5),
    "rprop": (optim.rprop(0.01), 2000, 1e-3),
}


@pytest.mark.parametrize("rule", list(QUADRATIC))
def test_converges_on_an_elongated_quadratic(rule):
    opt, steps, tol = QUADRATIC[rule]
    loss, point = minimize(opt, quadratic, [3.0, -2.0], steps)
    assert loss < tol, f"{rule}: loss {loss:.3g} at {point}"


@pytest.mark.parametrize("rule", list(ROSENBROCK))
def test_converges_on_rosenbrock(rule):
    opt, steps, tol = ROSENBROCK[rule]
    loss, point = minimize(opt, rosenbrock, [-1.5, 2.0], steps)
    assert loss < tol, f"{rule}: loss {loss:.3g} at {point}"
    # On the valley floor near (1, 1), with x > 0.9, and not merely somewhere low in it.
    assert np.all(np.abs(point - 1.0) < 0.5 if tol > 1e-3 else np.abs(point - 1.0) < 0.1), point


def test_a_diverging_learning_rate_is_caught():
    """The convergence check can fail: SGD above 2/L on the quadratic diverges."""
    loss, _ = minimize(optim.sgd(0.11), quadratic, [3.0, -2.0], 300)
    assert not loss < 1.0
