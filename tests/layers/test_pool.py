import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FD_RTOL
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import float_dtypes, seeds, tol

from fnn.gradcheck import check_layer
from fnn.layers.pool import (
    AvgPool,
    AvgPool2D,
    GlobalAvgPool,
    MaxPool,
    MaxPool1D,
    MaxPool2D,
    MaxPool3D,
    MinPool,
    MinPool2D,
)

POOLS = {"max": MaxPool, "min": MinPool, "avg": AvgPool}
WORKED = jnp.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 1, 2, 3], [4, 5, 6, 7]], jnp.float64)[None, :, :, None]


@st.composite
def pool_cases(draw):
    nd = draw(st.integers(1, 3))
    max_size = 4 if nd == 3 else 6
    window = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(*[st.integers(1, 3)] * nd)))
    padding = draw(st.one_of(st.sampled_from(["VALID", "SAME"]), st.integers(0, 1),
                             st.tuples(*[st.tuples(st.integers(0, 1), st.integers(0, 1))] * nd)))
    spatial = tuple(draw(st.integers(1, max_size)) for _ in range(nd))
    kind = draw(st.sampled_from(sorted(POOLS)))
    extra = {"count_include_pad": draw(st.booleans())} if kind == "avg" else {}
    return dict(nd=nd, window=window, stride=stride, padding=padding, spatial=spatial, kind=kind,
                channels=draw(st.integers(1, 3)), extra=extra)


def fits(c):
    """Every window holds at least one real cell (padding never exceeds the window's reach)."""
    pads = ((c["padding"],) * c["nd"] if isinstance(c["padding"], int) else c["padding"])
    if c["padding"] == "VALID":
        pads = ((0, 0),) * c["nd"]
    if c["padding"] == "SAME":
        return True
    pads = [(p, p) if isinstance(p, int) else p for p in pads]
    return all(i + lo + hi >= w and lo < w and hi < w
               for i, w, (lo, hi) in zip(c["spatial"], c["window"], pads, strict=True))


def make(c):
    return POOLS[c["kind"]](c["window"], c["stride"], c["padding"], **c["extra"])


def separated(key, shape, dtype):
    """Distinct values 0.1 apart, in random order: no ties, and no kink within FD's reach."""
    n = math.prod(shape)
    return jax.random.permutation(key, n).reshape(shape).astype(dtype) * 0.1 - n * 0.05


@given(case=pool_cases(), seed=seeds, dtype=float_dtypes)
def test_backward_matches_vjp(case, seed, dtype):
    assume(fits(case))
    shape = (*case["spatial"], case["channels"])
    x = separated(jax.random.key(seed), (2, *shape), dtype)
    report = check_layer(make(case), shape, key=jax.random.key(seed), x=x, dtype=dtype, rtol=tol(dtype),
                         fd=False)
    assert report.output_shape[-1] == case["channels"]


