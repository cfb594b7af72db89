"""fnn on the benchmark workloads.

- ``fnn-autodiff-step``: ``fnn.train.train_step(grad_mode="autodiff")``, jitted with the
  TrainState donated, called from a Python loop over device batches (as the references are).
- ``fnn-step``: the same with ``grad_mode="auto"`` (what ``fit(fused=False)`` runs: the layers'
  own backward through ``custom_vjp`` on CPU and GPU, autodiff elsewhere).
- ``fnn-fused``: ``fnn.train.fit(fused=True, grad_mode="auto")``, one compiled ``lax.scan`` per
  epoch; "auto" is "custom_vjp" on CPU and GPU and "autodiff" elsewhere.
- ``fnn-manual-fused``, ``fnn-custom_vjp-fused``, ``fnn-autodiff-fused``: the same with that
  gradient mode.

The fused variants are timed through ``History.seconds`` (the epoch call alone: no
compilation, validation or checkpoint), the public figure ``fit`` already records.

``precision="bfloat16"``: every variant trains ``fnn.precision.apply_policy(model, jnp.bfloat16)``
(float32 master parameters and optimizer state, parameters and inputs cast to bfloat16 for the
forward and backward pass, the logits cast to float32 before the loss); the flops figure and the
test accuracy come from the same wrapped model.
"""

from __future__ import annotations

import statistics

import jax
import jax.numpy as jnp

from fnn import losses, models, optim
from fnn.data import epoch_batches
from fnn.layers import Conv, Dense, Flatten, MaxPool, Relu, serial
from fnn.precision import apply_policy
from fnn.train import Progress, evaluate, fit, init_train_state, resolve_grad_mode, train_step

SUBSET_BATCHES = 50   # the fused variants' step time: epochs of 50 batches
SLOW_BATCHES = 10     # --quick, autodiff's fused conv nets on XLA:CPU: a 10-batch epoch, extrapolated


def model_for(workload: str):
    """(model, input shape of one example) for a workload name."""
    if workload == "cnn":
        return models.simple_cnn(), (28, 28, 1)
    if workload == "mlp":
        return models.mlp((784, 256, 256, 10)), (784,)
    if workload == "wide":
        conv = lambda c: Conv(c, (3, 3), padding="SAME")
        net = serial(conv(128), Relu(), conv(128), Relu(), MaxPool((2, 2)),
                     conv(256), Relu(), conv(256), Relu(), MaxPool((2, 2)),
                     Flatten(), Dense(512), Relu(), Dense(10))
        return net, (28, 28, 1)
    raise ValueError(f"unknown workload {workload!r}")


def optimizer_for(w):
    return optim.adam(w.lr) if w.optimizer == "adam" else optim.momentum(w.lr, w.momentum)


def _fresh(tree):
    """Distinct buffers for every leaf (Adam's m and v start as the same zeros), so that donating works."""
    return jax.tree.map(lambda a: a.copy(), tree)


def _device_name() -> str:
    d = jax.devices()[0]
    return "cpu" if d.platform == "cpu" else d.device_kind


class _Base:
    def __init__(self, impl, workload, data, settings, mode):
        self.impl, self.w, self.settings = impl, workload, settings
        model, self.shape = model_for(workload.name)
        self.model = apply_policy(model, jnp.bfloat16) if settings.precision == "bfloat16" else model
        self.loss = losses.softmax_cross_entropy
        self.opt = optimizer_for(workload)
        self.requested_mode = mode
        self.mode = resolve_grad_mode(mode)
        flat = lambda x: x.reshape(len(x), *self.shape)
        self.x_np, self.y_np = flat(data.x_train), data.y_train
        self.x_test, self.y_test = jnp.asarray(flat(data.x_test)), jnp.asarray(data.y_test)
        self.ts = _fresh(init_train_state(self.model, self.opt, self.shape, key=jax.random.key(settings.seed)))

    def test_accuracy(self) -> float:
        result = evaluate(self.model, self.loss, self.ts.params, self.ts.state, self.x_test, self.y_test)
        return result["accuracy"]

    def lowered_step(self):
        """One training step of this gradient mode and precision, lowered (the fused epoch scans it)."""
        step = jax.jit(train_step(self.model, self.loss, self.opt, grad_mode=self.mode))
        xb = jnp.zeros((self.w.batch, *self.shape), jnp.float32)
        yb = jnp.zeros((self.w.batch,), jnp.int32)
        return step.lower(self.ts, xb, yb)

    def num_params(self) -> int:
        return sum(int(a.size) for a in jax.tree.leaves(self.ts.params))

    def device(self) -> str:
        return _device_name()

    def info(self) -> dict:
        mode = self.mode if self.requested_mode == self.mode else f"{self.requested_mode}->{self.mode}"
        return {"grad_mode": mode}


