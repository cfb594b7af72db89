"""fnn.summary: counts against the params pytree, output shapes against apply, the tree, the table."""

import math

import jax
import jax.numpy as jnp
import pytest

import fnn
from fnn import models
from fnn.core import Layer
from fnn.diagnostics import summary
from fnn.layers import BatchNorm, Dense, Relu, Residual, Shared, serial

IMG = (28, 28, 1)
MODELS = {
    "mlp": (lambda: models.mlp((12, 8, 8, 3)), (12,)),
    "simple_cnn": (models.simple_cnn, IMG),
    "lenet5": (lambda: models.lenet5(batch_norm=True, dropout=0.1), IMG),
    "alexnet": (models.alexnet, IMG),
    "vgg": (lambda: models.vgg(batch_norm=True), IMG),
    "resnet": (models.resnet, IMG),
    "bn_cnn": (models.bn_cnn, IMG),
    "bn_vgg_wide": (models.bn_vgg_wide, IMG),
}


def size(tree) -> int:
    return int(sum(math.prod(a.shape) for a in jax.tree.leaves(tree)))


def subtree(tree, path: str):
    """The params (or state) entry a row's path names, read independently of fnn.summary."""
    for part in filter(None, path.split(".")):
        if part == "shared":
            continue  # a Shared layer's model has the Shared layer's own params
        tree = tree[int(part)] if part.isdigit() else tree[part]
    return tree


def check_counts(s, params, state):
    """Totals equal the pytree's sizes; every row equals its own subtree; no row is lost."""
    assert s.total_params == size(params)
    assert s.total_state == size(state)
    assert s.param_bytes == sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(params))
    for r in s.rows:
        if not r.path.endswith("+"):
            assert r.num_params == size(subtree(params, r.path)), r
            assert r.num_state == size(subtree(state, r.path)), r
    assert sum(r.num_params for r in s.rows if r.is_leaf) == size(params)
    assert sum(r.num_state for r in s.rows if r.is_leaf) == size(state)


@pytest.mark.parametrize("name", list(MODELS))
def test_counts_equal_the_params_pytree_for_every_model(name):
    make, shape = MODELS[name]
    model = make()
    s = summary(model, shape)
    # The pytree's shapes, without drawing 600k random numbers.
    params, state = jax.eval_shape(lambda: model.init(jax.random.key(0), shape)[1:])
    check_counts(s, params, state)
    assert s.rows[0].name == model.name and s.rows[0].depth == 0
    assert [r.name for r in s.rows if r.depth == 1] == [c.name for c in model.children]
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    assert s.output_shape == jax.eval_shape(model.apply, params, state, x)[0].shape[1:]


def test_documented_parameter_counts():
    assert summary(models.simple_cnn(), IMG).total_params == 421_642
    assert summary(models.lenet5(), IMG).total_params == 61_706
    assert summary(models.resnet(), IMG).total_params == 174_970


def test_output_shapes_equal_each_layers_apply():
    """Each top-level layer's row against the array its apply really returns, run in sequence."""
    model = models.simple_cnn()
    s = summary(model, IMG)
    _, params, state = model.init(jax.random.key(0), IMG)
    x = jax.random.normal(jax.random.key(1), (2, *IMG), jnp.float32)
    rows = [r for r in s.rows if r.depth == 1]
    assert len(rows) == len(model.children) == 10
    for row, layer, p, st in zip(rows, model.children, params, state, strict=True):
        x, _ = layer.apply(p, st, x)
        assert row.output_shape == x.shape[1:], row
    assert s.output_shape == model.apply(params, state, jnp.zeros((2, *IMG)))[0].shape[1:] == (10,)


def nested():
    """Shared(serial(Dense, Relu, Residual with a given shortcut, Residual with an automatic
    projection, BatchNorm)): every combinator, nested."""
    block = serial(Dense(6), Relu(), Dense(6))
    return Shared(serial(Dense(5), Relu(), Residual(serial(Dense(5)), serial(Dense(5), BatchNorm())),
                         Residual(block), BatchNorm()))


