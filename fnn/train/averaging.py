"""Stochastic weight averaging: ``SWA``, a ``fit`` callback, and ``recompute_batch_stats``.

SWA (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and Better
Generalization") trains on past the point where the schedule ends, at a constant learning
rate, and returns the mean of the parameters seen at the end of each of those epochs. The
averaged network needs BatchNorm statistics of its own (the running statistics belong to
the networks that were averaged), so they are recomputed with one pass over the training
data, as ``torch.optim.swa_utils.update_bn`` does.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnn.core import Layer, check_positive_int
from fnn.train.callbacks import Callback, EarlyStopping, Run
from fnn.typing import PyTree


def recompute_batch_stats(model: Layer, params: PyTree, state: PyTree, x: Any, *, batch_size: int,
                          key: jax.Array) -> PyTree:
    """The state of `model` after one pass over `x`, as the exact mean of its batches' statistics.

    For a state that a training-mode forward pass updates as ``s' = m·s + (1 − m)·b`` (the
    running mean and variance of ``BatchNorm``, whatever its momentum m), the result is the
    mean of the batch statistics b over the ``N // batch_size`` full batches of `x`, in order
    (the last ``N % batch_size`` examples are left out): what ``torch.optim.swa_utils.update_bn``
    computes. m is read off the model (a pass from an all-ones state minus one from zeros), so
    no layer needs a special mode. Leaves the forward pass does not change (m = 1), and
    non-float leaves, keep their value from `state`.

    Args:
      model: the Layer whose `apply` runs with ``train=True`` (augmentation and dropout included,
        each batch with its own key from `key`).
      params, state: the model's parameters and the state to replace.
      x: (N, ...) training inputs, floating.
      batch_size: examples per forward pass, 2 <= batch_size <= N (the statistics are per batch,
        as in training: use the training batch size).
      key: a PRNG key.

    Raises:
      ValueError: batch_size out of range.
    """
    name = "recompute_batch_stats"
    n = int(np.shape(x)[0])
    batch_size = check_positive_int(name, "batch_size", batch_size)
    if not 2 <= batch_size <= n:
        raise ValueError(f"{name}: batch_size must be in [2, N={n}] (statistics per batch), got {batch_size}")
    floats = [jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating) for leaf in jax.tree.leaves(state)]
    if not any(floats):
        return state

    @jax.jit
    def updated(p, s, xb, k):
        return model.apply(p, s, xb, key=k, train=True)[1]

    zeros = jax.tree.map(jnp.zeros_like, state)
    ones = jax.tree.map(jnp.ones_like, state)
    steps = n // batch_size
    keys = jax.random.split(key, steps)
    total: Any = None
    weight: Any = None
    for i in range(steps):
        xb = jnp.asarray(x[i * batch_size:(i + 1) * batch_size])
        from_zero = updated(params, zeros, xb, keys[i])  # (1 − m)·b
        total = from_zero if total is None else jax.tree.map(jnp.add, total, from_zero)
        if i == 0:
            weight = jax.tree.map(jnp.subtract, updated(params, ones, xb, keys[i]), from_zero)  # m

    def mean(old, tot, m, is_float):
        if not is_float:
            return old
        keep = 1 - m
        fresh = tot / steps / jnp.where(keep > 1e-6, keep, 1)
        return jnp.where(keep > 1e-6, fresh, old).astype(jnp.asarray(old).dtype)

    leaves, treedef = jax.tree.flatten(state)
    out = [mean(*a) for a in zip(leaves, jax.tree.leaves(total), jax.tree.leaves(weight), floats, strict=True)]
    return jax.tree.unflatten(treedef, out)


def averaged_state(model: Layer, ts: Any, params: PyTree, x: Any, *, batch_size: int,
                   recompute_stats: bool = True) -> Any:
    """TrainState `ts` with averaged `params` (SWA's mean, ``optim.ema_params``) and, unless
    ``recompute_stats=False``, its state recomputed for them by ``recompute_batch_stats`` on `x`
    (with a key folded from ``ts.key``; the TrainState's own key is left as it is)."""
    state = ts.state
    if recompute_stats:
        state = recompute_batch_stats(model, params, state, x, batch_size=batch_size,
                                      key=jax.random.fold_in(ts.key, 0x5A))
    return ts._replace(params=params, state=state)


@jax.jit
def _running_mean(avg: PyTree, params: PyTree, count: jax.Array) -> PyTree:
    """avg + (params − avg)/(count + 1): the mean of count + 1 parameter sets."""
    return jax.tree.map(lambda a, p: a + (p - a) / (count + 1).astype(a.dtype), avg, params)


class SWA(Callback):
    """Stochastic weight averaging: end with the mean of the parameters after epochs start+1, ..., last.

    Give ``fit`` more epochs than the schedule needs and a learning rate that stays up after
    epoch `start` (``fnn train --swa START --swa-lr LR`` joins the schedule of the first START
    epochs with a constant LR). After each epoch past `start` the current parameters join a
    running mean; when ``fit`` ends, the TrainState gets that mean as its params and, unless
    ``recompute_stats=False``, the state of ``recompute_batch_stats`` (one training-mode pass
    over the training data with the averaged weights: BatchNorm's running statistics). The
    optimizer state and key stay those of the last epoch; ``History`` rows (and their
    validation figures) are those of the weights being trained, not of the mean.

    The mean and its count are saved in checkpoints, so a resumed run averages the same epochs.
    A checkpoint written without an SWA callback resumes only up to epoch `start`.

    Args:
      start: the last epoch before averaging begins (>= 0; below ``fit``'s epochs).
      recompute_stats: recompute the model's state for the averaged weights (True), or keep the
        last epoch's.

    Raises (at the start of ``fit``):
      ValueError: start not below epochs, or an ``EarlyStopping`` in the same fit (it would put
        back one epoch's weights; the two disagree on what the result is).
    """

    order = 80  # after the user's callbacks, before TensorBoard and Checkpoint

    def __init__(self, start: int, *, recompute_stats: bool = True):
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
            raise ValueError(f"SWA: start must be an int >= 0 (the last epoch before averaging), got {start!r}")
        self.start, self.recompute_stats = int(start), bool(recompute_stats)
        self.avg: Any = None
        self.count = 0

    def on_fit_start(self, run: Run) -> None:
        if self.start >= run.epochs:
            raise ValueError(f"SWA: start={self.start} leaves no epoch to average: fit runs epochs={run.epochs}")
        if any(isinstance(cb, EarlyStopping) for cb in run.callbacks):
            raise ValueError("SWA: not with EarlyStopping (one restores a single epoch's weights, the other "
                             "averages several)")
        self.avg, self.count = None, 0

    def on_epoch_end(self, run: Run) -> None:
        if run.epoch <= self.start:
            return
        if self.avg is None:
            self.avg = jax.tree.map(lambda p: jnp.array(p, copy=True), run.ts.params)
        else:
            self.avg = _running_mean(self.avg, run.ts.params, jnp.asarray(self.count, jnp.int32))
        self.count += 1

    def on_fit_end(self, run: Run) -> None:
        if not self.count:
            return
        run.ts = averaged_state(run.model, run.ts, self.avg, run.train_data[0], batch_size=run.batch_size,
                                recompute_stats=self.recompute_stats)

    def checkpoint_state(self, run: Run) -> tuple[Any, dict]:
        # Before the first averaged epoch the current params stand in (same structure).
        return (self.avg if self.avg is not None else run.ts.params), {"count": self.count, "start": self.start}

    def restore_state(self, run: Run, arrays: Any, meta: dict) -> None:
        self.count = int(meta.get("count", 0))
        self.avg = arrays if self.count else None

    def restore_absent(self, run: Run, epoch: int) -> None:
        """Resuming from a checkpoint saved without SWA after `epoch`: fine while nothing was averaged yet."""
        if epoch > self.start:
            raise ValueError(f"SWA: the checkpoint was saved after epoch {epoch} by a run without SWA, so epochs "
                             f"{self.start + 1}-{epoch} were not averaged; resume only up to epoch "
                             f"start={self.start}, or use SWA(start={epoch})")
        self.avg, self.count = None, 0
