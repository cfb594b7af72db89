"""Bad input raises ValueError naming the function and the offending value."""

import math

import jax
import jax.numpy as jnp
import pytest

from fnn import optim

NAN = float("nan")

BAD = [
    # learning rates
    (lambda: optim.sgd(-0.1), r"sgd: learning_rate must be a finite float >= 0.*-0\.1"),
    (lambda: optim.sgd(NAN), r"sgd: learning_rate .*nan"),
    (lambda: optim.sgd(math.inf), r"sgd: learning_rate .*inf"),
    (lambda: optim.adam("fast"), r"adam: learning_rate must be a number, got 'fast'"),
    (lambda: optim.momentum(-1.0), r"momentum: learning_rate .*-1\.0"),
    (lambda: optim.adagrad(NAN), r"adagrad: learning_rate .*nan"),
    (lambda: optim.rmsprop(-1e-3), r"rmsprop: learning_rate .*-0\.001"),
    (lambda: optim.adamw(-1.0), r"adamw: learning_rate .*-1\.0"),
    (lambda: optim.nesterov(NAN), r"nesterov: learning_rate .*nan"),
    (lambda: optim.ema_momentum(-2.0), r"ema_momentum: learning_rate .*-2\.0"),
    (lambda: optim.scale_by_learning_rate(-1.0), r"scale_by_learning_rate: learning_rate .*-1\.0"),
    (lambda: optim.rprop(-0.01), r"rprop: learning_rate .*-0\.01"),
    (lambda: optim.rprop(NAN), r"rprop: learning_rate .*nan"),
    (lambda: optim.rprop(optim.constant_schedule(0.1)), r"rprop: learning_rate is the initial step size"),
    # rprop etas and bounds
    (lambda: optim.rprop(eta_minus=0.0), r"rprop: eta_minus must be in \(0\.0, 1\.0\), got 0\.0"),
    (lambda: optim.rprop(eta_minus=1.0), r"rprop: eta_minus must be in \(0\.0, 1\.0\), got 1\.0"),
    (lambda: optim.rprop(eta_minus=NAN), r"rprop: eta_minus .*nan"),
    (lambda: optim.rprop(eta_plus=1.0), r"rprop: eta_plus must be in \(1\.0, inf\), got 1\.0"),
    (lambda: optim.rprop(eta_plus=0.9), r"rprop: eta_plus .*0\.9"),
    (lambda: optim.rprop(min_step=-1.0), r"rprop: min_step .*-1\.0"),
    (lambda: optim.rprop(min_step=1.0, max_step=0.5), r"rprop: max_step must be in \[1\.0, inf\), got 0\.5"),
    # decays, betas, momenta in [0, 1)
    (lambda: optim.adam(0.1, b1=1.0), r"adam: b1 must be in \[0\.0, 1\.0\), got 1\.0"),
    (lambda: optim.adam(0.1, b2=-0.1), r"adam: b2 must be in \[0\.0, 1\.0\), got -0\.1"),
    (lambda: optim.adamw(0.1, b2=NAN), r"adamw: b2 .*nan"),
    (lambda: optim.momentum(0.1, momentum=1.0), r"momentum: momentum must be in \[0\.0, 1\.0\), got 1\.0"),
    (lambda: optim.momentum(0.1, dampening=1.5), r"momentum: dampening .*1\.5"),
    (lambda: optim.nesterov(0.1, momentum=-0.5), r"nesterov: momentum .*-0\.5"),
    (lambda: optim.ema_momentum(0.1, decay=1.0), r"ema_momentum: decay .*1\.0"),
    (lambda: optim.rmsprop(0.1, decay=1.2), r"rmsprop: decay must be in \[0\.0, 1\.0\), got 1\.2"),
    (lambda: optim.rmsprop(0.1, momentum=1.0), r"rmsprop: momentum .*1\.0"),
    # eps and weight decay
    (lambda: optim.adam(0.1, eps=-1e-8), r"adam: eps must be in \[0\.0, inf\), got -1e-08"),
    (lambda: optim.adagrad(0.1, eps=-1.0), r"adagrad: eps .*-1\.0"),
    (lambda: optim.rmsprop(0.1, eps=-1.0), r"rmsprop: eps .*-1\.0"),
    (lambda: optim.adagrad(0.1, initial_accumulator=-1.0), r"adagrad: initial_accumulator .*-1\.0"),
    (lambda: optim.adamw(0.1, weight_decay=-0.1), r"adamw: weight_decay .*-0\.1"),
    (lambda: optim.add_weight_decay(-1e-4), r"add_weight_decay: weight_decay .*-0\.0001"),
    # clipping
    (lambda: optim.clip_by_global_norm(0.0),
     r"clip_by_global_norm: max_norm must be in \(0\.0, inf\), got 0\.0"),
    (lambda: optim.clip_by_global_norm(-1.0), r"clip_by_global_norm: max_norm .*-1\.0"),
    (lambda: optim.clip_by_global_norm(1.0, eps=-1.0), r"clip_by_global_norm: eps .*-1\.0"),
    (lambda: optim.clip_by_value(0.0), r"clip_by_value: max_value .*0\.0"),
    (lambda: optim.chain(optim.sgd(0.1), "adam"), r"chain: argument 1 must be an Optimizer, got str"),
    # schedules
    (lambda: optim.step_decay(0.1, 0.5, 0), r"step_decay: step_size must be an int >= 1, got 0"),
    (lambda: optim.step_decay(-0.1, 0.5, 2), r"step_decay: init_value .*-0\.1"),
    (lambda: optim.step_decay(0.1, 0.0, 2), r"step_decay: decay_rate .*0\.0"),
    (lambda: optim.exponential_decay(0.1, -0.5), r"exponential_decay: decay_rate .*-0\.5"),
    (lambda: optim.exponential_decay(0.1, 0.5, transition_steps=0),
     r"exponential_decay: transition_steps .*0"),
    (lambda: optim.cosine_decay(0.1, 0), r"cosine_decay: decay_steps must be an int >= 1, got 0"),
    (lambda: optim.cosine_decay(0.1, 10, alpha=1.5), r"cosine_decay: alpha .*1\.5"),
    (lambda: optim.linear_warmup(0.0, NAN, 10), r"linear_warmup: peak_value .*nan"),
    (lambda: optim.linear_warmup(0.0, 0.1, 2.5),
     r"linear_warmup: warmup_steps must be an int >= 1, got 2\.5"),
    (lambda: optim.constant_schedule(-1.0), r"constant_schedule: value .*-1\.0"),
    (lambda: optim.join([optim.constant_schedule(0.1)], [5]),
     r"join: expected len\(schedules\) == len\(boundaries\) \+ 1"),
    (lambda: optim.join([optim.constant_schedule(0.1)] * 3, [5, 5]), r"join: boundaries must be strictly increasing"),
    (lambda: optim.join([optim.constant_schedule(0.1), 0.2], [5]), r"join: schedules\[1\] must be a callable"),
    # reduce_on_plateau
    (lambda: optim.reduce_on_plateau(factor=1.0),
     r"reduce_on_plateau: factor must be in \(0\.0, 1\.0\), got 1\.0"),
    (lambda: optim.reduce_on_plateau(factor=0.0), r"reduce_on_plateau: factor .*0\.0"),
    (lambda: optim.reduce_on_plateau(factor=NAN), r"reduce_on_plateau: factor .*nan"),
    (lambda: optim.reduce_on_plateau(threshold_mode="relative"),
     r"reduce_on_plateau: threshold_mode must be one of \['rel', 'abs'\], got 'relative'"),
    (lambda: optim.reduce_on_plateau(mode="minimum"), r"reduce_on_plateau: mode must be one of .*'minimum'"),
    (lambda: optim.reduce_on_plateau(patience=-1),
     r"reduce_on_plateau: patience must be an int >= 0, got -1"),
    (lambda: optim.reduce_on_plateau(cooldown=1.5), r"reduce_on_plateau: cooldown .*1\.5"),
    (lambda: optim.reduce_on_plateau(min_lr=-1.0), r"reduce_on_plateau: min_lr .*-1\.0"),
    (lambda: optim.reduce_on_plateau(threshold=-1e-4), r"reduce_on_plateau: threshold .*-0\.0001"),
    (lambda: optim.reduce_on_plateau(base_lr=0.0), r"reduce_on_plateau: base_lr .*0\.0"),
]


