"""Schedules vs torch.optim.lr_scheduler, and reduce_on_plateau vs ReduceLROnPlateau, epoch by epoch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from fnn import optim  # noqa: E402

LR_RTOL = 1e-12  # torch computes most schedules recursively (lr_k from lr_{k-1}), we in closed form
S = torch.optim.lr_scheduler


def torch_lrs(make_sched, base_lr, n):
    """The lr that torch's optimizer uses at each of n steps (scheduler.step() after optimizer.step())."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = make_sched(opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros(1)
        opt.step()
        sched.step()
    return np.array(lrs)


def fnn_lrs(schedule, n):
    """The schedule at counts 0..n-1, traced under jit (so it must be jit-able with a traced count)."""
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.arange(n, dtype=jnp.int32)))


CASES = {
    "step_decay": (optim.step_decay(0.1, 0.5, 7), lambda o: S.StepLR(o, step_size=7, gamma=0.5), 0.1, 40),
    "step_decay_1": (optim.step_decay(0.3, 0.9, 1), lambda o: S.StepLR(o, step_size=1, gamma=0.9), 0.3, 30),
    "exponential": (optim.exponential_decay(0.1, 0.9), lambda o: S.ExponentialLR(o, gamma=0.9), 0.1, 40),
    "cosine": (optim.cosine_decay(0.1, 25), lambda o: S.CosineAnnealingLR(o, T_max=25), 0.1, 26),
    "cosine_alpha": (optim.cosine_decay(0.1, 30, alpha=0.05),
                     lambda o: S.CosineAnnealingLR(o, T_max=30, eta_min=0.005), 0.1, 31),
    "linear_warmup": (optim.linear_warmup(0.01, 0.1, 10),
                      lambda o: S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=10), 0.1, 25),
    "warmup_then_cosine": (optim.join([optim.linear_warmup(0.025, 0.1, 5), optim.cosine_decay(0.1, 20)], [5]),
                           lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.25, total_iters=5),
                                                        S.CosineAnnealingLR(o, T_max=20)], milestones=[5]),
                           0.1, 26),
    # OneCycleLR raises after total_steps, so n = total_steps; cycle_momentum=False (we do not cycle it).
    "one_cycle": (optim.one_cycle(40, 0.1), lambda o: S.OneCycleLR(o, 0.1, total_steps=40, cycle_momentum=False),
                  0.1, 40),
    "one_cycle_linear": (optim.one_cycle(33, 0.2, pct_start=0.25, div_factor=10.0, final_div_factor=100.0,
                                         anneal="linear"),
                         lambda o: S.OneCycleLR(o, 0.2, total_steps=33, pct_start=0.25, div_factor=10.0,
                                                final_div_factor=100.0, anneal_strategy="linear",
                                                cycle_momentum=False), 0.2, 33),
    "one_cycle_three_phase": (optim.one_cycle(37, 0.1, pct_start=0.2, three_phase=True),
                              lambda o: S.OneCycleLR(o, 0.1, total_steps=37, pct_start=0.2, three_phase=True,
                                                     cycle_momentum=False), 0.1, 37),
}


@pytest.mark.parametrize("case", list(CASES))
def test_schedule_matches_torch_scheduler(case):
    schedule, make, base, n = CASES[case]
    ours, ref = fnn_lrs(schedule, n), torch_lrs(make, base, n)
    assert len(set(np.round(ref, 12))) > 2  # the schedule actually changes
    np.testing.assert_allclose(ours, ref, rtol=LR_RTOL, atol=0)


def test_cosine_stays_at_floor_after_decay_steps_where_torch_turns_back_up():
    """Documented difference: for count > decay_steps torch's cosine rises again; ours stays at alpha·init."""
    ours = fnn_lrs(optim.cosine_decay(0.1, 10, alpha=0.1), 15)
    ref = torch_lrs(lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.01), 0.1, 15)
    np.testing.assert_allclose(ours[:11], ref[:11], rtol=LR_RTOL)
    np.testing.assert_allclose(ours[10:], 0.01, rtol=1e-15)
    assert np.all(ref[11:] > 0.01)


# ----------------------------------------------------------------------------------------
# Reduce on plateau


