"""Learning-rate schedules (``count -> lr``) and the reduce-on-plateau controller.

A schedule receives ``count``, the number of updates done before this one (0 at the first
step, as optax), and may be called with a traced int32 under ``jax.jit``. Comparisons
with ``torch.optim.lr_scheduler`` assume ``scheduler.step()`` after every
``optimizer.step()``, so torch's ``last_epoch`` equals our ``count``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn._deprecation import deprecated_alias
from fnn.core import check_choice, check_range
from fnn.optim._base import as_float, check_float_arg, default_float

Schedule = Callable[[jax.Array], jax.Array]


def _check_int(name: str, what: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: {what} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_lr(name: str, what: str, value) -> float:
    v = check_float_arg(name, what, value)
    if not v >= 0.0 or math.isinf(v):
        raise ValueError(f"{name}: {what} must be a finite float >= 0, got {value!r}")
    return v


def constant_schedule(value: float) -> Schedule:
    """lr = value at every step."""
    value = _check_lr("constant_schedule", "value", value)

    def schedule(count):
        return jnp.full((), value, default_float())

    return schedule


@deprecated_alias("fnn.optim.constant", "fnn.optim.constant_schedule")
def constant(value: float) -> Schedule:
    """Deprecated alias of ``constant_schedule`` (``constant`` is also an initializer, ``fnn.init.constant``)."""
    return constant_schedule(value)


def step_decay(init_value: float, decay_rate: float, step_size: int) -> Schedule:
    """lr = init_value · decay_rate^⌊count / step_size⌋ (``torch StepLR(step_size, gamma=decay_rate)``)."""
    name = "step_decay"
    init_value = _check_lr(name, "init_value", init_value)
    decay_rate = check_range(name, "decay_rate", decay_rate, 0.0, math.inf, low_inclusive=False)
    step_size = _check_int(name, "step_size", step_size, 1)

    def schedule(count):
        # Integer division first: a float quotient can round up to the next integer.
        return init_value * decay_rate ** as_float(jnp.asarray(count) // step_size)

    return schedule


def exponential_decay(init_value: float, decay_rate: float, transition_steps: int = 1,
                      staircase: bool = False) -> Schedule:
    """lr = init_value · decay_rate^(count / transition_steps), the exponent floored if ``staircase``.

    With ``transition_steps=1`` this is ``torch ExponentialLR(gamma=decay_rate)``.
    """
    name = "exponential_decay"
    init_value = _check_lr(name, "init_value", init_value)
    decay_rate = check_range(name, "decay_rate", decay_rate, 0.0, math.inf, low_inclusive=False)
    transition_steps = _check_int(name, "transition_steps", transition_steps, 1)
    staircase = bool(staircase)

    def schedule(count):
        if staircase:
            return init_value * decay_rate ** as_float(jnp.asarray(count) // transition_steps)
        return init_value * decay_rate ** (as_float(count) / transition_steps)

    return schedule


def cosine_decay(init_value: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """Cosine annealing (Loshchilov & Hutter, 2017, SGDR without restarts).

    lr = η_min + (init_value − η_min)·(1 + cos(π·min(count, decay_steps)/decay_steps))/2 with
    η_min = alpha·init_value. Equals ``torch CosineAnnealingLR(T_max=decay_steps,
    eta_min=alpha·init_value)`` for count <= decay_steps; after that it stays at η_min
    (as optax), where torch's keeps following the cosine back up.
    """
    name = "cosine_decay"
    init_value = _check_lr(name, "init_value", init_value)
    decay_steps = _check_int(name, "decay_steps", decay_steps, 1)
    alpha = check_range(name, "alpha", alpha, 0.0, 1.0, high_inclusive=True)
    eta_min = alpha * init_value

    def schedule(count):
        t = jnp.minimum(as_float(count), float(decay_steps)) / decay_steps
        return eta_min + (init_value - eta_min) * (1.0 + jnp.cos(jnp.pi * t)) / 2.0

    return schedule


def linear_warmup(init_value: float, peak_value: float, warmup_steps: int) -> Schedule:
    """lr rises linearly from init_value at count 0 to peak_value at count >= warmup_steps.

    ``torch LinearLR(start_factor=init_value/peak_value, end_factor=1, total_iters=warmup_steps)``
    on an optimizer with lr=peak_value. Combine with a decay through ``join``.
    """
    name = "linear_warmup"
    init_value = _check_lr(name, "init_value", init_value)
    peak_value = _check_lr(name, "peak_value", peak_value)
    warmup_steps = _check_int(name, "warmup_steps", warmup_steps, 1)

    def schedule(count):
        frac = jnp.minimum(as_float(count), float(warmup_steps)) / warmup_steps
        return init_value + (peak_value - init_value) * frac

    return schedule


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run schedules one after another: schedules[i+1] takes over at count = boundaries[i].

    Each schedule restarts from 0: for boundaries[i] <= count < boundaries[i+1] the lr is
    ``schedules[i+1](count - boundaries[i])``. Example, warmup then cosine:
    ``join([linear_warmup(0.0, 0.1, 500), cosine_decay(0.1, 9500)], [500])``.
    """
    name = "join"
    schedules = list(schedules)
    boundaries = [_check_int(name, "boundaries", b, 0) for b in boundaries]
    if len(schedules) != len(boundaries) + 1:
        raise ValueError(f"{name}: expected len(schedules) == len(boundaries) + 1, got "
                         f"{len(schedules)} schedules and {len(boundaries)} boundaries")
    if any(b1 >= b2 for b1, b2 in zip(boundaries[:-1], boundaries[1:], strict=True)):
        raise ValueError(f"{name}: boundaries must be strictly increasing, got {boundaries}")
    for i, s in enumerate(schedules):
        if not callable(s):
            raise ValueError(f"{name}: schedules[{i}] must be a callable count -> lr, got {s!r}")

    def schedule(count):
        count = jnp.asarray(count)
        lr = jnp.asarray(schedules[0](count)).astype(default_float())
        for b, s in zip(boundaries, schedules[1:], strict=True):
            later = jnp.asarray(s(count - b)).astype(default_float())
            lr = jnp.where(count < b, lr, later)
        return lr

    return schedule


