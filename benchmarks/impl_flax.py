"""Reference: Flax NNX with optax.

The usual NNX loop: a module holding its parameters, ``nnx.Optimizer(model, tx, wrt=nnx.Param)``
and one ``@nnx.jit`` train step that updates both in place, called once per batch from Python.

``precision="bfloat16"``: Flax's own mixed precision, every layer built with
``dtype=jnp.bfloat16, param_dtype=jnp.float32`` (float32 parameters and optimizer state, the
layers cast their inputs and parameters to bfloat16 and compute in it); the logits are cast to
float32 before the cross-entropy.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class CNN(nnx.Module):
    """Conv32-ReLU-MaxPool-Conv64-ReLU-MaxPool-Dense128-ReLU-Dense10 on (N, 28, 28, 1)."""

    def __init__(self, *, rngs: nnx.Rngs, dtype=None):
        kw = dict(dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), padding="SAME", **kw)
        self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), padding="SAME", **kw)
        self.fc1 = nnx.Linear(7 * 7 * 64, 128, **kw)
        self.fc2 = nnx.Linear(128, 10, **kw)

    def __call__(self, x):
        pool = partial(nnx.max_pool, window_shape=(2, 2), strides=(2, 2))
        x = pool(nnx.relu(self.conv1(x)))
        x = pool(nnx.relu(self.conv2(x)))
        x = x.reshape(x.shape[0], -1)
        return self.fc2(nnx.relu(self.fc1(x)))


class MLP(nnx.Module):
    """784-256-ReLU-256-ReLU-10 on (N, 784)."""

    def __init__(self, *, rngs: nnx.Rngs, dtype=None):
        kw = dict(dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.fc1 = nnx.Linear(784, 256, **kw)
        self.fc2 = nnx.Linear(256, 256, **kw)
        self.fc3 = nnx.Linear(256, 10, **kw)

    def __call__(self, x):
        return self.fc3(nnx.relu(self.fc2(nnx.relu(self.fc1(x)))))


class Wide(nnx.Module):
    """Conv128-Conv128-MaxPool-Conv256-Conv256-MaxPool-Dense512-Dense10, ReLU after each hidden layer."""

    def __init__(self, *, rngs: nnx.Rngs, dtype=None):
        kw = dict(dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        conv = lambda i, o: nnx.Conv(i, o, kernel_size=(3, 3), padding="SAME", **kw)
        self.convs = nnx.List([conv(1, 128), conv(128, 128), conv(128, 256), conv(256, 256)])
        self.fc1 = nnx.Linear(7 * 7 * 256, 512, **kw)
        self.fc2 = nnx.Linear(512, 10, **kw)

    def __call__(self, x):
        pool = partial(nnx.max_pool, window_shape=(2, 2), strides=(2, 2))
        for i, conv in enumerate(self.convs):
            x = nnx.relu(conv(x))
            if i % 2 == 1:
                x = pool(x)
        x = x.reshape(x.shape[0], -1)
        return self.fc2(nnx.relu(self.fc1(x)))


MODELS = {"cnn": (CNN, (28, 28, 1)), "mlp": (MLP, (784,)), "wide": (Wide, (28, 28, 1))}


def loss_fn(model, x, y):
    logits = model(x).astype(jnp.float32)   # a no-op in float32; from bfloat16 before the loss
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, x):
    return jnp.argmax(model(x), axis=-1)


@partial(jax.jit, static_argnames=("batch",))
def shuffled_batches(key, x, y, batch):
    """One epoch on the device: a fresh permutation, the remainder dropped -> (steps, batch, ...)."""
    steps = x.shape[0] // batch
    idx = jax.random.permutation(key, x.shape[0])[: steps * batch]
    return x[idx].reshape(steps, batch, *x.shape[1:]), y[idx].reshape(steps, batch)


class Loop:
    def __init__(self, workload, data, settings):
        self.w = workload
        cls, shape = MODELS[workload.name]
        flat = lambda x: x.reshape(len(x), *shape)
        self.x, self.y = jnp.asarray(flat(data.x_train)), jnp.asarray(data.y_train)
        self.x_test, self.y_test = jnp.asarray(flat(data.x_test)), jnp.asarray(data.y_test)
        self.model = cls(rngs=nnx.Rngs(settings.seed),
                         dtype=jnp.bfloat16 if settings.precision == "bfloat16" else None)
        tx = optax.adam(workload.lr) if workload.optimizer == "adam" else \
            optax.sgd(workload.lr, momentum=workload.momentum)
        self.optimizer = nnx.Optimizer(self.model, tx, wrt=nnx.Param)
        self._key = jax.random.key(settings.seed + 1)

    def start_epoch(self, epoch: int) -> None:
        key = jax.random.fold_in(self._key, epoch)
        self.xb, self.yb = shuffled_batches(key, self.x, self.y, self.w.batch)

    def step(self, i: int):
        return train_step(self.model, self.optimizer, self.xb[i], self.yb[i])

    def sync(self, handle) -> None:
        jax.block_until_ready(handle)

    def test_accuracy(self) -> float:
        hits = sum(int(jnp.sum(predict(self.model, self.x_test[j:j + 1000]) == self.y_test[j:j + 1000]))
                   for j in range(0, len(self.x_test), 1000))
        return hits / len(self.x_test)

    def lowered_step(self):
        # nnx.jit has no AOT API of its own: lower the same step as a pure function of the split state.
        graphdef, state = nnx.split((self.model, self.optimizer))

        def pure_step(state, x, y):
            model, optimizer = nnx.merge(graphdef, state)
            loss = train_step(model, optimizer, x, y)
            return nnx.state((model, optimizer)), loss

        x = jnp.zeros((self.w.batch, *self.x.shape[1:]), self.x.dtype)
        y = jnp.zeros((self.w.batch,), self.y.dtype)
        return jax.jit(pure_step).lower(state, x, y)

    def num_params(self) -> int:
        return sum(int(a.size) for a in jax.tree.leaves(nnx.state(self.model, nnx.Param)))

    def device(self) -> str:
        d = jax.devices()[0]
        return "cpu" if d.platform == "cpu" else d.device_kind

    def info(self) -> dict:
        return {}


def build(impl: str, workload, data, settings):
    return Loop(workload, data, settings)
