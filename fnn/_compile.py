"""``fnn.jit``: ``jax.jit`` with the XLA:CPU compiler options fnn's own programs use on the CPU backend.

What and why. jaxlib 0.10 hands each convolution on XLA:CPU to YNNPACK by default, and on the
2-core machines of this project that path used one core: simple_cnn's second conv (batch 128,
14x14x32 -> 64, 3x3 SAME) ran at 84 GFLOP/s forward, input and weight gradient alike, half the
machine's 183 GFLOP/s sgemm rate, while XLA's own (Eigen) convolution ran the same three at
178, 162 and 114 GFLOP/s (benchmarks/ops.py, benchmarks/RESULTS.md). So fnn's training,
evaluation and search programs are compiled with YNNPACK kept for what it is fast at here
(dots and reductions, its other default fusions) and convolutions left to XLA, through the
per-program ``compiler_options`` of ``jax.jit``: nothing process-wide changes, and a user's
own ``jax.jit`` is untouched. To jit your own step with them, use ``fnn.jit`` in place of
``jax.jit``: ``step = fnn.jit(fnn.train_step(model, loss, opt), donate_argnums=0)``.

When not. On any backend but CPU; when this jaxlib does not know the option (checked once by
compiling a one-line program with it); when ``XLA_FLAGS`` names the option itself (the user
decided); and when ``FNN_XLA_CPU_DEFAULTS=1`` is set (XLA's defaults, for comparison).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
CPU_OPTIONS = {YNN_OPTION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
"""jaxlib 0.10.2's default YNNPACK fusion types (individual dots, individual convolutions,
reductions: read from a compiled program's fusions) without the convolutions."""


@functools.cache
def cpu_options() -> dict[str, Any]:
    """The compiler options of ``jit`` in this process: ``CPU_OPTIONS``, or {} (see the module doc)."""
    if jax.default_backend() != "cpu" or os.environ.get("FNN_XLA_CPU_DEFAULTS") == "1":
        return {}
    if YNN_OPTION in os.environ.get("XLA_FLAGS", ""):
        return {}
    try:
        jax.jit(jnp.negative, compiler_options=CPU_OPTIONS).lower(jnp.zeros(2)).compile()
    except Exception:  # an older or newer jaxlib without this option or these values
        return {}
    return dict(CPU_OPTIONS)


def jit(fn: Callable, **kwargs: Any) -> jax.stages.Wrapped:
    """``jax.jit(fn, **kwargs)`` with ``cpu_options()`` as its compiler options."""
    return jax.jit(fn, compiler_options=cpu_options() or None, **kwargs)
