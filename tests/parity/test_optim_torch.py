"""Step-by-step parity of every optimizer rule and transform with torch.optim (float64, 20 steps)."""

from functools import partial

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _optim_parity import (  # noqa: E402
    gradient_sequence,
    max_step_err,
    moved,
    random_tree,
    rel_err,
    run_fnn,
    run_torch,
)
from conftest import RTOL32, RTOL64  # noqa: E402

from fnn import optim  # noqa: E402

T = torch.optim


def _clip_norm(max_norm):
    return lambda ts: torch.nn.utils.clip_grad_norm_(ts, max_norm)


def _clip_value(v):
    return lambda ts: torch.nn.utils.clip_grad_value_(ts, v)


# id: (fnn optimizer, torch factory, hook run on p.grad before step, gradient bias)
CASES = {
    "sgd": (optim.sgd(0.1), lambda p: T.SGD(p, lr=0.1), None, 0.0),
    "momentum": (optim.momentum(0.05, 0.9), lambda p: T.SGD(p, lr=0.05, momentum=0.9), None, 0.0),
    "momentum_dampening": (optim.momentum(0.05, 0.8, dampening=0.3),
                           lambda p: T.SGD(p, lr=0.05, momentum=0.8, dampening=0.3), None, 0.0),
    "nesterov": (optim.nesterov(0.05, 0.9), lambda p: T.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
                 None, 0.0),
    "adagrad": (optim.adagrad(0.1), lambda p: T.Adagrad(p, lr=0.1), None, 0.0),
    "adagrad_init_acc": (optim.adagrad(0.1, eps=1e-6, initial_accumulator=0.5),
                         lambda p: T.Adagrad(p, lr=0.1, eps=1e-6, initial_accumulator_value=0.5), None, 0.0),
    "rmsprop": (optim.rmsprop(0.01), lambda p: T.RMSprop(p, lr=0.01), None, 0.0),
    "rmsprop_centered_momentum": (
        optim.rmsprop(0.01, decay=0.9, eps=1e-6, centered=True, momentum=0.7),
        lambda p: T.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-6, centered=True, momentum=0.7), None, 0.0),
    "rmsprop_momentum": (optim.rmsprop(0.01, momentum=0.5),
                         lambda p: T.RMSprop(p, lr=0.01, momentum=0.5), None, 0.0),
    "adam": (optim.adam(0.01), lambda p: T.Adam(p, lr=0.01), None, 0.0),
    "adam_hparams": (optim.adam(0.02, b1=0.8, b2=0.95, eps=1e-6),
                     lambda p: T.Adam(p, lr=0.02, betas=(0.8, 0.95), eps=1e-6), None, 0.0),
    "adamw": (optim.adamw(0.01, weight_decay=0.1), lambda p: T.AdamW(p, lr=0.01, weight_decay=0.1),
              None, 0.0),
    "adamw_default_decay": (optim.adamw(0.01), lambda p: T.AdamW(p, lr=0.01), None, 0.0),
    "rprop": (optim.rprop(0.01), lambda p: T.Rprop(p, lr=0.01), None, 0.0),
    "rprop_defaults": (optim.rprop(), lambda p: T.Rprop(p), None, 1.5),
    "rprop_clamped": (optim.rprop(0.05, eta_minus=0.3, eta_plus=1.5, min_step=1e-3, max_step=0.2),
                      lambda p: T.Rprop(p, lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2)), None, 1.5),
    "clip_global_norm_weight_decay_adam": (
        optim.chain(optim.clip_by_global_norm(1.0, eps=1e-6), optim.add_weight_decay(0.01), optim.adam(0.01)),
        lambda p: T.Adam(p, lr=0.01, weight_decay=0.01), _clip_norm(1.0), 0.0),
    "clip_value_sgd": (optim.chain(optim.clip_by_value(0.5), optim.sgd(0.1)),
                       lambda p: T.SGD(p, lr=0.1), _clip_value(0.5), 0.0),
    "weight_decay_momentum": (optim.chain(optim.add_weight_decay(0.05), optim.momentum(0.05, 0.9)),
                              lambda p: T.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.05), None, 0.0),
    "weight_decay_rmsprop": (optim.chain(optim.add_weight_decay(0.05), optim.rmsprop(0.01)),
                             lambda p: T.RMSprop(p, lr=0.01, weight_decay=0.05), None, 0.0),
    "weight_decay_adagrad": (optim.chain(optim.add_weight_decay(0.05), optim.adagrad(0.1)),
                             lambda p: T.Adagrad(p, lr=0.1, weight_decay=0.05), None, 0.0),
    "clip_then_scale_by_lr": (optim.chain(optim.clip_by_global_norm(2.0, eps=1e-6),
                                          optim.scale_by_learning_rate(0.1)),
                              lambda p: T.SGD(p, lr=0.1), _clip_norm(2.0), 0.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_step_matches_torch(case):
    opt, make_torch, hook, bias = CASES[case]
    params = random_tree(np.random.default_rng(1))
    grads = gradient_sequence(seed=2, bias=bias)
    ours = run_fnn(opt, params, grads)
    ref = run_torch(make_torch, params, grads, before_step=hook)
    assert moved(ref, params) > 1e-3  # the comparison is not between two no-ops
    for k, (a, b) in enumerate(zip(ours, ref, strict=True)):
        err = rel_err(a, b)
        assert err <= RTOL64, f"{case}: step {k + 1} relative error {err:.3g}"


FLOAT32_CASES = ["sgd", "momentum_dampening", "nesterov", "adagrad_init_acc", "rmsprop_centered_momentum",
                 "adam", "adamw", "rprop_clamped", "clip_global_norm_weight_decay_adam"]


@pytest.mark.parametrize("case", FLOAT32_CASES)
def test_float32_steps_match_torch_float32(case):
    """Parameters, state and updates stay float32, and agree with torch's float32 to RTOL32."""
    opt, make_torch, hook, bias = CASES[case]
    to32 = partial(jax.tree.map, lambda x: np.asarray(x, np.float32))
    params = to32(random_tree(np.random.default_rng(1)))
    grads = [to32(g) for g in gradient_sequence(seed=2, bias=bias)]
    ours = run_fnn(opt, params, grads)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(ours[-1]))
    assert max_step_err(ours, run_torch(make_torch, params, grads, before_step=hook)) <= RTOL32


