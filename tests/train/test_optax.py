"""An optax optimizer trains through fit, and reduce-on-plateau reaches it (by scaled updates).

optax's ``update`` takes no ``lr_scale``, so fit scales the updates it returns. The oracle is
optax's own ``optax.scale``: a run whose plateau halved the scale after epoch 1 must equal one
epoch of ``optax.adam`` followed by one epoch of ``optax.chain(optax.adam, optax.scale(0.5))``.
"""

import jax
import numpy as np
import pytest
from trees import leaves

from fnn import losses
from fnn.layers import Dense, Relu, serial
from fnn.train import ReduceLROnPlateau, fit

optax = pytest.importorskip("optax")

CE = losses.softmax_cross_entropy
MLP = serial(Dense(8), Relu(), Dense(3))
ADAM = optax.adam(1e-2)


def _data(n=96):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 5)).astype(np.float32)
    return x, ((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32))


DATA = _data()




@pytest.fixture(autouse=True)
def standard_promotion():
    """optax mixes Python floats and int32 counts, which the suite's strict promotion refuses."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def test_plateau_scales_an_optax_optimizer_as_optax_scale_would():
    kw = dict(batch_size=32, key=jax.random.key(0))
    halve = ReduceLROnPlateau(0.5, patience=0, threshold=10.0)  # every epoch counts as bad
    ts, h = fit(MLP, CE, ADAM, DATA, epochs=2, callbacks=[halve], **kw)
    assert h["lr_scale"] == [1.0, 0.5]

    one, _ = fit(MLP, CE, ADAM, DATA, epochs=1, **kw)
    halved = optax.chain(ADAM, optax.scale(0.5))
    start = one._replace(opt_state=(one.opt_state, optax.ScaleState()))
    two, _ = fit(MLP, CE, halved, DATA, epochs=1, train_state=start, **kw)
    for u, v in zip(leaves(ts.params), leaves(two.params), strict=True):
        np.testing.assert_array_equal(u, v)

    plain, _ = fit(MLP, CE, ADAM, DATA, epochs=2, **kw)
    assert not all(np.array_equal(u, v) for u, v in zip(leaves(ts.params), leaves(plain.params), strict=True))


def test_plateau_reaches_an_optax_rule_inside_fnn_chain():
    """fnn.optim.chain with a foreign member scales its final updates: the halved epoch equals
    an epoch of the same chain followed by optax.scale(0.5)."""
    from fnn import optim

    kw = dict(batch_size=32, key=jax.random.key(0))
    chained = optim.chain(optax.clip_by_global_norm(1.0), ADAM)
    halve = ReduceLROnPlateau(0.5, patience=0, threshold=10.0)
    ts, h = fit(MLP, CE, chained, DATA, epochs=2, callbacks=[halve], **kw)
    assert h["lr_scale"] == [1.0, 0.5]

    one, _ = fit(MLP, CE, chained, DATA, epochs=1, **kw)
    halved = optax.chain(optax.clip_by_global_norm(1.0), ADAM, optax.scale(0.5))
    start = one._replace(opt_state=(*one.opt_state, optax.ScaleState()))
    two, _ = fit(MLP, CE, halved, DATA, epochs=1, train_state=start, **kw)
    for u, v in zip(leaves(ts.params), leaves(two.params), strict=True):
        np.testing.assert_array_equal(u, v)
    plain, _ = fit(MLP, CE, chained, DATA, epochs=2, **kw)
    assert not all(np.array_equal(u, v) for u, v in zip(leaves(ts.params), leaves(plain.params), strict=True))
