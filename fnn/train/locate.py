"""Find the operation that first produced a NaN/Inf: re-run the bad epoch up to its first bad
step, then that step eagerly under ``jax.debug_nans``/``jax.debug_infs`` (``NanGuard(locate=True)``)."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnn._compile import jit
from fnn.train import epoch as ep
from fnn.train.state import TrainState, copy_tree


def _locate_nonfinite(step: Callable, ts: TrainState, batch, use_mask: bool, lr_scale) -> str:
    """Re-run one step eagerly under jax.debug_nans/debug_infs: the first primitive making a NaN/Inf."""
    x, y, mask = (jnp.asarray(a) for a in batch)
    try:
        with jax.debug_nans(True), jax.debug_infs(True):
            jax.block_until_ready(step(ts, x, y, mask if use_mask else None, lr_scale))
    except FloatingPointError as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if f"{os.sep}jax{os.sep}" not in f.filename and f"{os.sep}jaxlib{os.sep}" not in f.filename]
        where = f" at {frames[-1].filename}:{frames[-1].lineno} ({frames[-1].name})" if frames else ""
        return f"jax.debug_nans: {str(e).splitlines()[0]}{where}"
    return "jax.debug_nans: re-running the step eagerly produced no NaN/Inf"


def locator(programs: ep.Programs, data: tuple[Any, Any], batch_size: int, remainder: str, scale: Callable) -> Callable:
    """``locate(ts, first_bad) -> str`` for one fit call: `ts` is the state before the bad epoch,
    `first_bad` the index of its first bad step; `scale()` gives the epoch's lr_scale."""
    def locate(ts: TrainState, first_bad: int) -> str:
        x, y = data
        mask_dtype = np.dtype(x.dtype)
        k, idx, mask = ep.shuffle(ts.key, len(x), batch_size, remainder, mask_dtype)
        idx, mask, lr_scale = np.asarray(idx), np.asarray(mask), scale()
        ts = copy_tree(ts)._replace(key=k)
        use_mask = remainder == "pad"
        step = jit(programs.raw_step, static_argnums=())
        batch = lambda i: (x[idx[i]], y[idx[i]], mask[i])
        for i in range(first_bad):
            xb, yb, mb = batch(i)
            ts, _ = step(ts, xb, yb, jnp.asarray(mb) if use_mask else None, lr_scale)
        return _locate_nonfinite(programs.raw_step, ts, batch(first_bad), use_mask, lr_scale)

    return locate
