"""``lr_find``: the learning-rate range test (Smith 2017, "Cyclical learning rates", section 3.3).

Train from the model's starting point for a few hundred steps while the learning rate grows
exponentially from ``min_lr`` to ``max_lr``, one batch per step, and watch the loss: it stays
flat while the rate is too small to matter, falls where the rate is useful, and blows up
where it is too large. The whole sweep is one compiled ``lax.scan`` of ``fnn.train``'s
``train_step``, with the rate as the scanned input (handed to the optimizer as ``lr_scale``).
The caller's parameters are never changed: the sweep runs on its own copy of the state.

Smoothing: batch losses are noisy, so the curve and the rules read an exponential moving
average with bias correction (as Adam's moments, and fastai's ``lr_find``):
``avg_i = β·avg_{i-1} + (1 − β)·loss_i``, ``smoothed_i = avg_i / (1 − β^(i+1))``. It lags the
raw loss by about β/(1 − β) steps (9 for the default β = 0.9), i.e. it reports a loss a
little later, at a larger learning rate, which errs on the safe side for the rules below.

Early stop: once the smoothed loss exceeds ``diverge`` (4) times the best smoothed loss so
far, or the loss is NaN/Inf, the remaining steps are skipped (``lax.cond``: nothing is computed).

Rules (both are reported; ``rule`` picks the suggestion):

- ``"min/10"`` (default): one tenth of the rate at the smoothed loss's minimum. Past the
  minimum the loss is about to diverge, and a tenth of it is safely below (fastai's ``lr_min``).
  On least squares with plain SGD, which diverges above 2/λ_max, it lands near the optimal
  constant rate 1/λ_max (``tests/test_lr_find.py``).
- ``"steepest"``: the rate where the smoothed loss falls fastest per decade of learning rate,
  ``argmin d(smoothed)/d(log lr)``, looked for up to the smoothed minimum: usually smaller and
  more sensitive to noise in the curve.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn._compile import jit
from fnn.core import Layer, Loss, check_choice, check_positive_int, check_range
from fnn.data import epoch_indices
from fnn.train import TrainState, as_key, train_step
from fnn.train.checks import check_data
from fnn.typing import Data

RULES = ("min/10", "steepest")
"""The suggestion rules of ``lr_find`` (see the module docstring)."""


class LrFindResult(NamedTuple):
    """What ``lr_find`` measured.

    Attributes:
      lrs: (S,) the learning rate of each step taken (S <= num_steps: fewer after an early stop).
      losses: (S,) the loss on the next batch after the step at ``lrs[i]``, i.e. the effect of
        that rate (the loss a step measures is the one before its own update).
      smoothed: (S,) the bias-corrected moving average of the losses (module docstring).
      suggestion: the suggested learning rate, by ``rule``.
      lr_steepest: the rate of the steepest descent of the smoothed loss.
      lr_min: the rate at the smoothed loss's minimum (``lr_min / 10`` is the "min/10" rule).
      rule: the rule behind ``suggestion``.
      diverged: whether the sweep stopped early (the loss diverged or became NaN/Inf).
      initial_loss: the loss before the first step.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float
    lr_steepest: float
    lr_min: float
    rule: str
    diverged: bool
    initial_loss: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the suggestion, both rules, and the curve (NaN/Inf written as None)."""
        clean = lambda vs: [float(v) if math.isfinite(v) else None for v in vs]
        return {"suggestion": self.suggestion, "rule": self.rule, "lr_steepest": self.lr_steepest,
                "lr_min": self.lr_min, "lr_min_div10": self.lr_min / 10, "diverged": self.diverged,
                "initial_loss": self.initial_loss if math.isfinite(self.initial_loss) else None,
                "steps": len(self.lrs), "lrs": clean(self.lrs), "losses": clean(self.losses),
                "smoothed": clean(self.smoothed)}


@functools.lru_cache(maxsize=16)
def _sweep_fn(step: Callable, beta: float, diverge: float):
    """The jitted sweep: ``(ts, x, y, idx (S, B), lrs (S,)) -> (losses (S,), smoothed (S,))``, NaN
    for the steps skipped after the stop. Nothing is donated: the caller's arrays stay valid."""
    def sweep(ts, x, y, idx, lrs):
        def body(carry, inputs):
            ts, avg, best, done, i = carry
            batch, lr = inputs

            def run(ts):
                ts, metrics = step(ts, jnp.take(x, batch, axis=0), jnp.take(y, batch, axis=0), None, lr)
                return ts, metrics["loss"].astype(avg.dtype)

            ts, loss = jax.lax.cond(done, lambda ts: (ts, jnp.full((), jnp.nan, avg.dtype)), run, ts)
            avg = jnp.where(done, avg, beta * avg + (1 - beta) * loss)
            smoothed = avg / (1 - beta ** (i + 1).astype(avg.dtype))
            best = jnp.where(done, best, jnp.minimum(best, smoothed))
            bad = ~jnp.isfinite(loss) | (smoothed > diverge * best)
            out = (jnp.where(done, jnp.nan, loss), jnp.where(done, jnp.nan, smoothed))
            return (ts, avg, best, done | bad, i + 1), out

        f32 = jnp.float32
        carry = (ts, jnp.zeros((), f32), jnp.full((), jnp.inf, f32), jnp.zeros((), bool), jnp.zeros((), jnp.int32))
        _, (losses, smoothed) = jax.lax.scan(body, carry, (idx, lrs))
        return losses, smoothed

    return jit(sweep)


