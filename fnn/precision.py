"""Mixed precision: float32 master parameters, a low-precision forward and backward pass.

A ``Policy`` names three dtypes (Micikevicius et al. 2018, "Mixed Precision Training"):

- ``param_dtype`` (float32): the parameters the optimizer updates, and its state;
- ``compute_dtype`` (bfloat16): what the layers compute in. Parameters and inputs are cast to
  it before the forward pass, so activations, matmuls and convolutions run in it;
- ``output_dtype`` (float32): the model's output is cast to it, so the loss (log-softmax,
  the mean over examples) is computed in float32.

``fit(..., compute_dtype=jnp.bfloat16)`` (or ``policy=Policy(...)``) trains through
``apply_policy(model, policy)``, a ``Layer`` that does these casts around the model. The casts sit
outside the model, so every gradient mode works unchanged: autodiff differentiates through
them, and the manual and custom_vjp modes run the model's own backward on the cast copies,
then cast the gradient (with respect to the compute-dtype parameters) back to each
parameter's dtype before the optimizer sees it. Validation in ``fit`` uses the same policy;
``evaluate`` the plain model for float32 numbers.

The model's ``state`` is not cast: BatchNorm computes its batch statistics in the compute
dtype and stores its running statistics in their own dtype (float32), which never changes.

bfloat16 has float32's exponent range, so no loss scaling is needed. float16 works as a
compute dtype, but without loss scaling small gradients may underflow to zero; this module
does not scale the loss.

On CPUs without native bfloat16 arithmetic, bfloat16 is usually slower than float32 (XLA
emulates it); the gain is on GPUs and TPUs (tensor cores, half the memory traffic).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from fnn.core import Layer, layer_bwd, layer_fwd

__all__ = ["Policy", "apply_policy", "cast_floating", "get_policy"]


def _float_dtype(where: str, what: str, dtype: Any) -> np.dtype:
    try:
        d = jnp.dtype(dtype)
    except TypeError:
        raise ValueError(f"{where}: {what} must be a floating dtype (e.g. jnp.bfloat16), "
                         f"got {dtype!r}") from None
    if not jnp.issubdtype(d, jnp.floating):
        raise ValueError(f"{where}: {what} must be a floating dtype (e.g. jnp.bfloat16), got {d}")
    return d


@dataclasses.dataclass(frozen=True)
class Policy:
    """The dtypes of mixed-precision training (hashable, so compiled programs can be cached).

    Attributes:
      param_dtype: master parameters and optimizer state (``init`` casts to it).
      compute_dtype: parameters and inputs inside the forward/backward pass.
      output_dtype: the model's output, hence the loss.
    """

    param_dtype: Any = jnp.float32
    compute_dtype: Any = jnp.bfloat16
    output_dtype: Any = jnp.float32

    def __post_init__(self):
        for field in ("param_dtype", "compute_dtype", "output_dtype"):
            object.__setattr__(self, field, _float_dtype("Policy", field, getattr(self, field)))

    def __str__(self) -> str:
        return f"Policy(param={self.param_dtype}, compute={self.compute_dtype}, output={self.output_dtype})"


def get_policy(policy: Policy | Any = None, compute_dtype: Any = None, *,
               where: str = "fit") -> Policy | None:
    """``fit``'s two spellings as one Policy, or None for plain training.

    Args:
      policy: a Policy, or a dtype (``jnp.bfloat16``, "bfloat16") taken as its compute dtype.
      compute_dtype: shorthand for ``Policy(compute_dtype=compute_dtype)``.

    Raises:
      ValueError: both given, or a dtype that is not floating.
    """
    if policy is not None and compute_dtype is not None:
        raise ValueError(f"{where}: give policy= or compute_dtype=, not both")
    if policy is None and compute_dtype is None:
        return None
    if isinstance(policy, Policy):
        return policy
    dtype = compute_dtype if policy is None else policy
    return Policy(compute_dtype=_float_dtype(where, "compute_dtype", dtype))


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Cast the floating leaves of `tree` to `dtype`; integer, bool and PRNG-key leaves stay."""
    def cast(a):
        a = jnp.asarray(a) if not hasattr(a, "dtype") else a
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
    return jax.tree.map(cast, tree)


def _cast_like(tree: Any, like: Any) -> Any:
    """Cast every leaf of `tree` to the dtype of the matching leaf of `like`."""
    return jax.tree.map(lambda a, b: a.astype(b.dtype), tree, like)


@functools.lru_cache(maxsize=64)
def apply_policy(model: Layer, policy: Policy | Any) -> Layer:
    """`model` run under `policy` (a Policy, or a compute dtype such as ``jnp.bfloat16`` or
    "bfloat16"): a Layer with the same params, state and contract.

    - ``init``: the model's init, floating params cast to ``param_dtype``;
    - ``apply``/``fwd``: params and x cast to ``compute_dtype``, the model applied, y cast to
      ``output_dtype``; state passed as is;
    - ``backward``/``bwd``: dy cast to ``compute_dtype``, the model's backward on the cast
      copies, dparams cast to each parameter's dtype and dx to x's dtype.

    ``children`` and ``kind`` are the model's (its structure is unchanged).

    Cached: the same (model, policy) gives the same Layer, so ``fit`` reuses compiled programs.
    """
    if not isinstance(model, Layer):
        raise ValueError(f"apply_policy: expected a Layer, got {type(model).__name__}")
    if policy is None:
        raise ValueError("apply_policy: expected a Policy or a floating dtype, got None")
    if not isinstance(policy, Policy):
        policy = cast(Policy, get_policy(policy, where="apply_policy"))  # not None: policy was given
    compute, output = policy.compute_dtype, policy.output_dtype

    def init(key, input_shape):
        shape, params, state = model.init(key, input_shape)
        return shape, cast_floating(params, policy.param_dtype), state

    def fwd(params, state, x, *, key=None, train=False):
        y, new_state, saved = layer_fwd(model, cast_floating(params, compute), state,
                                        cast_floating(x, compute), key=key, train=train)
        return y.astype(output), new_state, (saved, x)

    def bwd(params, state, saved, dy, *, key=None, train=False):
        inner, x = saved
        dparams, dx = layer_bwd(model, cast_floating(params, compute), state, inner, dy.astype(compute),
                                key=key, train=train)
        return _cast_like(dparams, params), dx.astype(x.dtype)

    def apply(params, state, x, *, key=None, train=False):
        y, new_state = model.apply(cast_floating(params, compute), state, cast_floating(x, compute),
                                   key=key, train=train)
        return y.astype(output), new_state

    def backward(params, state, x, dy, *, key=None, train=False):
        _, _, saved = fwd(params, state, x, key=key, train=train)
        return bwd(params, state, saved, dy, key=key, train=train)

    return Layer(model.name, init, apply, backward, fwd, bwd, model.children, model.kind)
