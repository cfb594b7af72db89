"""The three public contracts (Layer, Loss, Optimizer) and the checks that build error messages.

Every user-facing check raises ``ValueError`` naming the layer or function, what was
expected and what was received. Shapes are static under ``jax.jit``, so shape checks cost
nothing at run time; value checks (labels in range, NaN) only run where values are concrete
(eager calls, data loading, the inputs ``fit`` receives) and are skipped on tracers.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fnn.typing import Array, ArrayLike, Key, PyTree


class Layer(NamedTuple):
    """A layer as three pure functions (see DESIGN.md).

    init(key, input_shape) -> (output_shape, params, state)
    apply(params, state, x, *, key=None, train=False) -> (y, new_state)
    backward(params, state, x, dy, *, key=None, train=False) -> (dparams, dx)

    Composite layers (``serial``, ``Residual``, ``Shared``) also fill the two optional
    fields, a "tape" pair that lets the manual gradient run the forward pass only once:

    fwd(params, state, x, *, key=None, train=False) -> (y, new_state, saved)
    bwd(params, state, saved, dy, *, key=None, train=False) -> (dparams, dx)

    ``saved`` is whatever the layer needs for its backward (for a leaf layer: ``x``).

    Two more optional fields describe the structure, as data that tools read (never closures
    or names), and that every wrapper passes on (``_replace`` does):

    children: the sub-layers of a composite (``serial``: its layers in order; ``Residual``:
      the block, then the shortcut when one was given; ``Shared``: the shared model); () for a leaf.
    kind: what the layer computes, e.g. "dense", "conv", "max_pool", "relu", "serial" (each
      constructor's docstring or ``Layer(..., kind=...)`` call names it); None when unknown.

    A layer built with four fields works everywhere: ``layer_fwd``/``layer_bwd`` fall
    back to ``apply`` and ``backward``, and tools treat it as a leaf of unknown kind.
    """

    name: str
    init: Callable[..., Any]
    apply: Callable[..., Any]
    backward: Callable[..., Any]
    fwd: Callable[..., Any] | None = None
    bwd: Callable[..., Any] | None = None
    children: tuple[Layer, ...] = ()
    kind: str | None = None


def layer_fwd(layer: Layer, params: PyTree, state: PyTree, x: Array, *, key: Key | None = None,
              train: bool = False) -> tuple[Array, PyTree, Any]:
    """Forward pass keeping what the backward pass needs: -> (y, new_state, saved)."""
    if layer.fwd is not None:
        return layer.fwd(params, state, x, key=key, train=train)
    y, new_state = layer.apply(params, state, x, key=key, train=train)
    return y, new_state, x


def layer_bwd(layer: Layer, params: PyTree, state: PyTree, saved: Any, dy: Array, *, key: Key | None = None,
              train: bool = False) -> tuple[PyTree, Array]:
    """Backward pass from what ``layer_fwd`` saved: -> (dparams, dx)."""
    if layer.bwd is not None:
        return layer.bwd(params, state, saved, dy, key=key, train=train)
    return layer.backward(params, state, saved, dy, key=key, train=train)


class Loss(NamedTuple):
    """A loss as two pure functions: value(pred, target) -> scalar, backward(pred, target) -> dpred."""

    name: str
    value: Callable[..., Any]
    backward: Callable[..., Any]


class Optimizer(NamedTuple):
    """init(params) -> opt_state; update(grads, opt_state, params, **extra) -> (updates, opt_state)."""

    init: Callable[..., Any]
    update: Callable[..., Any]


# ----------------------------------------------------------------------------------------
# Formatting


def fmt_shape(shape: Sequence[Any]) -> str:
    """(None, 28, 1) -> '(N, 28, 1)'; a leading None is the batch axis, other Nones are '?'."""
    parts = []
    for i, d in enumerate(shape):
        if d is None:
            parts.append("N" if i == 0 else "?")
        else:
            parts.append(str(d))
    return "(" + ", ".join(parts) + (",)" if len(parts) == 1 else ")")


def is_concrete(x: Any) -> bool:
    """True when `x` holds values (not a tracer under jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


# ----------------------------------------------------------------------------------------
# Shape checks


def check_shape(name: str, what: str, shape: Sequence[int], *, rank: int | None = None,
                min_rank: int | None = None) -> tuple[int, ...]:
    """Validate a per-example shape given to `init` and return it as a tuple of ints."""
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise ValueError(f"{name}: {what} must be a tuple of ints, got {shape!r}") from None
    if rank is not None and len(shape) != rank:
        raise ValueError(f"{name}: expected {what} of rank {rank} (no batch axis), "
                         f"got {fmt_shape(shape)} of rank {len(shape)}")
    if min_rank is not None and len(shape) < min_rank:
        raise ValueError(f"{name}: expected {what} of rank >= {min_rank} (no batch axis), "
                         f"got {fmt_shape(shape)}")
    if any(d <= 0 for d in shape):
        raise ValueError(f"{name}: {what} must have positive sizes, got {fmt_shape(shape)}")
    return shape


def check_input(name: str, x: Any, expected: Sequence[int | None]) -> None:
    """Check that `x` is a floating array of shape `expected` (None matches any size).

    Integer inputs are refused rather than silently wrapped or promoted: convert images
    with ``x.astype(jnp.float32) / 255`` (or a Standardizer) first.
    """
    shape = tuple(np.shape(x))
    expected = tuple(expected)
    ok = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape))
    if not ok:
        raise ValueError(f"{name}: expected x of shape {fmt_shape(expected)}, got {fmt_shape(shape)}")
    check_float(name, "x", x)
    if shape and shape[0] == 0:
        raise ValueError(f"{name}: got an empty batch, x of shape {fmt_shape(shape)}")