@pytest.mark.parametrize("make,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_hyperparameters_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("make,name", [
    (lambda: optim.sgd(0.1), "sgd"), (lambda: optim.momentum(0.1), "momentum"),
    (lambda: optim.ema_momentum(0.1), "ema_momentum"), (lambda: optim.nesterov(0.1), "nesterov"),
    (lambda: optim.adagrad(0.1), "adagrad"), (lambda: optim.rmsprop(0.1), "rmsprop"),
    (lambda: optim.adam(0.1), "adam"), (lambda: optim.adamw(0.1), "adamw"), (lambda: optim.rprop(), "rprop"),
    (lambda: optim.clip_by_global_norm(1.0), "clip_by_global_norm"),
    (lambda: optim.clip_by_value(1.0), "clip_by_value"),
    (lambda: optim.add_weight_decay(0.1), "add_weight_decay"),
    (lambda: optim.chain(optim.clip_by_value(1.0), optim.adam(0.1)), "clip_by_value"),
])
def test_grads_tree_mismatch_names_the_function(make, name):
    opt = make()
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    state = opt.init(params)
    with pytest.raises(ValueError, match=rf"{name}: grads tree structure does not match"):
        opt.update({"w": jnp.ones((2, 3))}, state, params)
    with pytest.raises(ValueError, match=rf"{name}: grads leaf \['b'\] expected shape \(3,\), got \(4,\)"):
        opt.update({"w": jnp.ones((2, 3)), "b": jnp.ones(4)}, state, params)