def plateau_pair(metrics, base_lr=0.1, jit=True, **kw):
    """Run torch's ReduceLROnPlateau and ours on the same metrics; return both traces."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = S.ReduceLROnPlateau(opt, **kw)
    ctrl = optim.reduce_on_plateau(base_lr=base_lr, **kw)
    step = jax.jit(ctrl.step) if jit else ctrl.step
    state = ctrl.init()
    ours, ref = [], []
    for m in metrics:
        sched.step(m)
        state = step(state, m)
        ref.append((opt.param_groups[0]["lr"], sched.num_bad_epochs, sched.cooldown_counter, sched.best))
        ours.append((base_lr * float(state.scale), int(state.num_bad_epochs), int(state.cooldown_counter),
                     float(state.best)))
    return ours, ref


def assert_same_trace(ours, ref):
    for epoch, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert a[1:3] == b[1:3], f"epoch {epoch}: (bad epochs, cooldown) {a[1:3]} vs torch {b[1:3]}"
        np.testing.assert_allclose(a[0], b[0], rtol=LR_RTOL, err_msg=f"lr at epoch {epoch}")
        np.testing.assert_allclose(a[3], b[3], rtol=0, err_msg=f"best at epoch {epoch}")


# A hand-made sequence: improvements, a plateau longer than the patience, improvements
# smaller than the relative threshold 1e-2 (not counted), and a long final plateau.
HAND = [1.0, 0.9, 0.8, 0.8, 0.8, 0.8, 0.7999, 0.799, 0.5, 0.4999, 0.4998, 0.4997, 0.4996, 0.3,
        0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]

CONFIGS = {
    "defaults": dict(),
    "patience2_rel": dict(factor=0.5, patience=2, threshold=1e-2),
    "patience0": dict(factor=0.5, patience=0, threshold=1e-2),
    "abs_threshold": dict(factor=0.5, patience=1, threshold=5e-3, threshold_mode="abs"),
    "cooldown": dict(factor=0.5, patience=1, threshold=1e-2, cooldown=3),
    "min_lr": dict(factor=0.3, patience=0, threshold=1e-2, min_lr=0.004),
    # The floor allows 0.1 -> 0.0995: skipped when eps = 1e-3 exceeds the change, done when eps = 1e-4.
    "min_lr_eps_skips": dict(factor=0.9, patience=0, threshold=1e-2, min_lr=0.0995, eps=1e-3),
    "min_lr_eps_reduces": dict(factor=0.9, patience=0, threshold=1e-2, min_lr=0.0995, eps=1e-4),
    "max_mode": dict(mode="max", factor=0.5, patience=1, threshold=1e-2),
    "max_abs": dict(mode="max", factor=0.5, patience=1, threshold=0.05, threshold_mode="abs", cooldown=1),
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_plateau_matches_torch_on_a_hand_made_sequence(config):
    kw = CONFIGS[config]
    metrics = [-m for m in HAND] if kw.get("mode") == "max" else HAND
    metrics = metrics * 2  # after the final plateau the best is stale: more reductions
    ours, ref = plateau_pair(metrics, **kw)
    assert_same_trace(ours, ref)
    reductions = len({round(r[0], 15) for r in ref}) - 1
    assert reductions == 0 if config == "min_lr_eps_skips" else reductions >= 1


def test_min_lr_floor_is_reached_and_held():
    ours, ref = plateau_pair([1.0] * 12, factor=0.3, patience=0, min_lr=0.004)
    assert_same_trace(ours, ref)
    assert ref[-1][0] == 0.004 and ours[-1][0] == pytest.approx(0.004, rel=1e-14)


_factors = [1.0, 1.0, 1.0, 1.0 - 5e-5, 1.0 - 5e-3, 0.999, 0.9, 0.5, 1.05, 2.0]


@given(st.lists(st.sampled_from(_factors), min_size=5, max_size=40),
       st.sampled_from([0.1, 0.5]), st.integers(0, 3), st.sampled_from([1e-4, 1e-2]),
       st.sampled_from(["rel", "abs"]), st.integers(0, 2), st.sampled_from([0.0, 1e-3]),
       st.sampled_from(["min", "max"]))
def test_plateau_matches_torch_on_random_sequences(steps, factor, patience, threshold, threshold_mode,
                                                   cooldown, min_lr, mode):
    metrics = list(np.cumprod([1.0] + steps))
    if mode == "max":
        metrics = [-m for m in metrics]
    # Eager steps: a fresh jit per example would spend the time compiling (the jitted step
    # is compared with torch on the hand-made sequences).
    ours, ref = plateau_pair(metrics, factor=factor, patience=patience, threshold=threshold,
                             threshold_mode=threshold_mode, cooldown=cooldown, min_lr=min_lr, mode=mode,
                             jit=False)
    assert_same_trace(ours, ref)
