"""fnn._compile: fnn's programs leave convolutions to XLA on CPU (not YNNPACK), and only there."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import _compile, losses, optim
from fnn.layers import Conv2D, Dense, Flatten, Relu, serial
from fnn.train import fit

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU compiler options")


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _ynn_ops(jitted, *args) -> set[str]:
    """The HLO op names inside the compiled program's YNNPACK fusions."""
    text = jitted.lower(*args).compile().as_text()
    lines = [line for line in text.splitlines() if "__ynn_fusion" in line]
    return set(re.findall(r'op_name="[^"]*/(\w+)"', "\n".join(lines)))


@pytest.fixture
def fresh_options(monkeypatch):
    _compile.cpu_options.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    _compile.cpu_options.cache_clear()


def test_jit_keeps_convolutions_out_of_ynnpack_and_dots_in():
    if not _compile.cpu_options():
        pytest.skip("this jaxlib has no YNNPACK fusion option")
    x, w = jnp.ones((4, 8, 8, 16)), jnp.ones((3, 3, 16, 32))  # YNNPACK takes convs with enough channels
    both = lambda x, w: _conv(x, w).reshape(4, -1) @ jnp.ones((2048, 2))  # noqa: E731
    assert _ynn_ops(_compile.jit(both), x, w) == {"dot_general"}
    default = _ynn_ops(jax.jit(both), x, w)
    if "conv_general_dilated" not in default:
        pytest.skip("this jaxlib does not hand convolutions to YNNPACK by default")
    assert default == {"conv_general_dilated", "dot_general"}


def test_fit_compiles_its_epoch_with_the_options(fresh_options):
    """The fused epoch's program is built with the options: a fit with them and one with XLA's
    defaults give close but (conv algorithms differ) not always identical parameters, and the
    options really reach the compiler (an invalid value makes fit fail)."""
    x = jax.random.normal(jax.random.key(0), (64, 8, 8, 1))
    y = jax.random.randint(jax.random.key(1), (64,), 0, 3)
    model = serial(Conv2D(16, 3, padding="SAME"), Relu(), Conv2D(16, 3, padding="SAME"), Flatten(), Dense(3))

    def run():
        ts, _ = fit(model, losses.softmax_cross_entropy, optim.sgd(0.1), (x, y), epochs=1, batch_size=16,
                    key=jax.random.key(2), callbacks=())
        return ts.params

    if not _compile.cpu_options():
        pytest.skip("this jaxlib has no YNNPACK fusion option")
    ours = run()
    fresh_options.setenv("FNN_XLA_CPU_DEFAULTS", "1")
    _compile.cpu_options.cache_clear()
    assert _compile.cpu_options() == {}
    theirs = run()
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    fresh_options.delenv("FNN_XLA_CPU_DEFAULTS")
    fresh_options.setattr(_compile, "CPU_OPTIONS", {_compile.YNN_OPTION: "LIBRARY_FUSION_TYPE_DOT"})
    _compile.cpu_options.cache_clear()
    assert _compile.cpu_options() == {_compile.YNN_OPTION: "LIBRARY_FUSION_TYPE_DOT"}
    fresh_options.setattr(_compile, "cpu_options", lambda: {_compile.YNN_OPTION: "NOT_A_FUSION_TYPE"})
    with pytest.raises(Exception, match="NOT_A_FUSION_TYPE"):
        fit(model, losses.softmax_cross_entropy, optim.sgd(0.1), (x, y), epochs=1, batch_size=16,
            key=jax.random.key(3), callbacks=())


def test_user_choices_and_unknown_options_turn_it_off(fresh_options):
    fresh_options.setenv("XLA_FLAGS", f"--{_compile.YNN_OPTION}=-LIBRARY_FUSION_TYPE_REDUCE")
    assert _compile.cpu_options() == {}
    fresh_options.delenv("XLA_FLAGS")
    _compile.cpu_options.cache_clear()
    fresh_options.setattr(_compile, "CPU_OPTIONS", {"xla_cpu_no_such_option_in_any_jaxlib": "1"})
    assert _compile.cpu_options() == {}


def test_fnn_jit_is_the_public_name():
    import fnn

    assert fnn.jit is _compile.jit
    x, w = jnp.ones((2, 6, 6, 16)), jnp.ones((3, 3, 16, 16))
    np.testing.assert_allclose(fnn.jit(_conv)(x, w), jax.jit(_conv)(x, w), rtol=1e-6)
