"""The ONE compiled epoch, and the per-step program built from the same step body.

``epoch_fn(step, ...)`` is a pure function ``(ts, x, y, lr_scale) -> (ts, sums, per_step)``: the
permutation is drawn on the device (``fnn.data.epoch_indices``), ``lax.scan`` runs every step
and gathers its batch, and the metrics are summed inside the scan (``EpochSums``), so nothing
returns to Python between steps. ``fit`` jits it with the TrainState donated;
``search.vmap_search`` vmaps it over configurations. The per-step program runs the same scan
body once per call, for ``fit(fused=False)``.

NaN/Inf accounting: the sums skip a non-finite step and every step after it, and record the
first bad step and what went bad (loss, gradient, or the parameters after the update); ``fit``
then hands the epoch to its callbacks' ``on_nonfinite`` (``NanGuard`` rolls back).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnn._compile import jit
from fnn.data import epoch_indices
from fnn.optim._base import default_float
from fnn.train.history import STEP_FIELDS
from fnn.train.state import TrainState
from fnn.train.step import train_step, tree_all_finite

BAD_WHAT = {1: "loss", 2: "gradient", 3: "parameters (after the update)"}


class EpochSums(NamedTuple):
    """Sums over the steps of one epoch, carried through the scan."""

    loss: jax.Array        # Σ loss·count over good steps
    correct: jax.Array     # Σ correct (int32), -1 per step when not classification
    count: jax.Array       # type: ignore[assignment]  # Σ examples counted (shadows tuple.count)
    grad_norm: jax.Array   # Σ grad_norm over good steps
    steps: jax.Array       # good steps
    bad: jax.Array         # a non-finite loss or gradient was seen
    first_bad: jax.Array   # index of the first bad step in the epoch, -1 if none
    i: jax.Array           # steps seen
    bad_what: jax.Array    # the first non-finite quantity: 0 none, 1 loss, 2 gradient, 3 parameters


def zero_sums() -> EpochSums:
    f, i32 = default_float(), jnp.int32
    return EpochSums(jnp.zeros((), f), jnp.zeros((), i32), jnp.zeros((), i32), jnp.zeros((), f),
                     jnp.zeros((), i32), jnp.zeros((), jnp.bool_), jnp.full((), -1, i32), jnp.zeros((), i32),
                     jnp.zeros((), i32))


def _add(acc: EpochSums, m: dict) -> EpochSums:
    """Add one step's metrics unless it (or an earlier step) was not finite."""
    ok = m["finite"] & ~acc.bad
    first = ~acc.bad & ~m["finite"]
    what = jnp.where(jnp.isfinite(m["loss"]) & ~jnp.isfinite(m["grad_norm"]), 2, 1)
    f = acc.loss.dtype
    return EpochSums(
        loss=acc.loss + jnp.where(ok, m["loss"].astype(f) * m["count"].astype(f), 0.0).astype(f),
        correct=acc.correct + jnp.where(ok, m["correct"], 0),
        count=acc.count + jnp.where(ok, m["count"], 0),
        grad_norm=acc.grad_norm + jnp.where(ok, m["grad_norm"].astype(f), 0.0).astype(f),
        steps=acc.steps + ok.astype(jnp.int32),
        bad=acc.bad | ~m["finite"],
        first_bad=jnp.where(first, acc.i, acc.first_bad),
        i=acc.i + 1,
        bad_what=jnp.where(first, what, acc.bad_what).astype(jnp.int32))


def finish(ts: TrainState, acc: EpochSums) -> EpochSums:
    """A step may leave non-finite parameters behind a finite loss: flag the epoch's last step."""
    params_ok = tree_all_finite(ts.params)
    first = ~acc.bad & ~params_ok
    return acc._replace(bad=acc.bad | ~params_ok, first_bad=jnp.where(first, acc.i - 1, acc.first_bad),
                        bad_what=jnp.where(first, 3, acc.bad_what).astype(jnp.int32))


class Probe(NamedTuple):
    """A per-step probe: ``run(params, state, x, key, train) -> {field: (L,) array}`` evaluated on
    global steps 1, every, 2·every, ... (NaN on other steps), before the step's update."""

    every: int
    run: Callable | None