@settings(max_examples=max(1, settings().max_examples // 2))
@given(case=pool_cases(), seed=seeds, levels=st.integers(1, 3))
def test_ties_route_like_autodiff(case, seed, levels):
    """Inputs with few distinct values tie inside windows: dx must hit the very cells jax.vjp hits."""
    assume(fits(case) and case["kind"] != "avg")
    shape = (*case["spatial"], case["channels"])
    x = jax.random.randint(jax.random.key(seed), (2, *shape), 0, levels).astype(jnp.float64)
    layer = make(case)

    @jax.jit
    def run(x):
        y, vjp = jax.vjp(lambda x: layer.apply({}, {}, x)[0], x)
        dy = jax.random.uniform(jax.random.key(seed + 1), y.shape, jnp.float64, 1.0, 2.0)
        return layer.backward({}, {}, x, dy)[1], vjp(dy)[0]

    dx, ref = run(x)
    np.testing.assert_array_equal(dx != 0, ref != 0)
    np.testing.assert_allclose(dx, ref, rtol=1e-14)


@pytest.mark.parametrize("layer, shape", [
    (MinPool((3, 2), (2, 1), "SAME"), (5, 4, 1)),
    (MaxPool3D((2, 1, 2), (1, 1, 2), padding=((1, 0), (0, 0), (0, 1))), (3, 2, 4, 1)),
])
def test_backward_matches_finite_differences(layer, shape, key):
    x = separated(key, (2, *shape), jnp.float64)
    report = check_layer(layer, shape, key=key, x=x, fd=True, fd_rtol=FD_RTOL, fd_directions=1)
    assert report.fd_rel_err <= FD_RTOL


def run(layer, x, dy):
    """apply, backward and jax.vjp's dx in one compiled call (eager op-by-op dispatch compiles each op)."""
    @jax.jit
    def go(x, dy):
        y, vjp = jax.vjp(lambda x: layer.apply({}, {}, x)[0], x)
        return y, layer.backward({}, {}, x, dy)[1], vjp(dy)[0]
    return go(x, dy)


def test_course_max_pool_worked_example():
    # stride 2: each window's dy lands on its maximum (6, 8, 9, 7)
    y2, dx, ref = run(MaxPool2D(2), WORKED, jnp.array([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None])
    np.testing.assert_array_equal(y2[0, :, :, 0], [[6, 8], [9, 7]])
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0, 0, 0, 0], [0, 1, 0, 2], [3, 0, 0, 0], [0, 0, 0, 4]])
    np.testing.assert_array_equal(dx, ref)
    # stride 1: overlapping windows add up; 9 wins two windows, 7 (row 1) two, 8 two
    y1, dx, ref = run(MaxPool2D(2, stride=1), WORKED, jnp.ones((1, 3, 3, 1)))
    np.testing.assert_array_equal(y1[0, :, :, 0], [[6, 7, 8], [9, 7, 8], [9, 6, 7]])
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0, 0, 0, 0], [0, 1, 2, 2], [2, 0, 0, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(dx, ref)


def test_constant_input_sends_gradient_to_first_cell_of_each_window():
    x = jnp.ones((1, 4, 4, 1), jnp.float64)
    for layer in (MaxPool2D(2, 1), MinPool2D(2, 1)):
        _, dx, ref = run(layer, x, jnp.ones((1, 3, 3, 1)))
        expected = np.zeros((4, 4))
        expected[:3, :3] = 1  # the top-left cell of every window
        np.testing.assert_array_equal(dx[0, :, :, 0], expected)
        np.testing.assert_array_equal(dx, ref)


def test_min_and_avg_worked_example():
    np.testing.assert_array_equal(MinPool2D(2).apply({}, {}, WORKED)[0][0, :, :, 0], [[1, 3], [1, 2]])
    y, _ = AvgPool2D(2).apply({}, {}, WORKED)
    np.testing.assert_array_equal(y[0, :, :, 0], [[3.5, 5.5], [4.75, 4.5]])
    _, dx = AvgPool2D(2).backward({}, {}, WORKED, jnp.full((1, 2, 2, 1), 4.0))
    np.testing.assert_array_equal(dx, jnp.ones_like(WORKED))


def test_avg_pool_count_include_pad():
    x = jnp.ones((1, 3, 3, 1), jnp.float64)
    with_pad, _ = AvgPool2D(2, 2, "SAME").apply({}, {}, x)  # 3 -> 2: one padded row and column, high side
    without, _ = AvgPool2D(2, 2, "SAME", count_include_pad=False).apply({}, {}, x)
    np.testing.assert_array_equal(with_pad[0, :, :, 0], [[1, 0.5], [0.5, 0.25]])
    np.testing.assert_array_equal(without[0, :, :, 0], [[1, 1], [1, 1]])
    _, dx = AvgPool2D(2, 2, "SAME", count_include_pad=False).backward({}, {}, x, jnp.ones((1, 2, 2, 1)))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0.25, 0.25, 0.5], [0.25, 0.25, 0.5], [0.5, 0.5, 1]])


def test_max_pool_padding_never_wins():
    x = -jnp.arange(1.0, 5.0, dtype=jnp.float64).reshape(1, 4, 1)
    y, _ = MaxPool1D(2, 2, padding=1).apply({}, {}, x)
    np.testing.assert_array_equal(y[0, :, 0], [-1, -2, -4])


@pytest.mark.parametrize("shape, dtype", [((5, 2), jnp.float32), ((3, 2, 2, 3), jnp.float64)])
def test_global_avg_pool(shape, dtype, key):
    layer = GlobalAvgPool()
    report = check_layer(layer, shape, key=key, batch_size=2, dtype=dtype, rtol=tol(dtype),
                         fd=dtype == jnp.float64, fd_rtol=FD_RTOL, fd_directions=1)
    assert report.output_shape == shape[-1:]
    x = np.arange(2 * math.prod(shape), dtype=dtype).reshape(2, *shape)
    y, _ = jax.jit(layer.apply)({}, {}, x)
    np.testing.assert_allclose(y, x.reshape(2, -1, shape[-1]).mean(1), rtol=1e-6)