def _indices(n: int, batch_size: int, num_steps: int, key) -> jax.Array:
    """(num_steps, batch_size) example indices: consecutive shuffled epochs, as ``fit`` draws them."""
    per_epoch = n // batch_size
    keys = jax.random.split(key, -(-num_steps // per_epoch))
    return jnp.concatenate([epoch_indices(n, batch_size, key=k)[0] for k in keys])[:num_steps]


def _rules(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[float, float]:
    """(lr of the steepest descent before the minimum, lr at the minimum) of the smoothed curve."""
    i_min = int(np.argmin(smoothed))
    if i_min < 2:
        return float(lrs[i_min]), float(lrs[i_min])
    slope = np.gradient(smoothed[:i_min + 1], np.log(lrs[:i_min + 1]))
    return float(lrs[int(np.argmin(slope))]), float(lrs[i_min])


def lr_find(model: Layer, loss: Loss, optimizer: Callable, train_data: Data, *, batch_size: int,
            key: jax.Array | int | None = None, train_state: TrainState | None = None,
            min_lr: float = 1e-7, max_lr: float = 10.0, num_steps: int = 200, smoothing: float = 0.9,
            diverge: float = 4.0, rule: str = "min/10", grad_mode: str = "auto") -> LrFindResult:
    """The learning-rate range test: the loss while the learning rate grows exponentially.

    Step i (of ``num_steps``) trains one batch with ``lr_i = min_lr·(max_lr/min_lr)^(i/(num_steps−1))``.
    Smoothing, the early stop and the rules are described in ``fnn.diagnostics.lr_range``.

    Args:
      model: the Layer to train.
      loss: the Loss (or a ``losses.penalized`` objective).
      optimizer: a function ``lr -> Optimizer``, e.g. ``optim.adam`` or
        ``lambda lr: optim.momentum(lr, 0.9)``. It is built once with ``lr=1.0`` and each step
        passes its rate as ``lr_scale`` (an optax rule, which does not know ``lr_scale``, gets
        its updates scaled, which is the same for rules whose step is linear in the rate).
      train_data: ``(x, y)``, x (N, ...) floating, y (N,) labels or (N, ...) targets.
      batch_size: examples per step, <= N.
      key: PRNG key or int seed: the model's init (without ``train_state``), shuffles, dropout.
      train_state: start from its params and state instead of a fresh init (a fresh optimizer
        state is made either way). They are not modified.
      min_lr, max_lr: the range swept, 0 < min_lr < max_lr.
      num_steps: steps of the sweep (at least 10).
      smoothing: β of the loss's moving average, in [0, 1).
      diverge: stop once the smoothed loss exceeds this multiple of its best value (> 1).
      rule: "min/10" (default) or "steepest", the rule behind ``suggestion``.
      grad_mode: as for ``fit``.

    Returns:
      An ``LrFindResult``; ``fnn.plot.plot_lr_find`` draws it.

    Raises:
      ValueError: bad arguments or data (the message names ``lr_find``), an Optimizer given
        instead of a function making one, or a sweep that diverged from its first steps.
    """
    name = "lr_find"
    if not callable(optimizer):
        raise ValueError(f"{name}: optimizer must be a function lr -> Optimizer, such as optim.adam or "
                         f"lambda lr: optim.momentum(lr, 0.9); got {type(optimizer).__name__}")
    batch_size = check_positive_int(name, "batch_size", batch_size)
    num_steps = check_positive_int(name, "num_steps", num_steps)
    if num_steps < 10:
        raise ValueError(f"{name}: num_steps must be at least 10, got {num_steps}")
    min_lr = check_range(name, "min_lr", min_lr, 0.0, math.inf, low_inclusive=False)
    max_lr = check_range(name, "max_lr", max_lr, min_lr, math.inf, low_inclusive=False)
    beta = check_range(name, "smoothing", smoothing, 0.0, 1.0)
    diverge = check_range(name, "diverge", diverge, 1.0, math.inf, low_inclusive=False)
    check_choice(name, "rule", rule, RULES)
    x, y = check_data(name, "train_data", train_data)
    if batch_size > x.shape[0]:
        raise ValueError(f"{name}: batch_size={batch_size} is larger than the number of examples N={x.shape[0]}")
    opt = optimizer(1.0)
    init_key, key = jax.random.split(as_key(name, 0 if key is None else key))
    if train_state is None:
        _, params, state = model.init(init_key, tuple(x.shape[1:]))
    else:
        params, state = train_state.params, train_state.state
    ts = TrainState(params, state, opt.init(params), key, jnp.zeros((), jnp.int32))  # type: ignore[arg-type]  # key: split's Array
    lrs = min_lr * (max_lr / min_lr) ** (np.arange(num_steps + 1) / (num_steps - 1))
    idx = _indices(int(x.shape[0]), batch_size, num_steps + 1, jax.random.fold_in(key, 1))
    step = train_step(model, loss, opt, grad_mode=grad_mode)
    losses, smoothed = jax.device_get(_sweep_fn(step, beta, diverge)(ts, jnp.asarray(x), jnp.asarray(y), idx,
                                                                     jnp.asarray(lrs, jnp.float32)))
    # losses[i + 1] is measured after the step at lrs[i]; the extra (num_steps+1)-th step only measures.
    initial_loss = float(losses[0])
    kept = np.isfinite(smoothed[1:])
    lrs, losses, smoothed = lrs[:num_steps][kept], losses[1:][kept], smoothed[1:][kept]
    if len(lrs) < 3:
        raise ValueError(f"{name}: the loss diverged within the first steps (initial loss {initial_loss:.4g}, "
                         f"min_lr={min_lr:g}); lower min_lr, or check the model and data")
    lr_steepest, lr_min = _rules(lrs, smoothed)
    suggestion = lr_steepest if rule == "steepest" else lr_min / 10
    return LrFindResult(lrs, losses, smoothed, suggestion, lr_steepest, lr_min, rule, bool(len(lrs) < num_steps),
                        initial_loss)


__all__ = ["RULES", "LrFindResult", "lr_find"]