def warmup_cosine_decay(init_value: float, peak_value: float, warmup_steps: int, decay_steps: int,
                        end_value: float = 0.0) -> Schedule:
    """Linear warmup from init_value to peak_value over warmup_steps, then a cosine down to end_value.

    The same arguments and values as ``optax.warmup_cosine_decay_schedule`` (exponent 1):
    `decay_steps` counts the whole schedule, warmup included, and the lr stays at end_value
    from count >= decay_steps. ``warmup_steps=0`` starts at peak_value.
    """
    name = "warmup_cosine_decay"
    init_value = _check_lr(name, "init_value", init_value)
    peak_value = _check_lr(name, "peak_value", peak_value)
    end_value = _check_lr(name, "end_value", end_value)
    warmup_steps = _check_int(name, "warmup_steps", warmup_steps, 0)
    decay_steps = _check_int(name, "decay_steps", decay_steps, 1)
    if decay_steps <= warmup_steps:
        raise ValueError(f"{name}: decay_steps ({decay_steps}) counts the warmup too and must exceed "
                         f"warmup_steps ({warmup_steps})")
    if peak_value == 0.0 and end_value != 0.0:
        raise ValueError(f"{name}: end_value must be 0 when peak_value is 0, got {end_value!r}")
    alpha = end_value / peak_value if peak_value else 0.0
    if alpha > 1.0:
        raise ValueError(f"{name}: end_value ({end_value}) must not exceed peak_value ({peak_value})")
    cosine = cosine_decay(peak_value, decay_steps - warmup_steps, alpha=alpha)
    if warmup_steps == 0:
        return cosine
    return join([linear_warmup(init_value, peak_value, warmup_steps), cosine], [warmup_steps])