@pytest.mark.parametrize("layer", [MaxPool2D(2, 1, "SAME"), AvgPool((2, 3), (1, 2)), MinPool2D(3, 2, 1)])
def test_jit_equals_eager_and_no_retrace(layer, key):
    x = jax.random.normal(key, (2, 6, 5, 3))
    y, _ = layer.apply({}, {}, x)
    traces = []

    @jax.jit
    def run(x, dy):
        traces.append(1)
        return layer.apply({}, {}, x)[0], layer.backward({}, {}, x, dy)[1]

    dy = jnp.ones_like(y)
    y_jit, dx_jit = run(x, dy)
    run(x * 2, dy)
    assert len(traces) == 1
    np.testing.assert_allclose(y_jit, y, rtol=1e-6)
    np.testing.assert_allclose(dx_jit, layer.backward({}, {}, x, dy)[1], rtol=1e-6)
    assert y_jit.dtype == x.dtype == dx_jit.dtype


def test_names_and_default_stride():
    assert MaxPool2D(2).name == "MaxPool2D(2x2)"
    assert AvgPool2D(3, 1, "SAME").name == "AvgPool2D(3x3, stride=(1, 1), SAME)"
    assert MaxPool2D(2).init(None, (28, 28, 32))[0] == (14, 14, 32)
    assert MaxPool((3, 2)).init(None, (7, 7, 1))[0] == (2, 3, 1)


@pytest.mark.parametrize("build, shape, match", [
    (lambda: MaxPool2D(3), (2, 5, 1), r"MaxPool2D\(3x3\): window 3x3 is larger than the padded input 2x5"),
    (lambda: AvgPool2D(2), (4, 4), r"AvgPool2D\(2x2\): expected input_shape of rank 3"),
])
def test_bad_init(build, shape, match):
    with pytest.raises(ValueError, match=match):
        build().init(None, shape)


@pytest.mark.parametrize("build, match", [
    (lambda: MaxPool2D(2, stride=0), r"MaxPool2D: stride must be a positive int or a tuple of 2 positive"),
    (lambda: MaxPool2D(0), r"MaxPool2D: window must be a positive int"),
    (lambda: MaxPool(2), r"MaxPool: window must be a tuple with one size per spatial dim.*MaxPool1D/2D/3D"),
    (lambda: MaxPool2D((2, 2, 2)), r"MaxPool2D: window must be an int or a tuple of 2 ints"),
    (lambda: AvgPool2D(2, padding="same-ish"), r"AvgPool2D: padding must be 'VALID', 'SAME'"),
    (lambda: MinPool2D(2, padding="FULL"), r"MinPool2D: padding 'FULL' would make windows of padding only"),
])
def test_bad_hyperparameters(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_x():
    msg = r"MaxPool2D\(2x2\): expected x of rank 4 \(N, 2 spatial dims, C\), got \(4, 4\)"
    with pytest.raises(ValueError, match=msg):
        MaxPool2D(2).apply({}, {}, jnp.ones((4, 4)))
    with pytest.raises(ValueError, match=r"MaxPool2D\(2x2\): window 2x2 .* larger than the padded input 1x4"):
        MaxPool2D(2).apply({}, {}, jnp.ones((1, 1, 4, 1)))
    with pytest.raises(ValueError, match="GlobalAvgPool: expected x of shape"):
        GlobalAvgPool().apply({}, {}, jnp.ones((2, 3)))


@pytest.mark.parametrize("make", [MaxPool2D, MinPool2D, AvgPool2D, lambda w, **kw: MaxPool((w, w), **kw),
                                  lambda w, **kw: AvgPool((w, w), **kw)])
def test_strides_keyword_is_deprecated_but_works(make):
    with pytest.warns(DeprecationWarning, match=r"Pool(2D)?: strides= is deprecated, use stride="):
        old = make(2, strides=1)
    assert old.name == make(2, stride=1).name and "stride=(1, 1)" in old.name
