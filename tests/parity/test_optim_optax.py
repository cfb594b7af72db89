"""Step-by-step parity with optax, a second oracle (float64, 20 steps), rules and schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

optax = pytest.importorskip("optax")

from _optim_parity import gradient_sequence, max_step_err, moved, random_tree, run_fnn  # noqa: E402
from conftest import RTOL64  # noqa: E402

from fnn import optim  # noqa: E402


def run_optax(tx, params, grads):
    """optax itself is not written for strict dtype promotion (float ** int32 count), so its
    steps are traced under standard promotion; ours run under the suite's strict mode."""

    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    with jax.numpy_dtype_promotion("standard"):
        params = jax.tree.map(jnp.asarray, params)
        state = tx.init(params)
        history = []
        for g in grads:
            params, state = step(params, state, jax.tree.map(jnp.asarray, g))
            history.append(jax.tree.map(np.asarray, params))
    return history


CASES = {
    "sgd": (optim.sgd(0.1), optax.sgd(0.1)),
    "momentum": (optim.momentum(0.05, 0.9), optax.sgd(0.05, momentum=0.9)),
    "nesterov": (optim.nesterov(0.05, 0.9), optax.sgd(0.05, momentum=0.9, nesterov=True)),
    "adam": (optim.adam(0.01), optax.adam(0.01)),
    "adam_hparams": (optim.adam(0.02, b1=0.8, b2=0.95, eps=1e-6),
                     optax.adam(0.02, b1=0.8, b2=0.95, eps=1e-6)),
    "adamw": (optim.adamw(0.01, weight_decay=0.1), optax.adamw(0.01, weight_decay=0.1)),
    # optax puts eps under the square root: our eps_inside_sqrt=True.
    "rmsprop_eps_inside": (optim.rmsprop(0.01, decay=0.9, eps=1e-6, eps_inside_sqrt=True),
                           optax.rmsprop(0.01, decay=0.9, eps=1e-6)),
    "rmsprop_centered_momentum": (
        optim.rmsprop(0.01, decay=0.9, eps=1e-6, eps_inside_sqrt=True, centered=True, momentum=0.5),
        optax.rmsprop(0.01, decay=0.9, eps=1e-6, centered=True, momentum=0.5)),
    "clip_global_norm_sgd": (optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1)),
                             optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1))),
    "clip_value_adam": (optim.chain(optim.clip_by_value(0.3), optim.adam(0.01)),
                        optax.chain(optax.clip(0.3), optax.adam(0.01))),
    "adam_cosine": (optim.adam(optim.cosine_decay(0.01, 15, alpha=0.1)),
                    optax.adam(optax.cosine_decay_schedule(0.01, 15, alpha=0.1))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_step_matches_optax(case):
    ours_opt, tx = CASES[case]
    params = random_tree(np.random.default_rng(7))
    grads = gradient_sequence(seed=8)
    ref = run_optax(tx, params, grads)
    assert moved(ref, params) > 1e-3
    assert max_step_err(run_fnn(ours_opt, params, grads), ref) <= RTOL64


def _values(schedule, n):
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.arange(n, dtype=jnp.int32)))


SCHEDULES = {
    "cosine": (optim.cosine_decay(0.1, 20, alpha=0.2), optax.cosine_decay_schedule(0.1, 20, alpha=0.2)),
    "exponential": (optim.exponential_decay(0.1, 0.7, transition_steps=4),
                    optax.exponential_decay(0.1, transition_steps=4, decay_rate=0.7)),
    "exponential_staircase": (optim.exponential_decay(0.1, 0.7, transition_steps=4, staircase=True),
                              optax.exponential_decay(0.1, transition_steps=4, decay_rate=0.7,
                                                      staircase=True)),
    "warmup": (optim.linear_warmup(0.0, 0.1, 10), optax.linear_schedule(0.0, 0.1, 10)),
    "join": (optim.join([optim.linear_warmup(0.0, 0.1, 5), optim.cosine_decay(0.1, 20),
                         optim.constant_schedule(0.03)], [5, 25]),
             optax.join_schedules([optax.linear_schedule(0.0, 0.1, 5), optax.cosine_decay_schedule(0.1, 20),
                                   optax.constant_schedule(0.03)], [5, 25])),
    "warmup_cosine_decay": (optim.warmup_cosine_decay(0.01, 0.1, 8, 30, end_value=0.002),
                            optax.warmup_cosine_decay_schedule(0.01, 0.1, 8, 30, end_value=0.002)),
    "warmup_cosine_decay_no_warmup": (optim.warmup_cosine_decay(0.0, 0.1, 0, 25),
                                      optax.warmup_cosine_decay_schedule(0.0, 0.1, 0, 25)),
}


@pytest.mark.parametrize("case", list(SCHEDULES))
def test_schedule_matches_optax(case):
    ours, ref = SCHEDULES[case]
    with jax.numpy_dtype_promotion("standard"):
        expected = _values(ref, 40)
    # optax evaluates some schedules in float32 whatever the x64 flag (ours are float64 here).
    rtol = 1e-13 if expected.dtype == np.float64 else 1e-6
    np.testing.assert_allclose(_values(ours, 40), expected, rtol=rtol, atol=1e-15)


# fnn.chain accepts optax's transforms: it calls them as update(updates, state, params), without lr_scale.
FOREIGN = {
    "optax_clip_then_fnn_sgd": (optim.chain(optax.clip_by_global_norm(1.0), optim.sgd(0.1)),
                                optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1))),
    "fnn_clip_then_optax_adam": (optim.chain(optim.clip_by_value(0.3), optax.adam(0.01)),
                                 optax.chain(optax.clip(0.3), optax.adam(0.01))),
    "optax_only": (optim.chain(optax.clip(0.3), optax.add_decayed_weights(1e-2), optax.adam(0.01)),
                   optax.chain(optax.clip(0.3), optax.add_decayed_weights(1e-2), optax.adam(0.01))),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_fnn_chain_of_optax_transforms_matches_optax_chain(case):
    ours, tx = FOREIGN[case]
    params = random_tree(np.random.default_rng(7))
    grads = gradient_sequence(seed=8)
    ref = run_optax(tx, params, grads)
    assert moved(ref, params) > 1e-3
    # run_optax: optax's own transforms inside our chain need standard promotion too.
    assert max_step_err(run_optax(ours, params, grads), ref) <= RTOL64


def test_lr_scale_reaches_every_rule_in_a_chain():
    params = random_tree(np.random.default_rng(7))
    grads = gradient_sequence(seed=8)
    ours = optim.chain(optax.clip_by_global_norm(1.0), optim.sgd(0.1))
    ref = run_optax(optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.05)), params, grads)
    with jax.numpy_dtype_promotion("standard"):
        scaled = run_fnn(ours, params, grads, lr_scale=0.5)
    assert max_step_err(scaled, ref) <= RTOL64
    # An optax rule takes no lr_scale: the chain scales its final updates instead.
    scaled_ref = run_optax(optax.chain(optax.clip(0.3), optax.sgd(0.1), optax.scale(0.5)), params, grads)
    with jax.numpy_dtype_promotion("standard"):
        got = run_fnn(optim.chain(optim.clip_by_value(0.3), optax.sgd(0.1)), params, grads, lr_scale=0.5)
    assert max_step_err(got, scaled_ref) <= RTOL64
    unscaled = run_optax(optax.chain(optax.clip(0.3), optax.sgd(0.1)), params, grads)
    assert max_step_err(got, unscaled) > 0.1
