"""Check a layer's or a model's hand-derived backward against jax.vjp and finite differences.

Public: point it at your own ``Layer`` or ``Loss`` to verify its ``backward``.

Three references, independent of each other:
1. ``jax.vjp`` of ``apply`` (autodiff of the forward pass, never the hand-written backward);
2. central finite differences in float64 of ⟨dy, apply(θ)⟩ along random directions
   (cheap: two forward passes per direction, and exact for any linear function);
3. the shape contract: init's output_shape equals apply's output shape and ``jax.eval_shape``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn.core import Layer, Loss
from fnn.layers import _fast_cpu
from fnn.typing import ArrayLike, DTypeLike, Key, PyTree, ShapeLike


class GradCheckError(AssertionError):
    """A backward pass disagrees with its references beyond the tolerance."""


class GradReport(NamedTuple):
    """Worst relative errors found (0.0 when a check was not run)."""

    vjp_rel_err: float
    fd_rel_err: float
    output_shape: tuple


def rel_err(a: Any, b: Any, *, floor: float = 1e-30) -> float:
    """max |a − b| / max(max |b|, floor) over all leaves of two pytrees (b is the reference)."""
    la = [np.asarray(x, np.float64) for x in jax.tree.leaves(a)]
    lb = [np.asarray(y, np.float64) for y in jax.tree.leaves(b)]
    num = max((float(np.max(np.abs(x - y))) for x, y in zip(la, lb) if y.size), default=0.0)
    den = max((float(np.max(np.abs(y))) for y in lb if y.size), default=0.0)
    return num / max(den, floor)


#: check_model's floor under the size of the reference gradient, per dtype: a network whose units
#: are all dead (every ReLU off) has a gradient of round-off only, e.g. the output bias's
#: Σ(softmax − one-hot) = 3e-17 one way and exactly 0 the other, where a relative error means
#: nothing. Below the floor the comparison is absolute: |manual − autodiff| <= rtol · floor.
GRAD_FLOOR = {"float64": 1e-6, "float32": 1e-3}


def _check_x64(name: str, dtype: DTypeLike) -> None:
    """float64 without 64-bit JAX silently becomes float32, and finite differences then fail
    for every layer: refuse it with the fix in the message."""
    if jnp.dtype(dtype) == jnp.float64 and jax.dtypes.canonicalize_dtype(jnp.float64) != jnp.float64:
        raise ValueError(f"{name}: dtype=float64 needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
                         f"at startup, or pass dtype=jnp.float32 (finite differences are then off by default)")


def _init(layer, key, input_shape, dtype):
    """layer.init under one jit (eager init compiles every random op separately), params cast to dtype."""
    out = {}

    @jax.jit
    def run(key):
        out["shape"], params, state = layer.init(key, tuple(input_shape))
        return _cast(params, dtype), state

    params, state = run(key)
    return out["shape"], params, state


def _cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _random_like(key, tree):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return treedef.unflatten([jax.random.normal(k, jnp.shape(a), a.dtype) for k, a in zip(keys, leaves)])


def _vdot(a, b):
    return sum((jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))), jnp.asarray(0.0))


def _check_structure(what, manual, ref):
    if jax.tree.structure(manual) != jax.tree.structure(ref):
        raise GradCheckError(f"{what}: backward returned tree {jax.tree.structure(manual)}, "
                             f"autodiff gives {jax.tree.structure(ref)}")
    for m, r in zip(jax.tree.leaves(manual), jax.tree.leaves(ref)):
        if jnp.shape(m) != jnp.shape(r) or m.dtype != r.dtype:
            raise GradCheckError(f"{what}: backward leaf {jnp.shape(m)} {m.dtype} != autodiff "
                                 f"{jnp.shape(r)} {r.dtype}")


def _fd_values(f, primals, cotangents, key, directions, eps):
    """Central differences of f along random directions v, and the analytic ⟨cotangents, v⟩."""
    def one(k):
        v = _random_like(k, primals)
        plus = jax.tree.map(lambda p, d: p + eps * d, primals, v)
        minus = jax.tree.map(lambda p, d: p - eps * d, primals, v)
        return (f(plus) - f(minus)) / (2 * eps), _vdot(cotangents, v)
    pairs = [one(k) for k in jax.random.split(key, directions)]
    return jnp.stack([a for a, _ in pairs]), jnp.stack([b for _, b in pairs])


def _fd_rel_err(fd, an):
    fd, an = np.asarray(fd), np.asarray(an)
    return float(np.max(np.abs(fd - an) / np.maximum(np.maximum(np.abs(an), np.abs(fd)), 1e-8)))


def check_layer(layer: Layer, input_shape: ShapeLike, *, key: Key, batch_size: int = 3,
                dtype: DTypeLike = jnp.float64, train: bool = False, x: ArrayLike | None = None,
                params: PyTree | None = None, state: PyTree | None = None, rtol: float | None = None,
                fd: bool | None = None, fd_eps: float = 1e-6, fd_rtol: float = 1e-6,
                fd_directions: int = 3) -> GradReport:
    """Compare ``layer.backward`` with ``jax.vjp`` of ``layer.apply`` (and finite differences).

    Args:
      layer: the layer under test.
      input_shape: one example's shape (no batch axis).
      key: PRNG key for init, inputs, cotangents and the layer's own randomness.
      batch_size: N of the generated input.
      dtype: float dtype of params, x and dy (float64 for tight checks).
      train: passed to apply/backward.
      x, params, state: use these instead of generated ones (e.g. to stay away from kinks).
      rtol: tolerance of backward vs vjp (default 1e-9 for float64, 1e-4 otherwise).
      fd: run finite differences (default: only in float64).
    Returns:
      GradReport with the worst relative errors.
    Raises:
      GradCheckError with a readable report when a tolerance is exceeded or shapes disagree.
    """
    _check_x64("check_layer", dtype)
    k_init, k_x, k_dy, k_apply, k_fd = jax.random.split(key, 5)
    out_shape, p0, s0 = _init(layer, k_init, input_shape, dtype)
    params = p0 if params is None else _cast(params, dtype)
    state = s0 if state is None else state
    if x is None:
        x = jax.jit(lambda k: jax.random.normal(k, (batch_size, *input_shape), dtype))(k_x)
    akey = k_apply if train else None
    run_fd = fd if fd is not None else dtype == jnp.float64

    def f(p, x):
        return layer.apply(p, state, x, key=akey, train=train)[0]

    @jax.jit  # one compilation for the whole check: eager op-by-op dispatch is ~10x slower here
    def compute(params, x):
        y, vjp = jax.vjp(f, params, x)
        dy = _random_like(k_dy, y)
        manual = layer.backward(params, state, x, dy, key=akey, train=train)
        fd_pair = (_fd_values(lambda px: _vdot(dy, f(*px)), (params, x), manual, k_fd, fd_directions, fd_eps)
                   if run_fd else None)
        return y, manual, vjp(dy), fd_pair

    shape_of = jax.eval_shape(f, params, x)
    y, (dparams, dx), (ref_p, ref_x), fd_pair = compute(params, x)
    if not isinstance(y, tuple) and tuple(out_shape) != tuple(y.shape[1:]):
        raise GradCheckError(f"{layer.name}: init says output shape {tuple(out_shape)}, apply gives {y.shape[1:]}")
    if jax.tree.map(jnp.shape, shape_of) != jax.tree.map(jnp.shape, y):
        raise GradCheckError(f"{layer.name}: jax.eval_shape disagrees with apply")
    _check_structure(f"{layer.name} dparams", dparams, ref_p)
    _check_structure(f"{layer.name} dx", dx, ref_x)
    err = max(rel_err(dparams, ref_p), rel_err(dx, ref_x))
    tol = rtol if rtol is not None else (1e-9 if dtype == jnp.float64 else 1e-4)
    if not err <= tol:
        raise GradCheckError(f"{layer.name}: backward differs from jax.vjp: relative error {err:.3e} > {tol:.1e}\n"
                             f"  dparams err {rel_err(dparams, ref_p):.3e}, dx err {rel_err(dx, ref_x):.3e}")
    fd_err = 0.0
    if run_fd:
        fd_err = _fd_rel_err(*fd_pair)
        if not fd_err <= fd_rtol:
            raise GradCheckError(f"{layer.name}: backward differs from finite differences: "
                                 f"relative error {fd_err:.3e} > {fd_rtol:.1e}")
    return GradReport(err, fd_err, tuple(out_shape))


def check_loss(loss: Loss, pred: PyTree, target: ArrayLike | None, *, key: Key, rtol: float | None = None,
               fd: bool | None = None, fd_eps: float = 1e-6, fd_rtol: float = 1e-6,
               fd_directions: int = 3) -> GradReport:
    """Compare ``loss.backward(pred, target)`` with ``jax.grad`` of ``loss.value`` (and finite differences).

    `pred` may be any pytree of float arrays (a tuple for the triplet loss).
    """
    is64 = all(a.dtype == jnp.float64 for a in jax.tree.leaves(pred))
    run_fd = fd if fd is not None else is64

    @jax.jit
    def compute(pred, target):
        manual = loss.backward(pred, target)
        ref = jax.grad(lambda p: loss.value(p, target))(pred)
        fd_pair = (_fd_values(lambda p: loss.value(p, target), pred, manual, key, fd_directions, fd_eps)
                   if run_fd else None)
        return manual, ref, fd_pair

    loss.value(pred, target)  # eager once, so value checks on concrete inputs raise here
    manual, ref, fd_pair = compute(pred, target)
    _check_structure(f"{loss.name} dpred", manual, ref)
    err = rel_err(manual, ref)
    tol = rtol if rtol is not None else (1e-9 if is64 else 1e-4)
    if not err <= tol:
        raise GradCheckError(f"{loss.name}: backward differs from jax.grad: relative error {err:.3e} > {tol:.1e}")
    fd_err = 0.0
    if run_fd:
        fd_err = _fd_rel_err(*fd_pair)
        if not fd_err <= fd_rtol:
            raise GradCheckError(f"{loss.name}: backward differs from finite differences: "
                                 f"relative error {fd_err:.3e} > {fd_rtol:.1e}")
    return GradReport(err, fd_err, ())


def check_model(model: Layer, loss: Loss, input_shape: ShapeLike, target: ArrayLike, *, key: Key,
                batch_size: int | None = None, dtype: DTypeLike = jnp.float64, train: bool = True,
                x: ArrayLike | None = None, params: PyTree | None = None, state: PyTree | None = None,
                rtol: float | None = None, fd: bool | None = None, fd_eps: float = 1e-6,
                fd_rtol: float = 1e-6, fd_directions: int = 3) -> GradReport:
    """Compare ``backprop.value_and_grad(model, loss, grad_mode="manual")`` with "autodiff" and finite differences.

    The manual gradient is traced with the layers' textbook backward (``_fast_cpu.textbook()``),
    not the XLA:CPU kernels that training on CPU uses (those are checked against it in
    tests/layers/test_fast_cpu.py).

    The gradients' error is relative to the largest entry of the autodiff gradient, or to
    ``GRAD_FLOOR`` (1e-6 in float64, 1e-3 in float32) when every entry is smaller: a dead network's
    gradient is round-off, where only an absolute comparison means something.

    Args:
      model: the network (usually a ``serial``).
      loss: its loss.
      input_shape: one example's shape.
      target: the targets, with a leading batch axis (its length sets the batch size).
      key: PRNG key for init, inputs and the model's randomness (dropout).
    """
    from fnn.backprop import value_and_grad

    _check_x64("check_model", dtype)
    k_init, k_x, k_apply, k_fd = jax.random.split(key, 4)
    _, p0, s0 = _init(model, k_init, input_shape, dtype)
    params = p0 if params is None else _cast(params, dtype)
    state = s0 if state is None else state
    n = batch_size or jax.tree.leaves(target)[0].shape[0]
    if x is None:
        x = jax.jit(lambda k: jax.random.normal(k, (n, *input_shape), dtype))(k_x)
    akey = k_apply if train else None
    run_fd = fd if fd is not None else dtype == jnp.float64

    def objective(p):
        return loss.value(model.apply(p, state, x, key=akey, train=train)[0], target)

    @jax.jit
    def compute(params):
        manual = value_and_grad(model, loss, grad_mode="manual")(params, state, x, target, key=akey, train=train)
        auto = value_and_grad(model, loss, grad_mode="autodiff")(params, state, x, target, key=akey, train=train)
        fd_pair = _fd_values(objective, params, manual[1], k_fd, fd_directions, fd_eps) if run_fd else None
        return manual, auto, fd_pair

    with _fast_cpu.textbook():  # the hand derivations themselves, not the XLA:CPU kernels
        ((lm, sm), gm), ((la, sa), ga), fd_pair = compute(params)
    _check_structure(f"{model.name} grads", gm, ga)
    floor = GRAD_FLOOR["float64" if jnp.dtype(dtype) == jnp.float64 else "float32"]
    grad_err = rel_err(gm, ga, floor=floor)
    err = max(grad_err, rel_err(lm, la), rel_err(sm, sa))
    tol = rtol if rtol is not None else (1e-9 if dtype == jnp.float64 else 1e-4)
    if not err <= tol:
        raise GradCheckError(f"{model.name}: manual gradient differs from autodiff: relative error "
                             f"{err:.3e} > {tol:.1e} (grads {grad_err:.3e}, loss {rel_err(lm, la):.3e})")
    fd_err = 0.0
    if run_fd:
        fd_err = _fd_rel_err(*fd_pair)
        if not fd_err <= fd_rtol:
            raise GradCheckError(f"{model.name}: manual gradient differs from finite differences: "
                                 f"relative error {fd_err:.3e} > {fd_rtol:.1e}")
    return GradReport(err, fd_err, ())
