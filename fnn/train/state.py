"""TrainState: everything that changes during training, as one pytree; and how it starts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn._deprecation import key_keyword_only
from fnn.core import Layer, Optimizer


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree.

    Attributes:
      params: the model's parameters.
      state: the model's non-trainable state (BatchNorm running statistics; ``()``/``{}`` else).
      opt_state: the optimizer's state.
      key: a typed PRNG key, split at every step (and once per epoch for the shuffle).
      step: int32 scalar, the number of updates done so far.
    """

    params: Any
    state: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array


def as_key(name: str, key: Any) -> jax.Array:
    """A typed PRNG key from a typed key, a legacy uint32[2] key or an int seed.

    Raises:
      ValueError: for anything else (the message names `name`).
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if not hasattr(key, "dtype"):
        raise ValueError(f"{name}: key must be a PRNG key (jax.random.key(seed)), got {type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)  # a legacy uint32[2] key


@key_keyword_only(3)
def init_train_state(model: Layer, optimizer: Optimizer, input_shape: Sequence[int], *,
                     key: jax.Array) -> TrainState:
    """Initialize params and state from shapes, the optimizer state from params.

    Args:
      model: the Layer to train.
      optimizer: an Optimizer (``init``/``update``).
      input_shape: the shape of one example (no batch axis), e.g. (28, 28, 1).
      key: a PRNG key; one half initializes the model, the other becomes ``TrainState.key``.
    """
    init_key, key = jax.random.split(as_key("init_train_state", key))
    _, params, state = model.init(init_key, tuple(int(d) for d in input_shape))
    return TrainState(params, state, optimizer.init(params), key, jnp.zeros((), jnp.int32))


def copy_tree(tree: Any) -> Any:
    """A device copy with fresh buffers (the originals will be donated to the next epoch)."""
    def copy(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(jnp.array(jax.random.key_data(x), copy=True),
                                            impl=jax.random.key_impl(x))
        return jnp.array(x, copy=True)
    return jax.tree.map(copy, tree)
