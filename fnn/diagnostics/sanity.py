"""``overfit_one_batch``: the sanity check to run before any long training."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn._compile import jit
from fnn.backprop import resolve_grad_mode
from fnn.core import Layer, Loss, Optimizer, check_positive_int
from fnn.train import init_train_state, train_step
from fnn.typing import DataArray

OVERFIT_FRACTION = 1e-2
"""overfit_one_batch passes when the final loss is at most this fraction of the initial loss."""


class OverfitResult(NamedTuple):
    """What ``overfit_one_batch`` measured.

    Attributes:
      passed: the final loss is finite and ``|final_loss| <= threshold``.
      losses: (steps,) loss before each update; grad_norms: (steps,) gradient norms.
      final_loss: the loss after the last update (evaluation mode).
      initial_loss: ``losses[0]``.
      threshold: the pass threshold used.
      message: a one-line verdict.
    """

    passed: bool
    losses: np.ndarray
    grad_norms: np.ndarray
    final_loss: float
    initial_loss: float
    threshold: float
    message: str

    def __bool__(self) -> bool:
        return bool(self.passed)


@functools.lru_cache(maxsize=16)
def _overfit_fn(model, loss, optimizer, grad_mode, steps):
    step = train_step(model, loss, optimizer, grad_mode=grad_mode)

    def run(ts, x, y):
        def body(ts, _):
            ts, m = step(ts, x, y)
            return ts, (m["loss"], m["grad_norm"])

        ts, (losses_, norms) = jax.lax.scan(body, ts, None, length=steps)
        pred, _ = model.apply(ts.params, ts.state, x, train=False)
        return losses_, norms, loss.value(pred, y)

    return jit(run)


def overfit_one_batch(model: Layer, loss: Loss, optimizer: Optimizer, x: DataArray, y: DataArray, *, key: jax.Array,
                      steps: int = 300, threshold: float | None = None,
                      grad_mode: str = "auto") -> OverfitResult:
    """Train on one small batch only, and check that the loss goes (near) zero.

    A correct model with enough capacity memorizes a few examples; when it cannot, something
    is broken (a wrong gradient, a layer that does not learn, a loss with the wrong sign, a
    degenerate init). Run it before any long training (Karpathy's "overfit one batch").

    Args:
      model, loss, optimizer: as for ``fit``.
      x: (N, ...) a small batch (8 to 64 examples); y: (N, ...) its targets.
      key: PRNG key for the init (and dropout).
      steps: number of full-batch updates (one compiled ``lax.scan``).
      threshold: pass when the final loss ``|L|`` is at most this; default
        ``OVERFIT_FRACTION`` (1e-2) times the initial loss.
      grad_mode: as for ``fit``: "auto" (default), "autodiff", "manual" or "custom_vjp".

    Returns:
      An ``OverfitResult`` (truthy when it passed) with the per-step loss curve.
    """
    steps = check_positive_int("overfit_one_batch", "steps", steps)
    resolve_grad_mode(grad_mode, name="overfit_one_batch")  # "auto" goes on: train_step keeps its CPU kernels
    x, y = jnp.asarray(x), jnp.asarray(y)
    ts = init_train_state(model, optimizer, x.shape[1:], key=key)
    losses_, norms, final = jax.device_get(_overfit_fn(model, loss, optimizer, grad_mode, steps)(ts, x, y))
    losses_, norms, final = np.asarray(losses_, np.float64), np.asarray(norms, np.float64), float(final)
    initial = float(losses_[0])
    thr = float(threshold) if threshold is not None else OVERFIT_FRACTION * abs(initial)
    passed = bool(math.isfinite(final) and abs(final) <= thr)
    how = "PASSED" if passed else "FAILED"
    hint = "" if passed else (" - the model cannot memorize one batch: check the gradient (sign, "
                              "layers that do not learn), the init and the learning rate")
    msg = (f"overfit one batch {how}: loss {initial:.4g} -> {final:.4g} after {steps} steps on "
           f"{x.shape[0]} examples (threshold {thr:.3g}){hint}")
    return OverfitResult(passed, losses_, norms, final, initial, thr, msg)
