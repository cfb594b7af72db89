"""fnn.train.step pieces not covered elsewhere: a penalized objective, as one argument."""

import jax
import numpy as np
import pytest

from fnn import losses, optim
from fnn.layers import Dense, Relu, serial
from fnn.train import fit, init_train_state, train_step

CE = losses.softmax_cross_entropy
MLP = serial(Dense(8), Relu(), Dense(3))


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 5)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_penalized_objective_equals_the_penalty_keyword_and_differs_from_none():
    data, kw = _data(), dict(epochs=2, batch_size=32, key=jax.random.key(0))
    l2 = losses.l2(0.05)
    objective = losses.penalized(CE, l2)
    assert objective.name == "softmax_cross_entropy + l2(0.05)" and objective.value is CE.value
    a, ha = fit(MLP, objective, optim.sgd(0.1), data, **kw)
    b, hb = fit(MLP, CE, optim.sgd(0.1), data, penalty=l2, **kw)
    c, _ = fit(MLP, CE, optim.sgd(0.1), data, **kw)
    for u, v, w in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), jax.tree.leaves(c.params), strict=True):
        np.testing.assert_array_equal(u, v)
        assert not np.array_equal(u, w)
    assert ha["train_loss"] == hb["train_loss"] and ha["grad_norm"] == hb["grad_norm"]


def test_a_penalty_given_twice_is_refused():
    ts = init_train_state(MLP, optim.sgd(0.1), (5,), key=jax.random.key(0))
    with pytest.raises(ValueError, match="already has a penalty"):
        train_step(MLP, losses.penalized(CE, losses.l2(0.1)), optim.sgd(0.1), penalty=losses.l1(0.1))
    with pytest.raises(ValueError, match="penalty must be a Loss"):
        losses.penalized(CE, 0.1)
    assert int(ts.step) == 0
