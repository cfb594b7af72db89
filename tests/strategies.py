"""Shared Hypothesis strategies: small dimensions, seeds, float dtypes."""

import jax.numpy as jnp
from hypothesis import strategies as st

dims = st.integers(1, 8)
batch = st.integers(1, 5)
seeds = st.integers(0, 2**31 - 1)
float_dtypes = st.sampled_from([jnp.float32, jnp.float64])


def shapes(min_rank=1, max_rank=3):
    return st.lists(dims, min_size=min_rank, max_size=max_rank).map(tuple)


def tol(dtype):
    """Relative tolerance for backward vs vjp in the given dtype."""
    from conftest import RTOL32, RTOL64

    return RTOL64 if dtype == jnp.float64 else RTOL32
