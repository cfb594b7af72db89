"""Parity of Conv and the pools with torch.nn.functional: outputs and gradients (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from fnn.layers.conv import Conv  # noqa: E402
from fnn.layers.pool import AvgPool, MaxPool  # noqa: E402


def to_torch(x):
    """(N, *S, C) -> (N, C, *S), float64, requiring grad."""
    nd = x.ndim - 2
    return torch.tensor(np.asarray(x).transpose(0, nd + 1, *range(1, nd + 1)), dtype=torch.float64,
                        requires_grad=True)


def from_torch(t):
    nd = t.ndim - 2
    return t.detach().numpy().transpose(0, *range(2, nd + 2), 1)


def ours(layer, params, x, dy):
    @jax.jit
    def run(params, x, dy):
        return layer.apply(params, {}, x)[0], layer.backward(params, {}, x, dy)
    return run(params, x, dy)


# (kernel, fnn keywords, torch keywords for conv{nd}d, torch pre-padding (F.pad order: last dim first))
CONV_CASES = [
    ((3,), dict(stride=2, dilation=2, padding=2), dict(stride=2, dilation=2, padding=2), None),
    ((4,), dict(padding="SAME"), dict(padding="same"), None),
    ((3, 2), dict(dilation=(1, 2), padding="SAME"), dict(dilation=(1, 2), padding="same"), None),
    ((3, 3), dict(stride=(2, 1), padding="FULL"), dict(stride=(2, 1), padding=2), None),
    ((2, 3), dict(stride=(2, 3), padding=((1, 2), (1, 1))), dict(stride=(2, 3)), (1, 1, 1, 2)),
    ((3, 3), dict(stride=2, padding=((0, 1), (2, 0)), padding_mode="edge"), dict(stride=2), (2, 0, 0, 1)),
    ((2, 3, 2), dict(stride=(1, 2, 1), dilation=(2, 1, 1), padding=1),
     dict(stride=(1, 2, 1), dilation=(2, 1, 1), padding=1), None),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("kernel, kw, torch_kw, pre_pad", CONV_CASES)
def test_conv_matches_torch(kernel, kw, torch_kw, pre_pad, key):
    nd = len(kernel)
    spatial = (7, 6, 5)[:nd] if nd < 3 else (5, 4, 4)
    layer = Conv(3, kernel, **kw)
    _, params, _ = layer.init(key, (*spatial, 2))
    params = jax.tree.map(lambda a: a.astype(jnp.float64) + 0.1, params)
    x = jax.random.normal(key, (2, *spatial, 2), jnp.float64)
    y_shape = jax.eval_shape(lambda p, x: layer.apply(p, {}, x)[0], params, x).shape
    dy = jax.random.normal(jax.random.key(1), y_shape, jnp.float64)
    y, (dparams, dx) = ours(layer, params, x, dy)

    xt = to_torch(x)
    wt = torch.tensor(np.asarray(params["w"]).transpose(nd + 1, nd, *range(nd)), requires_grad=True)
    bt = torch.tensor(np.asarray(params["b"]), requires_grad=True)
    mode = "replicate" if kw.get("padding_mode") == "edge" else "constant"
    xin = xt if pre_pad is None else F.pad(xt, pre_pad, mode=mode)
    yt = getattr(F, f"conv{nd}d")(xin, wt, bt, **torch_kw)
    yt.backward(to_torch(dy).detach())
    np.testing.assert_allclose(y, from_torch(yt), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, from_torch(xt.grad), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dparams["w"], wt.grad.numpy().transpose(*range(2, nd + 2), 1, 0), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(dparams["b"], bt.grad.numpy(), rtol=1e-12)


POOL_CASES = [
    ("max", (3, 3), dict(stride=2, padding=1), dict(kernel_size=3, stride=2, padding=1)),
    ("max", (2, 2), dict(stride=1), dict(kernel_size=2, stride=1)),
    ("avg", (3, 3), dict(stride=2, padding=1, count_include_pad=False),
     dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("avg", (2, 2, 2), dict(), dict(kernel_size=2)),
    ("max", (2, 1, 2), dict(stride=(1, 1, 2), padding=((1, 1), (0, 0), (1, 1))),
     dict(kernel_size=(2, 1, 2), stride=(1, 1, 2), padding=(1, 0, 1))),
]


@pytest.mark.parametrize("kind, window, kw, torch_kw", POOL_CASES)
def test_pools_match_torch(kind, window, kw, torch_kw, key):
    nd = len(window)
    spatial = (7, 6, 5)[:nd] if nd < 3 else (5, 4, 4)
    n = 2 * 3 * int(np.prod(spatial))
    x = (jax.random.permutation(key, n).astype(jnp.float64) / n).reshape(2, *spatial, 3)  # no ties
    layer = (MaxPool if kind == "max" else AvgPool)(window, **kw)
    y_shape = jax.eval_shape(lambda x: layer.apply({}, {}, x)[0], x).shape
    dy = jax.random.normal(jax.random.key(1), y_shape, jnp.float64)
    y, (_, dx) = ours(layer, {}, x, dy)
    xt = to_torch(x)
    yt = getattr(F, f"{kind}_pool{nd}d")(xt, **torch_kw)
    yt.backward(to_torch(dy).detach())
    np.testing.assert_allclose(y, from_torch(yt), rtol=1e-12)
    np.testing.assert_allclose(dx, from_torch(xt.grad), rtol=1e-12, atol=1e-14)