def scan_body(step: Callable, use_mask: bool, record: Probe | None = None) -> Callable:
    """The scan body ``((ts, sums), (x, y, mask), lr_scale) -> ((ts, sums), per_step)``.

    Updates after a bad step are not undone here: ``fit`` rolls back to the state from before
    the epoch, so the sums only have to ignore them. With `record`, the body also returns the
    step's ``STEP_FIELDS`` and the probe's fields (the scan stacks them over the epoch); else None.
    """
    def probed(ts, x):
        if record is None or record.run is None:
            return {}
        run = record.run
        n = ts.step + 1
        sub = jax.random.split(jax.random.clone(ts.key))[1]  # the key train_step gives the model
        shapes = jax.eval_shape(lambda p, s, xx, k: run(p, s, xx, k, True), ts.params, ts.state, x, sub)
        blank = {k: jnp.full(v.shape, jnp.nan, v.dtype) for k, v in shapes.items()}
        return jax.lax.cond((n == 1) | (n % record.every == 0),
                            lambda: run(ts.params, ts.state, x, sub, True), lambda: blank)

    def body(carry, batch, lr_scale):
        ts, acc = carry
        x, y, mask = batch
        extra = probed(ts, x)
        ts, m = step(ts, x, y, mask if use_mask else None, lr_scale)
        per_step = {**{k: m[k] for k in STEP_FIELDS}, **extra} if record is not None else None
        return (ts, _add(acc, m)), per_step

    return body


def epoch_fn(step: Callable, batch_size: int, remainder: str, *, record: Probe | None = None,
             constrain: Callable | None = None) -> Callable:
    """One epoch as a pure function ``(ts, x, y, lr_scale) -> (ts, EpochSums, per_step)``.

    Args:
      step: ``train_step(...)`` (possibly wrapped for data parallelism).
      batch_size, remainder: as for ``fit`` ("drop" or "pad").
      record: a ``Probe`` to record per-step statistics (``per_step`` is None without one).
      constrain: applied to the (steps, B) indices and mask (data parallel: split along B).
    """
    body = scan_body(step, remainder == "pad", record)

    def run(ts, x, y, lr_scale):
        k, perm_key = jax.random.split(ts.key)
        mask_dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
        idx, mask = epoch_indices(x.shape[0], batch_size, key=perm_key, remainder=remainder,
                                  mask_dtype=mask_dtype)
        if constrain is not None:
            idx, mask = constrain((idx, mask))  # (steps, B): each device gathers its own rows

        def gather_body(carry, batch):
            # One batch gathered per step: no shuffled copy of the whole training set.
            i, m = batch
            return body(carry, (jnp.take(x, i, axis=0), jnp.take(y, i, axis=0), m), lr_scale)

        (ts, acc), per_step = jax.lax.scan(gather_body, (ts._replace(key=k), zero_sums()), (idx, mask))
        return ts, finish(ts, acc), per_step

    return run


class Programs(NamedTuple):
    """What ``fit`` compiles: one fused epoch, one step of the per-step loop, and the raw step."""

    epoch: jax.stages.Wrapped  # (ts, x, y, lr_scale) -> (ts, sums, per_step); ts donated
    step: jax.stages.Wrapped   # ((ts, sums), (x, y, mask), lr_scale) -> ((ts, sums), per_step); carry donated
    raw_step: Callable  # train_step itself, not jitted (NanGuard re-runs a bad step eagerly)


@functools.lru_cache(maxsize=32)
def programs(model, loss, optimizer, penalty, mode: str, batch_size: int, remainder: str, dp=None,
             record: Probe | None = None, mix=None) -> Programs:
    """The jitted programs of ``fit``, cached per (model, loss, optimizer, settings).

    `dp`: a ``fnn.parallel.DataParallel``: batches split over its mesh, the rest replicated.
    """
    step = train_step(model, loss, optimizer, grad_mode=mode, penalty=penalty, layer_stats=record is not None,
                      mix=mix)
    wrapped = step if dp is None else dp.wrap_step(step)
    body = scan_body(wrapped, remainder == "pad", record)
    epoch = epoch_fn(wrapped, batch_size, remainder, record=record,
                     constrain=None if dp is None else dp.constrain_stacked)
    if dp is not None:
        return Programs(dp.jit_epoch(epoch), dp.jit_carry_step(body), step)
    return Programs(jit(epoch, donate_argnums=0), jit(body, donate_argnums=0), step)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def shuffle(key, n: int, batch_size: int, remainder: str, mask_dtype):
    """The per-step loop's shuffle: the same key split, indices and mask as the fused epoch's."""
    k, perm_key = jax.random.split(key)
    return (k, *epoch_indices(n, batch_size, key=perm_key, remainder=remainder, mask_dtype=mask_dtype))


finish_jit = jax.jit(finish)