class StepLoop(_Base):
    """A jitted train_step called once per batch from Python."""

    def __init__(self, *args):
        super().__init__(*args)
        self.x, self.y = jnp.asarray(self.x_np), jnp.asarray(self.y_np)
        step = train_step(self.model, self.loss, self.opt, grad_mode=self.mode)
        self._step = jax.jit(step, donate_argnums=0)
        self._batches = jax.jit(epoch_batches, static_argnames=("batch_size", "remainder"))
        self._key = jax.random.key(self.settings.seed + 1)

    def start_epoch(self, epoch: int) -> None:
        b = self._batches(self.x, self.y, batch_size=self.w.batch, key=jax.random.fold_in(self._key, epoch))
        self.xb, self.yb = b.x, b.y

    def step(self, i: int):
        self.ts, metrics = self._step(self.ts, self.xb[i], self.yb[i])
        return metrics["loss"]

    def sync(self, handle) -> None:
        jax.block_until_ready(handle)


class FusedLoop(_Base):
    """``fit(fused=True)``: the step time from 50-batch epochs, then one full epoch."""

    def measure(self, steps: int) -> dict:
        w, s = self.w, self.settings
        # Autodiff's conv weight gradient inside lax.scan is the slow path on XLA:CPU (see
        # resolve_grad_mode): one 50-step epoch (--quick: 10) gives its step time, and the full
        # epoch is extrapolated from it.
        slow = self.mode == "autodiff" and jax.default_backend() == "cpu" and w.name != "mlp"
        sub_steps = min(SLOW_BATCHES if slow and s.quick else SUBSET_BATCHES, steps)
        n_sub = sub_steps * w.batch
        whole = n_sub == len(self.x_np)   # --quick: the subset is the whole training set
        sub = (self.x_np[:n_sub], self.y_np[:n_sub])
        epochs = 1 if slow else 1 + s.fused_repeats
        # No progress bar, on a terminal either: nothing but the epochs in the timed seconds.
        common = dict(batch_size=w.batch, key=s.seed, fused=True, grad_mode=self.requested_mode,
                      callbacks=[Progress(False)])
        ts, hist = fit(self.model, self.loss, self.opt, sub, epochs=epochs, train_state=self.ts, **common)
        timed = hist.seconds if slow else hist.seconds[1:]
        step_ms = 1e3 * statistics.median(timed) / sub_steps
        extra = {"fused_epochs_timed": len(timed), "fused_epoch_steps": sub_steps,
                 "epoch_extrapolated": slow and not whole}
        if slow or whole:
            self.ts = ts
            epoch_s = timed[-1] if whole else step_ms * steps / 1e3
            return {"compile_s": hist.compile_seconds, "step_ms": step_ms, "epoch_s": epoch_s, "extra": extra}
        self.ts, full = fit(self.model, self.loss, self.opt, (self.x_np, self.y_np), epochs=1, train_state=ts,
                            **common)
        extra["train_acc_last_epoch"] = full.train_accuracy[0]
        return {"compile_s": full.compile_seconds, "step_ms": step_ms, "epoch_s": full.seconds[0],
                "extra": extra}


def build(impl: str, workload, data, settings):
    if impl == "fnn-autodiff-step":
        return StepLoop(impl, workload, data, settings, "autodiff")
    if impl == "fnn-step":
        return StepLoop(impl, workload, data, settings, "auto")
    modes = {"fnn-fused": "auto", "fnn-manual-fused": "manual", "fnn-custom_vjp-fused": "custom_vjp",
             "fnn-autodiff-fused": "autodiff"}
    return FusedLoop(impl, workload, data, settings, modes[impl])