def one_cycle(total_steps: int, peak_value: float, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div_factor: float = 1e4, anneal: str = "cos", three_phase: bool = False) -> Schedule:
    """The 1cycle policy (Smith & Topin 2019) as ``torch.optim.lr_scheduler.OneCycleLR`` (2.13).

    The lr rises from peak_value/div_factor to peak_value until count = pct_start·total_steps − 1,
    then falls to peak_value/(div_factor·final_div_factor) at count = total_steps − 1 (and stays
    there after: torch raises instead). ``three_phase``: up, back down to the initial lr at
    count = 2·pct_start·total_steps − 2, then to the minimum. ``anneal``: "cos" or "linear"
    interpolation within each phase. Momentum is not cycled (torch's ``cycle_momentum=False``).

    Args:
      total_steps: int >= 2, the number of optimizer steps (epochs x steps per epoch).
      peak_value: > 0, the maximum lr (torch's ``max_lr``).
      pct_start: in (0, 1) (three_phase: (0, 0.5)), the fraction of steps spent increasing.
      div_factor, final_div_factor: > 0, initial lr = peak/div_factor, minimum = initial/final_div_factor.
    """
    name = "one_cycle"
    total_steps = _check_int(name, "total_steps", total_steps, 2)
    peak_value = _check_lr(name, "peak_value", peak_value)
    pct_start = check_range(name, "pct_start", pct_start, 0.0, 0.5 if three_phase else 1.0, low_inclusive=False)
    div_factor = check_range(name, "div_factor", div_factor, 0.0, math.inf, low_inclusive=False)
    final_div_factor = check_range(name, "final_div_factor", final_div_factor, 0.0, math.inf, low_inclusive=False)
    check_choice(name, "anneal", anneal, ("cos", "linear"))
    initial = peak_value / div_factor
    minimum = initial / final_div_factor
    up = pct_start * total_steps - 1.0
    if three_phase:
        ends = [up, 2.0 * pct_start * total_steps - 2.0, total_steps - 1.0]
        lrs = [initial, peak_value, initial, minimum]
    else:
        ends, lrs = [up, total_steps - 1.0], [initial, peak_value, minimum]
    starts = [0.0] + ends[:-1]
    if any(e <= s for s, e in zip(starts, ends, strict=True)):
        raise ValueError(f"{name}: every phase needs at least one step: pct_start·total_steps = "
                         f"{pct_start * total_steps:g} must be > 1 and leave steps for the decay "
                         f"(total_steps={total_steps}, pct_start={pct_start})")

    def interpolate(start, end, pct):
        if anneal == "cos":
            return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1.0)
        return (end - start) * pct + start

    def schedule(count):
        t = jnp.minimum(as_float(count), total_steps - 1.0)
        lr = interpolate(lrs[-2], lrs[-1], (t - starts[-1]) / (ends[-1] - starts[-1]))
        for i in reversed(range(len(ends) - 1)):  # earlier phases take precedence
            phase = interpolate(lrs[i], lrs[i + 1], (t - starts[i]) / (ends[i] - starts[i]))
            lr = jnp.where(t <= ends[i], phase, lr)
        return lr.astype(default_float())

    return schedule


# ----------------------------------------------------------------------------------------
# Reduce on plateau


class PlateauState(NamedTuple):
    """scale: the current lr multiplier (pass it as ``lr_scale=``); best: the best metric so far;
    num_bad_epochs, cooldown_counter: int32 counters as in torch's ReduceLROnPlateau."""

    scale: jax.Array
    best: jax.Array
    num_bad_epochs: jax.Array
    cooldown_counter: jax.Array


class PlateauController(NamedTuple):
    """init() -> PlateauState; step(state, metric) -> PlateauState, once per epoch."""

    init: Callable
    step: Callable