def check_float(name: str, what: str, x: Any) -> None:
    """Refuse integer/bool arrays where a floating array is required."""
    dtype = jnp.result_type(x) if not hasattr(x, "dtype") else x.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name}: expected {what} of a floating dtype, got {dtype} "
                         f"(convert integer images with x.astype(jnp.float32) / 255 first)")


def check_same_shape(name: str, pred: Any, target: Any, what: tuple[str, str] = ("pred", "target")) -> None:
    """Refuse silent broadcasting between prediction and target."""
    ps, ts = tuple(np.shape(pred)), tuple(np.shape(target))
    if ps != ts:
        raise ValueError(f"{name}: {what[0]} and {what[1]} must have the same shape, "
                         f"got {what[0]} {fmt_shape(ps)} and {what[1]} {fmt_shape(ts)}")


def check_finite(name: str, what: str, x: Any) -> None:
    """Refuse NaN/Inf where values are concrete; a no-op on tracers."""
    if is_concrete(x) and not bool(jnp.all(jnp.isfinite(jnp.asarray(x)))):
        raise ValueError(f"{name}: {what} contains NaN or Inf")


def check_nonempty(name: str, what: str, x: Any) -> None:
    """Refuse an array with no elements (an empty batch): a mean over nothing is not a number."""
    if np.size(x) == 0:
        raise ValueError(f"{name}: got an empty batch, {what} of shape {fmt_shape(np.shape(x))}")


def _fmt_any(shape: Sequence[int | None]) -> str:
    return fmt_shape(tuple("?" if d is None else d for d in shape))


def check_params(name: str, what: str, tree: Any, expected: Mapping[str, Sequence[int | None]]) -> None:
    """Check a leaf layer's params (or state): a dict with exactly `expected`'s keys and shapes.

    None in an expected shape matches any size. Catches params made by another layer or
    model (a different width or kernel), which would otherwise run with their own shapes.
    """
    got = {k: tuple(np.shape(v)) for k, v in tree.items()} if isinstance(tree, dict) else None
    ok = got is not None and set(got) == set(expected) and all(
        len(got[k]) == len(e) and all(d is None or d == s for d, s in zip(e, got[k], strict=True))
        for k, e in expected.items())
    if not ok:
        want = "{" + ", ".join(f"{k!r}: {_fmt_any(e)}" for k, e in expected.items()) + "}"
        have = type(tree).__name__ if got is None else \
            "{" + ", ".join(f"{k!r}: {fmt_shape(s)}" for k, s in got.items()) + "}"
        raise ValueError(f"{name}: expected {what} of shapes {want}, got {have} "
                         f"(were they made by this layer's init?)")


def check_tree_match(name: str, what: str, expected: Any, got: Any) -> None:
    """Check that two pytrees have the same structure and leaf shapes."""
    es, gs = jax.tree.structure(expected), jax.tree.structure(got)
    if es != gs:
        raise ValueError(f"{name}: {what} tree structure does not match: expected {es}, got {gs}")
    for path_e, (le, lg) in zip(jax.tree_util.tree_leaves_with_path(expected),
                                zip(jax.tree.leaves(expected), jax.tree.leaves(got))):
        if np.shape(le) != np.shape(lg):
            path = jax.tree_util.keystr(path_e[0])
            raise ValueError(f"{name}: {what} leaf {path} expected shape {fmt_shape(np.shape(le))}, "
                             f"got {fmt_shape(np.shape(lg))}")


# ----------------------------------------------------------------------------------------
# Argument checks (hyperparameters are Python values at construction)


def check_positive_int(name: str, what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: {what} must be a positive int, got {value!r}")
    return int(value)


def check_range(name: str, what: str, value: Any, low: float, high: float, *,
                low_inclusive: bool = True, high_inclusive: bool = False) -> float:
    """Check low <= value < high (inclusivity configurable); refuses NaN."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {what} must be a number, got {value!r}") from None
    lo_ok = v >= low if low_inclusive else v > low
    hi_ok = v <= high if high_inclusive else v < high
    if not (lo_ok and hi_ok):  # also catches NaN
        lb = "[" if low_inclusive else "("
        hb = "]" if high_inclusive else ")"
        raise ValueError(f"{name}: {what} must be in {lb}{low}, {high}{hb}, got {value!r}")
    return v


def check_choice(name: str, what: str, value: Any, choices: Sequence[Any]) -> Any:
    if value not in choices:
        raise ValueError(f"{name}: {what} must be one of {list(choices)}, got {value!r}")
    return value


def check_key(name: str, key: Any, train: bool) -> None:
    """Stochastic layers need a PRNG key in train mode."""
    if train and key is None:
        raise ValueError(f"{name}: a PRNG key is required when train=True "
                         f"(pass key=jax.random.key(seed) to apply)")
    if train and not hasattr(key, "dtype"):
        raise ValueError(f"{name}: key must be a PRNG key (jax.random.key(seed)), "
                         f"got {type(key).__name__} {key!r}")


def promote(*arrays: ArrayLike) -> tuple[Array, ...]:
    """Cast arrays to their common floating dtype (standard promotion, whatever the global mode).

    Layers compute in the common dtype of ``x`` and ``params`` (DESIGN.md: Dtypes); doing the
    promotion explicitly keeps layers usable when strict dtype promotion is on.
    """
    with jax.numpy_dtype_promotion("standard"):
        dtype = jnp.result_type(*arrays)
    return tuple(jnp.asarray(a, dtype) for a in arrays)