def test_clipping_is_active_on_some_steps_only():
    """The gradient sequence makes the clip parity cases meaningful: some norms above, some below."""
    norms = [float(optim.global_norm(g)) for g in gradient_sequence(seed=2)]
    assert min(norms) < 1.0 < max(norms)
    assert any(abs(float(x)) > 0.5 for g in gradient_sequence(seed=2) for x in np.ravel(g["w"]))


def test_rprop_clamped_case_hits_both_bounds():
    """rprop_clamped reaches max_step and min_step, so the clamp is exercised against torch."""
    params = random_tree(np.random.default_rng(1))
    grads = gradient_sequence(seed=2, bias=1.5)
    opt = optim.rprop(0.05, eta_minus=0.3, eta_plus=1.5, min_step=1e-3, max_step=0.2)
    update = jax.jit(opt.update)
    state = opt.init(params)
    hit_max = hit_min = False
    for g in grads:
        _, state = update(g, state, params)
        steps = np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.step_size)])
        hit_max |= bool(np.any(steps == 0.2))
        hit_min |= bool(np.any(steps == 1e-3))
    assert hit_max and hit_min


@pytest.mark.parametrize("scale", [0.3])
def test_lr_scale_is_a_learning_rate_multiplier(scale):
    """update(..., lr_scale=s) equals torch with lr·s (what ReduceLROnPlateau does to the group lr)."""
    params = random_tree(np.random.default_rng(3))
    grads = gradient_sequence(seed=4)
    pairs = [(optim.adam(0.01), lambda p: T.Adam(p, lr=0.01 * scale)),
             (optim.adamw(0.01, weight_decay=0.1), lambda p: T.AdamW(p, lr=0.01 * scale, weight_decay=0.1)),
             (optim.momentum(0.05), lambda p: T.SGD(p, lr=0.05 * scale, momentum=0.9))]
    for opt, make in pairs:
        ours = run_fnn(opt, params, grads, lr_scale=scale)
        assert max_step_err(ours, run_torch(make, params, grads)) <= RTOL64


SCHEDULED = {
    "sgd_step_decay": (optim.sgd(optim.step_decay(0.1, 0.5, 3)), lambda p: T.SGD(p, lr=0.1),
                       lambda o: T.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    "adam_cosine": (optim.adam(optim.cosine_decay(0.01, 20, alpha=0.1)), lambda p: T.Adam(p, lr=0.01),
                    lambda o: T.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=0.001)),
    "adamw_exponential": (optim.adamw(optim.exponential_decay(0.01, 0.9), weight_decay=0.1),
                          lambda p: T.AdamW(p, lr=0.01, weight_decay=0.1),
                          lambda o: T.lr_scheduler.ExponentialLR(o, gamma=0.9)),
    "momentum_warmup": (optim.momentum(optim.linear_warmup(0.01, 0.1, 8)),
                        lambda p: T.SGD(p, lr=0.1, momentum=0.9),
                        lambda o: T.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=8)),
}


@pytest.mark.parametrize("case", list(SCHEDULED))
def test_scheduled_rules_match_torch_with_a_scheduler(case):
    """count semantics: the schedule sees 0 at the first update, as torch's scheduler.step() after step()."""
    opt, make, sched = SCHEDULED[case]
    params = random_tree(np.random.default_rng(5))
    grads = gradient_sequence(seed=6)
    ref = run_torch(make, params, grads, scheduler=sched)
    assert max_step_err(run_fnn(opt, params, grads), ref) <= RTOL64
