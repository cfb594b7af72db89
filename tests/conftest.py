"""Test configuration: float64 on, strict dtype promotion, rank promotion refused, Hypothesis profiles."""

import os

# Tests check numbers, not speed: XLA's cheapest backend optimization halves compile time, and
# compilation dominates these small tests. Set before JAX creates its CPU backend.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

# JIT compilation trips Hypothesis's deadline, so there is none. CI keeps example counts modest.
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               print_blob=True)
settings.register_profile("ci", max_examples=12, derandomize=True, **_common)
settings.register_profile("dev", max_examples=30, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# Tolerances, named once. Relative errors are max|a-b| / max(max|b|, tiny).
RTOL64 = 1e-10   # manual backward vs jax.vjp in float64 (same math, different order)
RTOL32 = 2e-5    # the same in float32
FD_RTOL = 1e-6   # central finite differences in float64 (h ~ 1e-6)


@pytest.fixture
def key():
    return jax.random.key(0)
