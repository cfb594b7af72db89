"""Gradients of a model's loss, three ways, chosen by ``grad_mode``.

- ``grad_mode="manual"``: only the layers' and the loss's hand-derived ``backward`` functions. One
  forward pass keeps what each layer needs (``layer_fwd``), then the backward pass runs in
  reverse (``layer_bwd``). No ``jax.grad``, ``jax.vjp`` or ``jax.jvp`` on this path.
- ``grad_mode="autodiff"``: ``jax.value_and_grad`` through ``apply``; it never touches a hand-written
  backward, so it is the independent reference the manual mode is checked against.
- ``grad_mode="custom_vjp"``: autodiff, with the model's own backward serving as its VJP rule
  (``with_own_vjp``). Same numbers as manual, and JAX transformations (jit, vmap, grad of grad
  of the loss, ...) compose with it.
- ``grad_mode="auto"`` (the default everywhere): custom_vjp on the CPU and GPU backends, autodiff
  on any other (TPU: not measured). Resolved when ``value_and_grad`` is called, from
  ``jax.default_backend()``.

On the CPU backend, "manual", "custom_vjp" and "auto" trace the layers' backward with the
XLA:CPU-tuned kernels of fnn/layers/_fast_cpu.py (the same gradient up to rounding, tested
equal to the textbook forms): inside ``lax.scan`` the textbook conv weight gradient (and
autodiff's, the same conv) runs on a slow generic path on XLA:CPU, the tuned one does not.
``fnn.gradcheck.check_model`` traces the textbook forms (``_fast_cpu.textbook()``), and a
direct ``layer.backward`` call always runs them.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import jax
import jax.numpy as jnp

from fnn._deprecation import warn_deprecated
from fnn.core import Layer, Loss, check_choice, layer_bwd, layer_fwd
from fnn.layers import _fast_cpu

MODES = ("manual", "autodiff", "custom_vjp")
GRAD_MODES = ("auto",) + MODES
"""What ``value_and_grad`` accepts: "auto" resolves to one of MODES (plus the CPU kernels on CPU)."""


AUTO_MODES = {"cpu": "custom_vjp", "gpu": "custom_vjp"}
"""What "auto" resolves to per ``jax.default_backend()``; any backend not named: "autodiff"."""


def resolve_grad_mode(grad_mode: str, *, name: str = "resolve_grad_mode") -> str:
    """"auto" -> "custom_vjp" on CPU and GPU, "autodiff" elsewhere; other modes pass through.

    Why, measured. On XLA:CPU, inside ``lax.scan``, autodiff's convolution weight gradient
    runs on a slow path (about 80x slower for one conv), while the layers' own backward, used
    as the VJP rule, stays fast. On an H200 (2026-12-04, benchmarks/RESULTS.md) a fused
    simple_cnn epoch took 0.124 s with custom_vjp against 0.136 s with autodiff (0.121 against
    0.134 s in a second measurement): autodiff's max-pool gradient is XLA's select-and-scatter,
    13% of the step's GPU time in the profile. The mlp tied (0.030 s). TPU was never measured,
    so it keeps autodiff. Every function with a ``grad_mode`` (``value_and_grad``, ``fit``, the
    per-step loop, ``vmap_search``, the diagnostics) resolves "auto" here, so they agree.

    Args:
      grad_mode: "auto", "manual", "autodiff" or "custom_vjp".
      name: the public function named in the error message.
    Raises:
      ValueError: an unknown grad_mode.
    """
    check_choice(name, "grad_mode", grad_mode, GRAD_MODES)
    if grad_mode != "auto":
        return grad_mode
    return AUTO_MODES.get(jax.default_backend(), "autodiff")


def with_own_vjp(layer: Layer, *, cpu_kernels: bool = False) -> Layer:
    """The same layer, whose ``apply`` is a ``jax.custom_vjp`` using the layer's own backward.

    ``jax.grad`` through the returned layer's ``apply`` runs ``layer_fwd`` once and then
    ``layer_bwd``: the hand-derived gradient, inside any JAX program. ``cpu_kernels=True``
    traces that backward with the XLA:CPU-tuned kernels of fnn/layers/_fast_cpu.py (the same
    gradient up to rounding; what ``value_and_grad`` uses on CPU). The choice is fixed here, per
    returned layer, so no compiled program mixes the two.
    """
    kernels = _fast_cpu.enabled if cpu_kernels else contextlib.nullcontext
    runners: dict[bool, Callable] = {}

    def _runner(train: bool):
        if train in runners:
            return runners[train]

        @jax.custom_vjp
        def run(params, state, x, key):
            return layer.apply(params, state, x, key=key, train=train)

        def run_fwd(params, state, x, key):
            y, new_state, saved = layer_fwd(layer, params, state, x, key=key, train=train)
            return (y, new_state), (params, state, saved, key)

        def run_bwd(res, cotangent):
            params, state, saved, key = res
            dy, _ = cotangent  # state is not differentiated
            with kernels():
                dparams, dx = layer_bwd(layer, params, state, saved, dy, key=key, train=train)
            return dparams, None, dx, None

        run.defvjp(run_fwd, run_bwd)
        runners[train] = run
        return run

    def apply(params, state, x, *, key=None, train=False):
        return _runner(bool(train))(params, state, x, key)

    return layer._replace(name=f"with_own_vjp({layer.name})", apply=apply)


def value_and_grad(model: Layer, loss: Loss, mode: str | None = None, *, grad_mode: str = "auto",
                   penalty: Loss | None = None) -> Callable:
    """Build ``f(params, state, x, y, *, key=None, train=True) -> ((loss_value, new_state), grads)``.

    Args:
      model: a Layer (usually ``serial``) mapping x (N, ...) to predictions.
      loss: a Loss of (predictions, y).
      mode: deprecated (removed in 0.3), positional or ``mode=``: use ``grad_mode=``.
      grad_mode: "auto" (default: "custom_vjp" on CPU and GPU, "autodiff" elsewhere, see
        ``resolve_grad_mode``), "manual", "autodiff" or "custom_vjp" (see the module docstring).
        Resolved once, when ``value_and_grad`` is called.
      penalty: an optional regularizer (``losses.l1``/``l2``) added to the objective:
        its ``value(params, None)`` and ``backward(params, None)``.
    Returns:
      f, jit-compatible; grads has the structure of params in every mode.
    """
    if mode is not None:
        warn_deprecated("value_and_grad(model, loss, mode) and value_and_grad(..., mode=...)",
                        "value_and_grad(model, loss, grad_mode=...)")
        if grad_mode != "auto":
            raise ValueError(f"value_and_grad: pass grad_mode={grad_mode!r} or the deprecated mode={mode!r}, "
                             f"not both")
        grad_mode = mode
    mode = resolve_grad_mode(grad_mode, name="value_and_grad")
    cpu_kernels = mode != "autodiff" and jax.default_backend() == "cpu"

    if mode == "manual":
        kernels = _fast_cpu.enabled if cpu_kernels else contextlib.nullcontext

        def f(params, state, x, y, *, key=None, train=True):
            pred, new_state, saved = layer_fwd(model, params, state, x, key=key, train=train)
            value = loss.value(pred, y)
            with kernels():
                grads, _ = layer_bwd(model, params, state, saved, loss.backward(pred, y), key=key, train=train)
            if penalty is not None:
                value = value + penalty.value(params, None).astype(value.dtype)
                grads = jax.tree.map(jnp.add, grads, penalty.backward(params, None))
            return (value, new_state), grads
        return f

    net = model if mode == "autodiff" else with_own_vjp(model, cpu_kernels=cpu_kernels)

    def f(params, state, x, y, *, key=None, train=True):  # type: ignore[no-redef]  # one f per mode
        def objective(p):
            pred, new_state = net.apply(p, state, x, key=key, train=train)
            value = loss.value(pred, y)
            if penalty is not None:
                value = value + penalty.value(p, None).astype(value.dtype)
            return value, new_state
        return jax.value_and_grad(objective, has_aux=True)(params)

    return f