def test_chain_refuses_a_state_of_the_wrong_length():
    opt = optim.chain(optim.sgd(0.1), optim.sgd(0.1))
    with pytest.raises(ValueError, match="chain: expected a state tuple of length 2"):
        opt.update({"w": jnp.ones(2)}, (optim.SgdState(jnp.zeros((), jnp.int32)),))


# Every optimizer, transform and chain: update(grads, state, params=None, *, lr_scale=1.0), nothing else.
UPDATE_CONTRACT = {
    "sgd": lambda: optim.sgd(0.1), "momentum": lambda: optim.momentum(0.1),
    "ema_momentum": lambda: optim.ema_momentum(0.1), "nesterov": lambda: optim.nesterov(0.1),
    "adagrad": lambda: optim.adagrad(0.1), "rmsprop": lambda: optim.rmsprop(0.1),
    "adam": lambda: optim.adam(0.1), "adamw": lambda: optim.adamw(0.1), "rprop": lambda: optim.rprop(),
    "clip_by_value": lambda: optim.clip_by_value(1.0), "clip_by_global_norm": lambda: optim.clip_by_global_norm(1.0),
    "add_weight_decay": lambda: optim.add_weight_decay(0.1),
    "scale_by_learning_rate": lambda: optim.scale_by_learning_rate(0.1),
    "chain": lambda: optim.chain(optim.clip_by_value(1.0), optim.adam(0.1)),
    "with_ema": lambda: optim.with_ema(optim.sgd(0.1), 0.9),
}
NOT_OPTIMIZERS = {"apply_updates", "global_norm", "reduce_on_plateau", "constant_schedule", "step_decay",
                  "exponential_decay", "cosine_decay", "linear_warmup", "join", "warmup_cosine_decay", "one_cycle",
                  "ema_params"}


def test_the_update_contract_covers_every_optimizer():
    factories = {n for n in optim.__all__ if n[0].islower()} - NOT_OPTIMIZERS
    assert factories == set(UPDATE_CONTRACT)


@pytest.mark.parametrize("name", list(UPDATE_CONTRACT))
def test_update_refuses_a_misspelt_keyword(name):
    opt = UPDATE_CONTRACT[name]()
    params = {"w": jnp.ones((2, 3))}
    state = opt.init(params)
    with pytest.raises(TypeError, match="lr_sclae"):
        opt.update(params, state, params, lr_sclae=0.5)
    with pytest.raises(TypeError):
        opt.update(params, state, params, 0.5)  # lr_scale is keyword-only
    updates, _ = opt.update(params, state, params, lr_scale=0.5)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