def reduce_on_plateau(factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                      threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0,
                      mode: str = "min", eps: float = 1e-8, base_lr: float = 1.0) -> PlateauController:
    """Multiply the learning rate by ``factor`` when a metric stops improving.

    A per-epoch controller, not a per-step transform: call ``step(state, metric)`` once per
    epoch with the validation metric and pass ``lr_scale=state.scale`` to the optimizer's
    ``update``. Pure ``jnp``, so ``step`` can be jitted. It counts bad epochs exactly as
    ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (2.13): a metric is better than ``best``
    when it is below best·(1 − threshold) ("min", "rel"), below best − threshold ("abs"),
    or above best·(1 + threshold) / best + threshold for "max". The lr is reduced when the
    number of bad epochs exceeds ``patience``; the next ``cooldown`` epochs count no bad
    epochs.

    We hold only a scale, so torch's absolute ``min_lr`` and ``eps`` are compared with
    ``base_lr·scale``: new lr = max(base_lr·scale·factor, min_lr), applied only if it
    lowers the lr by more than ``eps``. Pass the optimizer's learning rate as ``base_lr``
    to use torch's units; with the default ``base_lr=1.0``, ``min_lr`` is the minimum
    scale and ``eps`` the minimum change of scale.

    Args:
      factor: in (0, 1), the multiplier applied at each reduction.
      patience: int >= 0, bad epochs tolerated before reducing.
      threshold: >= 0, the least improvement that counts.
      threshold_mode: "rel" or "abs".
      cooldown: int >= 0, epochs to wait after a reduction before counting bad epochs.
      min_lr: >= 0, the floor on base_lr·scale.
      mode: "min" (lower metric is better) or "max".
      eps: >= 0, reductions smaller than this are skipped (torch's default 1e-8).
      base_lr: > 0, the learning rate that scale 1 stands for.
    """
    name = "reduce_on_plateau"
    factor = check_range(name, "factor", factor, 0.0, 1.0, low_inclusive=False)
    patience = _check_int(name, "patience", patience, 0)
    threshold = check_range(name, "threshold", threshold, 0.0, math.inf)
    check_choice(name, "threshold_mode", threshold_mode, ("rel", "abs"))
    cooldown = _check_int(name, "cooldown", cooldown, 0)
    min_lr = check_range(name, "min_lr", min_lr, 0.0, math.inf)
    check_choice(name, "mode", mode, ("min", "max"))
    eps = check_range(name, "eps", eps, 0.0, math.inf)
    base_lr = check_range(name, "base_lr", base_lr, 0.0, math.inf, low_inclusive=False)

    def is_better(metric, best):
        if mode == "min":
            return metric < (best * (1.0 - threshold) if threshold_mode == "rel" else best - threshold)
        return metric > (best * (1.0 + threshold) if threshold_mode == "rel" else best + threshold)

    def init():
        f = default_float()
        worst = math.inf if mode == "min" else -math.inf
        return PlateauState(scale=jnp.ones((), f), best=jnp.full((), worst, f),
                            num_bad_epochs=jnp.zeros((), jnp.int32),
                            cooldown_counter=jnp.zeros((), jnp.int32))

    def step(state, metric):
        metric = jnp.asarray(metric).astype(state.best.dtype)
        better = is_better(metric, state.best)
        best = jnp.where(better, metric, state.best)
        bad = jnp.where(better, 0, state.num_bad_epochs + 1)
        in_cooldown = state.cooldown_counter > 0
        cooldown_counter = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
        bad = jnp.where(in_cooldown, 0, bad)
        reduce = bad > patience
        old_lr = base_lr * state.scale
        new_lr = jnp.maximum(old_lr * factor, min_lr)
        scale = jnp.where(reduce & (old_lr - new_lr > eps), new_lr / base_lr, state.scale)
        cooldown_counter = jnp.where(reduce, cooldown, cooldown_counter)
        bad = jnp.where(reduce, 0, bad)
        return PlateauState(scale=scale, best=best, num_bad_epochs=bad.astype(jnp.int32),
                            cooldown_counter=cooldown_counter.astype(jnp.int32))

    return PlateauController(init, step)
