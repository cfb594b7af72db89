"""No recompilation: the jitted train step and the fused epoch are traced and compiled once per
shape, not once per call or per epoch.

Two counters: traces, through a loss whose ``value`` counts its calls (Python runs only while
JAX traces), and XLA compilations, through jax.monitoring's backend-compile event. What they
show (and these tests pin down):

- ``fit`` traces and compiles its programs before the first epoch; epochs 2+ trace and compile
  nothing, in both loops, validation included.
- A second ``fit`` call with the same model, loss and optimizer objects and the same shapes
  traces and compiles nothing: ``fit`` caches its jitted programs per (model, loss, optimizer,
  penalty, grad mode, batch size, remainder), and jax's caches hold the executables.
- The fused epoch is compiled per training-set size (the number of steps is static); the
  per-step loop compiles one step per batch shape, whatever the size of the data set.
- New model/loss/optimizer objects, even equal ones, get their own programs: the
  hyperparameters are constants in the compiled code.
"""

import collections

import jax
import numpy as np
import pytest
from jax import monitoring

from fnn import losses, optim
from fnn.core import Loss
from fnn.layers import Dense, Dropout, Relu, serial
from fnn.train import fit, init_train_state, train_step

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture
def compiles():
    """A Counter of jax.monitoring duration events while the test runs."""
    events = collections.Counter()

    def listener(event, duration_secs, **kwargs):
        events[event] += 1

    monitoring.register_event_duration_secs_listener(listener)
    yield events
    monitoring.unregister_event_duration_listener(listener)


def counting_loss():
    """softmax cross-entropy whose value counts how often it is traced (or run eagerly)."""
    ce = losses.softmax_cross_entropy
    calls = [0]

    def value(pred, target):
        calls[0] += 1
        return ce.value(pred, target)

    return Loss("counting_softmax_cross_entropy", value, ce.backward), calls


def data(n=256):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (np.arange(n) % 3).astype(np.int32)


def model():
    return serial(Dense(12), Relu(), Dropout(0.2), Dense(3))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "per_step"])
def test_fit_compiles_before_epoch_one_and_never_again(fused, compiles):
    loss, traces = counting_loss()
    net, opt = model(), optim.adam(1e-2)
    x, y = data()
    seen = []

    def record(epoch, ts, row):
        seen.append((traces[0], compiles[COMPILE_EVENT]))

    kw = dict(batch_size=32, fused=fused, val_data=(x[:80], y[:80]))
    fit(net, loss, opt, (x, y), epochs=3, key=jax.random.key(0), callbacks=(record,), **kw)
    assert seen[0][0] == 2  # the training step once, the validation batch once
    assert seen[0][1] > 0  # positive control: the compile counter counts (else "== before" below is vacuous)
    assert seen[0] == seen[1] == seen[2], seen  # epochs 2 and 3: no trace, no compile

    # Another call, same objects and shapes (another key): everything comes from the caches.
    before = (traces[0], compiles[COMPILE_EVENT])
    fit(net, loss, opt, (x, y), epochs=2, key=jax.random.key(1), **kw)
    assert (traces[0], compiles[COMPILE_EVENT]) == before

    # Another training-set size: the fused epoch is retraced and recompiled (its number of
    # steps is static); the per-step loop's step program only depends on the batch shape.
    fit(net, loss, opt, data(160), epochs=1, key=jax.random.key(1), **kw)
    assert traces[0] == before[0] + (1 if fused else 0)


def test_jitted_train_step_traces_once(compiles):
    """Keys, step counters and the plateau scale are traced values: changing them retraces nothing."""
    loss, traces = counting_loss()
    net, opt = model(), optim.momentum(0.1)
    x, y = data(64)
    ts = init_train_state(net, opt, x.shape[1:], key=jax.random.key(0))
    step = jax.jit(train_step(net, loss, opt, grad_mode="custom_vjp"))
    before = compiles[COMPILE_EVENT]
    ts, _ = step(ts, x, y, lr_scale=1.0)  # (leaving lr_scale out is another signature: one more trace)
    first = (traces[0], compiles[COMPILE_EVENT])
    assert first[0] == 1
    assert first[1] > before  # positive control: the first call compiles, and the counter sees it
    for scale in (0.5, 0.25, 1.0):
        ts, _ = step(ts, x, y, lr_scale=scale)
    assert (traces[0], compiles[COMPILE_EVENT]) == first
    ts, _ = step(ts, x[:32], y[:32], lr_scale=1.0)  # a new batch shape: one more trace, as any jit
    assert traces[0] == 2
    assert compiles[COMPILE_EVENT] > first[1]


def test_equal_but_new_objects_get_their_own_programs(compiles):
    """Documents fit's cache key: object identity. Rebuilding the optimizer each run recompiles."""
    loss, traces = counting_loss()
    net = model()
    x, y = data()
    kw = dict(epochs=1, batch_size=32, key=jax.random.key(0))
    fit(net, loss, optim.sgd(0.1), (x, y), **kw)
    before = (traces[0], compiles[COMPILE_EVENT])
    fit(net, loss, optim.sgd(0.1), (x, y), **kw)
    assert traces[0] == before[0] + 1
    assert compiles[COMPILE_EVENT] > before[1]