def test_nested_tree_with_shared_weights_counted_once():
    model = nested()
    s = summary(model, (3,))
    _, params, state = model.init(jax.random.key(0), (3,))
    check_counts(s, params, state)
    # Shared: one set of weights however many inputs use it; its model's row has the same count.
    assert s.rows[0].num_params == s.rows[1].num_params == size(params)
    assert [(r.depth, r.path) for r in s.rows] == [
        (0, ""), (1, "shared"), (2, "shared.0"), (2, "shared.1"), (2, "shared.2"), (3, "shared.2.block"),
        (4, "shared.2.block.0"), (3, "shared.2.shortcut"), (4, "shared.2.shortcut.0"),
        (4, "shared.2.shortcut.1"), (2, "shared.3"), (3, "shared.3.block"), (4, "shared.3.block.0"),
        (4, "shared.3.block.1"), (4, "shared.3.block.2"), (3, "shared.3.+"), (2, "shared.4")]
    projection = s.rows[15]
    assert projection.name == "(projection shortcut)" and projection.num_params == 5 * 6 + 6
    # Output shapes: per input for the Shared model, and each part against apply.
    x = jnp.ones((2, 3))
    (y1, y2), _ = model.apply(params, state, (x, 2 * x))
    assert s.output_shape == y1.shape[1:] == y2.shape[1:] == (6,)
    assert [r.output_shape for r in s.rows if r.depth == 2] == [(5,), (5,), (5,), (6,), (6,)]


def test_composite_rows_are_the_sum_of_their_children():
    s = summary(nested(), (3,))
    for i, r in enumerate(s.rows):
        kids = [c for c in s.rows[i + 1:] if c.path.startswith(r.path + ".") and c.path.count(".") ==
                r.path.count(".") + 1] if r.path else [s.rows[1]]
        if not r.is_leaf:
            assert kids and sum(c.num_params for c in kids) == r.num_params, r


def test_table_shows_the_tree_and_totals():
    text = str(summary(nested(), (3,)))
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "output", "shape", "params", "state"]
    assert any(line.startswith("      block: serial") for line in lines)
    assert any(line.startswith("      shortcut: serial") for line in lines)
    assert any("(projection shortcut)" in line for line in lines)
    total = size(nested().init(jax.random.key(0), (3,))[1])
    assert f"parameters: {total:,}" in lines[-1]
    assert "input (N, 3), output (N, 6)" in text


def test_shapes_only_no_computation():
    """Every apply the summary makes sees tracers (jax.eval_shape), never concrete arrays."""
    seen = []
    dense = Dense(4)

    def apply(params, state, x, *, key=None, train=False):
        seen.append(isinstance(x, jax.core.Tracer))
        return dense.apply(params, state, x, key=key, train=train)

    spy = dense._replace(apply=apply)
    s = summary(serial(spy, Relu(), spy), (3,))
    assert seen and all(seen)
    assert s.total_params == (3 * 4 + 4) + (4 * 4 + 4)  # Dense(4) on 3 features, then on 4
    assert math.prod(s.output_shape) == 4


def test_bad_input_shape_names_the_model():
    with pytest.raises(ValueError, match=r"simple_cnn: built for input_shape \(28, 28, 1\), got \(32, 32, 3\)"):
        summary(models.simple_cnn(), (32, 32, 3))
    with pytest.raises(ValueError, match="summary: input_shape must have positive sizes"):
        summary(models.simple_cnn(), (0, 28, 1))


def test_unknown_composite_is_one_row():
    """A layer with children whose params layout is unknown is shown whole, not guessed at."""
    inner = Dense(2)
    odd = Layer("odd", inner.init, inner.apply, inner.backward, children=(inner,), kind="custom")
    s = summary(odd, (3,))
    assert len(s.rows) == 1 and s.rows[0].is_leaf and s.total_params == 8


def test_exported():
    assert fnn.summary is summary
    assert fnn.diagnostics.summary is summary
