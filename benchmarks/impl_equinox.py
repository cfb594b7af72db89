"""Reference: Equinox with optax.

The usual Equinox loop: a module written for one example (channels first, as ``eqx.nn.Conv2d``
expects) and ``jax.vmap``-ed over the batch, ``eqx.filter_value_and_grad`` and optax inside one
``@eqx.filter_jit`` step, called once per batch from Python.

``precision="bfloat16"``: inside the loss, the model's floating arrays and the batch are cast to
bfloat16 (so the forward and backward pass run in it, while the gradients, the model the
optimizer updates and its state stay float32) and the logits are cast to float32 before the
cross-entropy.
"""

from __future__ import annotations

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import optax


class CNN(eqx.Module):
    """Conv32-ReLU-MaxPool-Conv64-ReLU-MaxPool-Dense128-ReLU-Dense10 on one (1, 28, 28) image."""

    layers: list

    def __init__(self, key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.layers = [
            eqx.nn.Conv2d(1, 32, 3, padding="SAME", key=k1), jax.nn.relu, eqx.nn.MaxPool2d(2, 2),
            eqx.nn.Conv2d(32, 64, 3, padding="SAME", key=k2), jax.nn.relu, eqx.nn.MaxPool2d(2, 2),
            jnp.ravel, eqx.nn.Linear(64 * 7 * 7, 128, key=k3), jax.nn.relu, eqx.nn.Linear(128, 10, key=k4),
        ]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class MLP(eqx.Module):
    """784-256-ReLU-256-ReLU-10 on one (784,) vector."""

    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(784, 10, width_size=256, depth=2, activation=jax.nn.relu, key=key)

    def __call__(self, x):
        return self.mlp(x)


class Wide(eqx.Module):
    """Conv128-Conv128-MaxPool-Conv256-Conv256-MaxPool-Dense512-Dense10 (ReLU) on one (1, 28, 28) image."""

    layers: list

    def __init__(self, key):
        k = jax.random.split(key, 6)
        conv = lambda i, o, key: [eqx.nn.Conv2d(i, o, 3, padding="SAME", key=key), jax.nn.relu]
        self.layers = [
            *conv(1, 128, k[0]), *conv(128, 128, k[1]), eqx.nn.MaxPool2d(2, 2),
            *conv(128, 256, k[2]), *conv(256, 256, k[3]), eqx.nn.MaxPool2d(2, 2),
            jnp.ravel, eqx.nn.Linear(256 * 7 * 7, 512, key=k[4]), jax.nn.relu,
            eqx.nn.Linear(512, 10, key=k[5]),
        ]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


MODELS = {"cnn": (CNN, (1, 28, 28)), "mlp": (MLP, (784,)), "wide": (Wide, (1, 28, 28))}


def forward(model, x, compute):
    """float32 logits of a batch; the model runs in `compute` (its floating arrays and x cast to it)."""
    arrays, static = eqx.partition(model, eqx.is_inexact_array)
    model = eqx.combine(jax.tree.map(lambda a: a.astype(compute), arrays), static)
    return jax.vmap(model)(x.astype(compute)).astype(jnp.float32)


def loss_fn(model, x, y, compute):
    logits = forward(model, x, compute)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_step(optim, compute=jnp.float32):
    @eqx.filter_jit
    def step(model, opt_state, x, y):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x, y, compute)
        updates, opt_state = optim.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    return step


@eqx.filter_jit
def predict(model, x, compute):
    return jnp.argmax(forward(model, x, compute), axis=-1)


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
        # NHWC (N, 28, 28, 1) -> channels first (N, 1, 28, 28); the MLP takes flat (N, 784).
        prep = (lambda x: x.reshape(len(x), 784)) if workload.name == "mlp" else \
            (lambda x: x.transpose(0, 3, 1, 2))
        self.x, self.y = jnp.asarray(prep(data.x_train)), jnp.asarray(data.y_train)
        self.x_test, self.y_test = jnp.asarray(prep(data.x_test)), jnp.asarray(data.y_test)
        self.model = cls(jax.random.key(settings.seed))
        self.optim = optax.adam(workload.lr) if workload.optimizer == "adam" else \
            optax.sgd(workload.lr, momentum=workload.momentum)
        self.opt_state = self.optim.init(eqx.filter(self.model, eqx.is_array))
        self.compute = jnp.bfloat16 if settings.precision == "bfloat16" else jnp.float32
        self._step = make_step(self.optim, self.compute)
        self._key = jax.random.key(settings.seed + 1)

    def start_epoch(self, epoch: int) -> None:
        key = jax.random.fold_in(self._key, epoch)
        self.xb, self.yb = shuffled_batches(key, self.x, self.y, self.w.batch)

    def step(self, i: int):
        self.model, self.opt_state, loss = self._step(self.model, self.opt_state, self.xb[i], self.yb[i])
        return loss

    def sync(self, handle) -> None:
        jax.block_until_ready(handle)

    def test_accuracy(self) -> float:
        hits = sum(int(jnp.sum(predict(self.model, self.x_test[j:j + 1000], self.compute) == self.y_test[j:j + 1000]))
                   for j in range(0, len(self.x_test), 1000))
        return hits / len(self.x_test)

    def lowered_step(self):
        params, static = eqx.partition(self.model, eqx.is_array)

        def pure_step(params, opt_state, x, y):
            model, opt_state, loss = self._step(eqx.combine(params, static), opt_state, x, y)
            return eqx.filter(model, eqx.is_array), opt_state, loss

        x = jnp.zeros((self.w.batch, *self.x.shape[1:]), self.x.dtype)
        y = jnp.zeros((self.w.batch,), self.y.dtype)
        return jax.jit(pure_step).lower(params, self.opt_state, x, y)

    def num_params(self) -> int:
        return sum(int(a.size) for a in jax.tree.leaves(eqx.filter(self.model, eqx.is_array)))

    def device(self) -> str:
        d = jax.devices()[0]
        return "cpu" if d.platform == "cpu" else d.device_kind

    def info(self) -> dict:
        return {}


def build(impl: str, workload, data, settings):
    return Loop(workload, data, settings)
