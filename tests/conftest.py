"""Test configuration: float64 on, strict dtype promotion, rank promotion refused, Hypothesis profiles."""

import os
import random

# Tests check numbers, not speed: XLA's cheapest backend optimization halves compile time, and
# compilation dominates these small tests. Set before JAX creates its CPU backend.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

# JIT compilation trips Hypothesis's deadline, so there is none. CI keeps example counts modest
# but is not derandomized: every run draws new examples from a seed printed in the header and
# after a failure (see pytest_configure below), so `--hypothesis-seed=N` replays that run.
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               print_blob=True)
settings.register_profile("ci", max_examples=8, **_common)  # the default run stays under 8 min on 2 cores
settings.register_profile("dev", max_examples=30, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# Tolerances, named once. Relative errors are max|a-b| / max(max|b|, tiny).
RTOL64 = 1e-10   # manual backward vs jax.vjp in float64 (same math, different order)
RTOL32 = 2e-5    # the same in float32
FD_RTOL = 1e-6   # central finite differences in float64 (h ~ 1e-6)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Draw the run's Hypothesis seed unless one is given, before Hypothesis's plugin reads it.

    The main process draws it; pytest-xdist workers receive it through ``workerinput`` (see
    pytest_configure_node), so every worker explores from the same printed seed.
    """
    if config.getoption("hypothesis_seed", None) is None:
        given = getattr(config, "workerinput", {}).get("fnn_hypothesis_seed")
        config.option.hypothesis_seed = given or str(random.SystemRandom().randrange(2**32))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist: hand the main process's seed to each worker."""
    node.workerinput["fnn_hypothesis_seed"] = node.config.getoption("hypothesis_seed")


def _seed_line(config) -> str:
    seed = config.getoption("hypothesis_seed", None)
    return f"hypothesis seed {seed}: reproduce with `python -m pytest --hypothesis-seed={seed} ...`"


def pytest_report_header(config):
    return _seed_line(config)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if exitstatus != 0:
        terminalreporter.write_line(_seed_line(config))


@pytest.fixture
def key():
    return jax.random.key(0)
