"""Reference: ``jax.example_libraries.stax`` with ``jax.example_libraries.optimizers``.

The usual stax loop: ``opt_update`` inside one jitted ``update(i, opt_state, x, y)``, called
once per batch from Python (as in JAX's examples/mnist_classifier.py).

``precision="bfloat16"``: the float32 parameters and the batch are cast to bfloat16 inside the
loss (so the forward and backward pass run in bfloat16, the gradients and the optimizer stay
float32) and the logits are cast back to float32 before the cross-entropy.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.example_libraries import optimizers, stax


def network(workload: str):
    """(init_fun, apply_fun, input shape of one example)."""
    pool = stax.MaxPool((2, 2), strides=(2, 2))
    if workload == "cnn":
        layers = [stax.Conv(32, (3, 3), padding="SAME"), stax.Relu, pool,
                  stax.Conv(64, (3, 3), padding="SAME"), stax.Relu, pool,
                  stax.Flatten, stax.Dense(128), stax.Relu, stax.Dense(10)]
        return (*stax.serial(*layers), (28, 28, 1))
    if workload == "mlp":
        return (*stax.serial(stax.Dense(256), stax.Relu, stax.Dense(256), stax.Relu, stax.Dense(10)), (784,))
    if workload == "wide":
        conv = lambda c: [stax.Conv(c, (3, 3), padding="SAME"), stax.Relu]
        layers = conv(128) + conv(128) + [pool] + conv(256) + conv(256) + [pool] + \
            [stax.Flatten, stax.Dense(512), stax.Relu, stax.Dense(10)]
        return (*stax.serial(*layers), (28, 28, 1))
    raise ValueError(f"unknown workload {workload!r}")


def cross_entropy(logits, y):
    """Mean over the batch of -log softmax(logits)[y]."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


@partial(jax.jit, static_argnames=("batch",))
def shuffled_batches(key, x, y, batch):
    """One epoch on the device: a fresh permutation, the remainder dropped -> (steps, batch, ...)."""
    steps = x.shape[0] // batch
    idx = jax.random.permutation(key, x.shape[0])[: steps * batch]
    return x[idx].reshape(steps, batch, *x.shape[1:]), y[idx].reshape(steps, batch)


class Loop:
    def __init__(self, workload, data, settings):
        self.w = workload
        init_fun, self.apply_fun, shape = network(workload.name)
        flat = lambda x: x.reshape(len(x), *shape)
        self.x, self.y = jnp.asarray(flat(data.x_train)), jnp.asarray(data.y_train)
        self.x_test, self.y_test = jnp.asarray(flat(data.x_test)), jnp.asarray(data.y_test)
        key = jax.random.key(settings.seed)
        _, params = init_fun(key, (-1, *shape))
        if workload.optimizer == "adam":
            opt_init, opt_update, self.get_params = optimizers.adam(workload.lr)
        else:
            opt_init, opt_update, self.get_params = optimizers.momentum(workload.lr, workload.momentum)
        self.opt_state = opt_init(params)
        self.i = 0
        self._key = jax.random.key(settings.seed + 1)
        compute = jnp.bfloat16 if settings.precision == "bfloat16" else jnp.float32

        def forward(params, x):
            """float32 logits; the network itself runs in the compute dtype."""
            params = jax.tree.map(lambda a: a.astype(compute), params)
            return self.apply_fun(params, x.astype(compute)).astype(jnp.float32)

        def loss(params, x, y):
            return cross_entropy(forward(params, x), y)

        @jax.jit
        def update(i, opt_state, x, y):
            value, grads = jax.value_and_grad(loss)(self.get_params(opt_state), x, y)
            return opt_update(i, grads, opt_state), value

        self.update = update
        self.predict = jax.jit(lambda params, x: jnp.argmax(forward(params, x), axis=-1))

    def start_epoch(self, epoch: int) -> None:
        key = jax.random.fold_in(self._key, epoch)
        self.xb, self.yb = shuffled_batches(key, self.x, self.y, self.w.batch)

    def step(self, i: int):
        self.opt_state, value = self.update(self.i, self.opt_state, self.xb[i], self.yb[i])
        self.i += 1
        return value

    def sync(self, handle) -> None:
        jax.block_until_ready(handle)

    def test_accuracy(self) -> float:
        params = self.get_params(self.opt_state)
        hits = sum(int(jnp.sum(self.predict(params, self.x_test[j:j + 1000]) == self.y_test[j:j + 1000]))
                   for j in range(0, len(self.x_test), 1000))
        return hits / len(self.x_test)

    def lowered_step(self):
        x = jnp.zeros((self.w.batch, *self.x.shape[1:]), self.x.dtype)
        y = jnp.zeros((self.w.batch,), self.y.dtype)
        return self.update.lower(0, self.opt_state, x, y)

    def num_params(self) -> int:
        return sum(int(a.size) for a in jax.tree.leaves(self.get_params(self.opt_state)))

    def device(self) -> str:
        d = jax.devices()[0]
        return "cpu" if d.platform == "cpu" else d.device_kind

    def info(self) -> dict:
        return {}


def build(impl: str, workload, data, settings):
    return Loop(workload, data, settings)
