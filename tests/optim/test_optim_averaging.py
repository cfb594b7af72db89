"""optim.with_ema: the moving average against a NumPy recurrence; the training itself unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from trees import assert_trees_equal as assert_same

from fnn import losses, optim
from fnn.layers import Dense, Relu, serial
from fnn.train import fit


def _grads(i):
    rng = np.random.default_rng(i)
    return {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32), "b": jnp.asarray(rng.standard_normal(2),
                                                                                          jnp.float32)}


@pytest.mark.parametrize("make", [lambda: optim.momentum(0.1, 0.9),
                                  lambda: optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-2))])
def test_the_average_follows_the_recurrence_and_the_updates_are_the_rules(make):
    decay = 0.8
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    opt, rule = optim.with_ema(make(), decay), make()
    state, rule_state = opt.init(params), rule.init(params)
    ema = {k: np.asarray(v, np.float64) for k, v in params.items()}
    for i in range(4):
        updates, state = opt.update(_grads(i), state, params, lr_scale=0.5)
        want, rule_state = rule.update(_grads(i), rule_state, params, lr_scale=0.5)
        assert_same(updates, want)
        params = optim.apply_updates(params, updates)
        ema = {k: decay * ema[k] + (1 - decay) * np.asarray(params[k], np.float64) for k in ema}
    for k in ema:
        np.testing.assert_allclose(optim.ema_params(state)[k], ema[k], rtol=1e-6, atol=1e-7)
    assert not np.allclose(optim.ema_params(state)["w"], params["w"])


def test_fit_trains_the_same_params_with_an_average_beside_them():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = serial(Dense(8), Relu(), Dense(2))
    kw = dict(epochs=2, batch_size=16, key=jax.random.key(0))
    plain, _ = fit(model, losses.softmax_cross_entropy, optim.nesterov(0.1), (x, y), **kw)
    ts, _ = fit(model, losses.softmax_cross_entropy, optim.with_ema(optim.nesterov(0.1), 0.9), (x, y), **kw)
    assert_same(ts.params, plain.params)
    ema = optim.ema_params(ts.opt_state)
    assert jax.tree.structure(ema) == jax.tree.structure(ts.params)
    assert not np.allclose(jax.tree.leaves(ema)[1], jax.tree.leaves(ts.params)[1])


def test_with_ema_errors():
    with pytest.raises(ValueError, match="decay"):
        optim.with_ema(optim.sgd(0.1), 1.0)
    with pytest.raises(ValueError, match="optimizer must be an Optimizer"):
        optim.with_ema(0.1, 0.9)
    with pytest.raises(ValueError, match="expected the state of a with_ema optimizer"):
        optim.ema_params(optim.sgd(0.1).init({"w": jnp.ones(2)}))
