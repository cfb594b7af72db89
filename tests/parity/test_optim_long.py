"""Long closed-loop parity (300 steps, float64): every rule against torch.optim or a NumPy transcription.

The 20-step parity tests miss bugs that only show late (Adam's bias correction frozen after step 20)
or only outside the usual hyperparameters (Rprop's clamp when lr lies outside [min_step, max_step]).
Here each side computes its gradient from its own current params with the same jax function
(``closed_loop_problem``: a convex loss with moving targets, so the gradients stay non-trivial and
rounding differences are damped, not amplified), and the params are compared at every step.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _optim_parity import (  # noqa: E402
    LONG_STEPS,
    closed_loop_problem,
    random_tree,
    run_fnn_closed_loop,
    run_host_closed_loop,
    run_torch_closed_loop,
    step_errors,
)
from conftest import RTOL64  # noqa: E402

from fnn import optim  # noqa: E402

T = torch.optim
SCALE = 0.3  # the lr_scale of the reduce-on-plateau cases


def _adagrad_lr_decay(lr, lr_decay):
    """torch's Adagrad(lr_decay=) as a schedule: fnn has no lr_decay argument (see adagrad's docstring)."""
    return lambda count: lr / (1.0 + jnp.asarray(count).astype(jnp.float64) * lr_decay)


# id: (fnn optimizer, torch optimizer factory, torch scheduler factory or None)
CASES = {
    "sgd": (optim.sgd(0.1), lambda p: T.SGD(p, lr=0.1), None),
    "momentum": (optim.momentum(0.05, 0.9), lambda p: T.SGD(p, lr=0.05, momentum=0.9), None),
    "nesterov": (optim.nesterov(0.05, 0.9), lambda p: T.SGD(p, lr=0.05, momentum=0.9, nesterov=True), None),
    "nesterov_weight_decay": (optim.chain(optim.add_weight_decay(0.2), optim.nesterov(0.05, 0.9)),
                              lambda p: T.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.2), None),
    "momentum_dampening_weight_decay": (
        optim.chain(optim.add_weight_decay(0.2), optim.momentum(0.05, 0.8, dampening=0.3)),
        lambda p: T.SGD(p, lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.2), None),
    "adagrad": (optim.adagrad(0.1), lambda p: T.Adagrad(p, lr=0.1), None),
    "adagrad_lr_decay": (optim.adagrad(_adagrad_lr_decay(0.2, 0.05)), lambda p: T.Adagrad(p, lr=0.2, lr_decay=0.05),
                         None),
    "rmsprop": (optim.rmsprop(0.01), lambda p: T.RMSprop(p, lr=0.01), None),
    # A large eps, so where it sits (inside or outside the root) changes every step visibly.
    "rmsprop_eps": (optim.rmsprop(0.01, decay=0.9, eps=0.1), lambda p: T.RMSprop(p, lr=0.01, alpha=0.9, eps=0.1),
                    None),
    "rmsprop_centered_momentum": (
        optim.rmsprop(0.01, decay=0.9, eps=1e-3, centered=True, momentum=0.7),
        lambda p: T.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-3, centered=True, momentum=0.7), None),
    "rmsprop_momentum": (optim.rmsprop(0.01, momentum=0.5), lambda p: T.RMSprop(p, lr=0.01, momentum=0.5), None),
    "adam": (optim.adam(0.01), lambda p: T.Adam(p, lr=0.01), None),
    "adam_hparams": (optim.adam(0.02, b1=0.8, b2=0.95, eps=1e-6),
                     lambda p: T.Adam(p, lr=0.02, betas=(0.8, 0.95), eps=1e-6), None),
    "adamw": (optim.adamw(0.01, weight_decay=0.1), lambda p: T.AdamW(p, lr=0.01, weight_decay=0.1), None),
    "rprop": (optim.rprop(0.01), lambda p: T.Rprop(p, lr=0.01), None),
    "rprop_clamped": (optim.rprop(0.05, eta_minus=0.3, eta_plus=1.5, min_step=1e-3, max_step=0.2),
                      lambda p: T.Rprop(p, lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2)), None),
    "sgd_step_decay": (optim.sgd(optim.step_decay(0.1, 0.5, 50)), lambda p: T.SGD(p, lr=0.1),
                       lambda o: T.lr_scheduler.StepLR(o, step_size=50, gamma=0.5)),
    "adam_cosine": (optim.adam(optim.cosine_decay(0.01, LONG_STEPS, alpha=0.1)), lambda p: T.Adam(p, lr=0.01),
                    lambda o: T.lr_scheduler.CosineAnnealingLR(o, T_max=LONG_STEPS, eta_min=0.001)),
}


# Two leaves, a matrix and a scalar (nested trees are covered by the 20-step tests): compile time
# grows with the number of leaves, and 300 steps of each rule are compiled once per case.
LONG_SHAPES = {"w": (4, 5), "s": ()}


def _params(seed=1):
    return random_tree(np.random.default_rng(seed), LONG_SHAPES)


@functools.cache
def _problem(seed):
    return closed_loop_problem(seed=seed, shapes=LONG_SHAPES)


def _assert_every_step_close(ours, ref, label, params):
    errs = step_errors(ours, ref)
    bad = np.flatnonzero(errs > RTOL64)
    assert bad.size == 0, (f"{label}: first mismatch at step {bad[0] + 1} (relative error {errs[bad[0]]:.3g}); "
                           f"worst {errs.max():.3g} at step {errs.argmax() + 1}")
    # Not a comparison of two no-ops: the params moved, and kept moving in the second half.
    final, half = (jax.tree.map(lambda v, k=k: v[k:k + 1], ref) for k in (LONG_STEPS - 1, LONG_STEPS // 2))
    assert step_errors(final, jax.tree.map(lambda x: np.asarray(x)[None], params)).item() > 1e-3
    assert step_errors(final, half).item() > 1e-6
    print(f"{label}: worst relative error over {LONG_STEPS} steps {errs.max():.3g}")  # shown by pytest -rP


@pytest.mark.parametrize("case", list(CASES))
def test_300_steps_match_torch(case):
    opt, make_torch, scheduler = CASES[case]
    params = _params()
    grad_fn, data = _problem(2)
    ours = run_fnn_closed_loop(opt, params, grad_fn, data)
    ref = run_torch_closed_loop(make_torch, params, grad_fn, data, scheduler=scheduler)
    _assert_every_step_close(ours, ref, case, params)


@pytest.mark.parametrize(("lr", "min_step", "max_step", "first_step"),
                         [(1e-8, 1e-6, 50.0, 1e-6), (100.0, 1e-6, 50.0, 50.0), (0.5, 0.01, 0.1, 0.1)])
def test_rprop_first_step_is_clamped_like_torch(lr, min_step, max_step, first_step):
    """torch clamps Δ at every step, the first one included (where sign(g·g_prev) = 0)."""
    params = _params()
    grad_fn, data = _problem(3)
    opt = optim.rprop(lr, min_step=min_step, max_step=max_step)
    ours = run_fnn_closed_loop(opt, params, grad_fn, data)
    ref = run_torch_closed_loop(lambda p: T.Rprop(p, lr=lr, step_sizes=(min_step, max_step)), params, grad_fn, data)
    moves = np.concatenate([np.abs(r[0] - p).ravel() for r, p in zip(jax.tree.leaves(ref), jax.tree.leaves(params))])
    assert np.max(moves) == pytest.approx(first_step, rel=1e-12)
    _assert_every_step_close(ours, ref, f"rprop(lr={lr}, steps=({min_step}, {max_step}))", params)


# lr_scale: a learning-rate multiplier for the scheduled rules, torch with lr·SCALE. Rprop scales the
# applied step only (Δ is stored unscaled); since clip(s·x, s·a, s·b) = s·clip(x, a, b), that equals torch
# with the initial step and both bounds scaled. max_step 0.05 makes the clamp active.
SCALED = {
    "momentum": (optim.momentum(0.05, 0.9), lambda p: T.SGD(p, lr=0.05 * SCALE, momentum=0.9), None),
    "nesterov_weight_decay": (optim.chain(optim.add_weight_decay(0.2), optim.nesterov(0.05, 0.9)),
                              lambda p: T.SGD(p, lr=0.05 * SCALE, momentum=0.9, nesterov=True, weight_decay=0.2),
                              None),
    "adagrad_lr_decay": (optim.adagrad(_adagrad_lr_decay(0.2, 0.05)),
                         lambda p: T.Adagrad(p, lr=0.2 * SCALE, lr_decay=0.05), None),
    "rmsprop_centered_momentum": (
        optim.rmsprop(0.01, decay=0.9, eps=1e-3, centered=True, momentum=0.7),
        lambda p: T.RMSprop(p, lr=0.01 * SCALE, alpha=0.9, eps=1e-3, centered=True, momentum=0.7), None),
    "adamw": (optim.adamw(0.01, weight_decay=0.1), lambda p: T.AdamW(p, lr=0.01 * SCALE, weight_decay=0.1), None),
    # A schedule and a scale together: the scale multiplies the scheduled lr.
    "adam_cosine": (optim.adam(optim.cosine_decay(0.01, LONG_STEPS, alpha=0.1)), lambda p: T.Adam(p, lr=0.01 * SCALE),
                    lambda o: T.lr_scheduler.CosineAnnealingLR(o, T_max=LONG_STEPS, eta_min=0.001 * SCALE)),
    "rprop": (optim.rprop(0.01, max_step=0.05),
              lambda p: T.Rprop(p, lr=0.01 * SCALE, step_sizes=(1e-6 * SCALE, 0.05 * SCALE)), None),
}


@pytest.mark.parametrize("case", list(SCALED))
def test_300_steps_with_lr_scale_match_torch(case):
    opt, make_torch, scheduler = SCALED[case]
    params = _params(seed=4)
    grad_fn, data = _problem(5)
    ours = run_fnn_closed_loop(opt, params, grad_fn, data, lr_scale=SCALE)
    ref = run_torch_closed_loop(make_torch, params, grad_fn, data, scheduler=scheduler)
    _assert_every_step_close(ours, ref, f"{case} with lr_scale={SCALE}", params)
    if case == "rprop":
        moves = np.concatenate([np.abs(np.diff(v, axis=0)).ravel() for v in jax.tree.leaves(ref)])
        assert np.max(moves) == pytest.approx(0.05 * SCALE, rel=1e-12)  # max_step reached


# The course's formulas, transcribed in NumPy (no torch equivalent).

def ema_momentum_reference(lr, gamma):
    """v = γv + (1−γ)g, θ −= lr·v, with v₀ = 0."""
    velocity = []

    def step(params, grads):
        if not velocity:
            velocity.extend(np.zeros_like(p) for p in params)
        velocity[:] = [gamma * v + (1.0 - gamma) * g for v, g in zip(velocity, grads, strict=True)]
        return [p - lr * v for p, v in zip(params, velocity, strict=True)]

    return step


def uncorrected_adam_reference(lr, b1, b2, eps):
    """m = β₁m + (1−β₁)g, v = β₂v + (1−β₂)g², θ −= lr·m/(√v + ε), with m₀ = v₀ = 0."""
    moments = []

    def step(params, grads):
        if not moments:
            moments.extend((np.zeros_like(p), np.zeros_like(p)) for p in params)
        moments[:] = [(b1 * m + (1.0 - b1) * g, b2 * v + (1.0 - b2) * g * g)
                      for (m, v), g in zip(moments, grads, strict=True)]
        return [p - lr * m / (np.sqrt(v) + eps) for p, (m, v) in zip(params, moments, strict=True)]

    return step


REFERENCE_CASES = {
    "ema_momentum": (optim.ema_momentum(0.1, 0.9), lambda: ema_momentum_reference(0.1, 0.9)),
    "ema_momentum_decay_0.5": (optim.ema_momentum(0.2, 0.5), lambda: ema_momentum_reference(0.2, 0.5)),
    "adam_uncorrected": (optim.adam(0.01, bias_correction=False),
                         lambda: uncorrected_adam_reference(0.01, 0.9, 0.999, 1e-8)),
    "adam_uncorrected_hparams": (optim.adam(0.02, b1=0.8, b2=0.95, eps=1e-3, bias_correction=False),
                                 lambda: uncorrected_adam_reference(0.02, 0.8, 0.95, 1e-3)),
}


@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_300_steps_match_numpy_transcription(case):
    opt, make_reference = REFERENCE_CASES[case]
    params = _params(seed=6)
    grad_fn, data = _problem(7)
    ours = run_fnn_closed_loop(opt, params, grad_fn, data)
    ref = run_host_closed_loop(make_reference(), params, grad_fn, data)
    _assert_every_step_close(ours, ref, case, params)
