"""Pytree helpers shared by the training tests: host copies of every leaf (PRNG keys as their data)."""

import jax
import jax.numpy as jnp
import numpy as np


def leaves(tree) -> list[np.ndarray]:
    """Every leaf of `tree` as a NumPy array; typed PRNG keys as their key data."""
    def host(a):
        return np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a)
    return [host(a) for a in jax.tree.leaves(tree)]


def assert_trees_equal(a, b) -> None:
    """Bit for bit: the same structure and the same values in every leaf."""
    for u, v in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)
