"""fnn.precision: Policy, apply_policy, and train_step/fit in bfloat16 with float32 master params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import losses, optim
from fnn.backprop import MODES, value_and_grad
from fnn.core import Layer, promote
from fnn.data import Standardizer, load_sample
from fnn.layers.activation import Relu
from fnn.layers.combinators import serial
from fnn.layers.conv import Conv2D
from fnn.layers.dense import Dense
from fnn.layers.dropout import Dropout
from fnn.layers.norm import BatchNorm
from fnn.layers.pool import MaxPool
from fnn.layers.reshape import Flatten
from fnn.precision import Policy, apply_policy, cast_floating, get_policy
from fnn.train import fit, train_step

CE = losses.softmax_cross_entropy
BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)


def probe(seen: list) -> Layer:
    """y = s·x; records the dtypes its apply and backward see (at trace time)."""
    def init(key, input_shape):
        return tuple(input_shape), {"s": jnp.ones((), jnp.float32)}, {}

    def apply(params, state, x, *, key=None, train=False):
        seen.append(("apply", x.dtype, params["s"].dtype))
        x, s = promote(x, params["s"])
        return x * s, state

    def backward(params, state, x, dy, *, key=None, train=False):
        seen.append(("backward", x.dtype, dy.dtype))
        x, s, dy = promote(x, params["s"], dy)
        return {"s": jnp.sum(dy * x).astype(params["s"].dtype)}, (dy * s).astype(x.dtype)

    return Layer("Probe", init, apply, backward)


def dtypes(tree):
    return {jnp.dtype(a.dtype) for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.floating)}


# Shared objects: fit and apply_policy cache per (model, ...), so tests that reuse them skip recompiling.
SEEN: list = []
NET = serial(Dense(8), probe(SEEN), Relu(), Dense(3))
CONV = serial(Conv2D(4, 3, padding="SAME", use_bias=False), BatchNorm(), Relu(), Flatten(), Dropout(0.1),
              Dense(3))
MLP_BN = serial(Flatten(), Dense(64), BatchNorm(), Relu(), Dense(10))


# ----------------------------------------------------------------------------------------
# Policy


def test_policy_normalizes_dtypes_and_checks_them():
    p = Policy()
    assert (p.param_dtype, p.compute_dtype, p.output_dtype) == (F32, BF16, F32)
    assert Policy(compute_dtype="bfloat16") == p and hash(Policy(compute_dtype=jnp.bfloat16)) == hash(p)
    assert get_policy(None, None) is None
    assert get_policy(jnp.bfloat16) == p and get_policy(compute_dtype="float16").compute_dtype == jnp.float16
    assert get_policy(Policy(compute_dtype=jnp.float16)).compute_dtype == jnp.float16
    with pytest.raises(ValueError, match="compute_dtype must be a floating dtype"):
        Policy(compute_dtype=jnp.int32)
    with pytest.raises(ValueError, match="fit: compute_dtype must be a floating dtype"):
        get_policy(compute_dtype="int8")
    with pytest.raises(ValueError, match="give policy= or compute_dtype=, not both"):
        get_policy(Policy(), jnp.bfloat16)


def test_cast_floating_leaves_integers_and_keys():
    tree = {"w": jnp.ones(2, jnp.float32), "n": jnp.ones(2, jnp.int32), "k": jax.random.key(0)}
    out = cast_floating(tree, jnp.bfloat16)
    assert out["w"].dtype == BF16 and out["n"].dtype == jnp.int32
    assert jnp.issubdtype(out["k"].dtype, jax.dtypes.prng_key)


# ----------------------------------------------------------------------------------------
# apply_policy


def test_apply_policy_computes_in_bfloat16_between_float32_ends(key):
    mixed = apply_policy(NET, Policy())
    assert apply_policy(NET, Policy()) is mixed  # cached: fit's compiled programs are reused
    _, params, state = mixed.init(key, (5,))
    assert dtypes(params) == {F32}
    x = jax.random.normal(key, (4, 5), jnp.float32)
    SEEN.clear()
    y, _ = mixed.apply(params, state, x)
    assert y.dtype == F32
    assert SEEN == [("apply", BF16, BF16)]  # the layer inside saw bfloat16 x and params
    jaxpr = jax.make_jaxpr(lambda p, x: mixed.apply(p, state, x)[0])(params, x)
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert len(dots) == 2 and all(v.aval.dtype == BF16 for e in dots for v in e.invars)
    np.testing.assert_allclose(y, NET.apply(params, state, x)[0], rtol=0.05, atol=0.05)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_is_the_bfloat16_gradient_cast_to_float32(key, mode):
    """value_and_grad through the policy: float32 loss and gradients, equal to the gradient with
    respect to the bfloat16 copies of the parameters, cast to float32."""
    mixed = apply_policy(NET, Policy())
    _, params, state = mixed.init(key, (5,))
    x = jax.random.normal(key, (6, 5), jnp.float32)
    y = jnp.arange(6) % 3
    SEEN.clear()
    (value, _), grads = jax.jit(value_and_grad(mixed, CE, grad_mode=mode))(params, state, x, y)
    assert value.dtype == F32 and dtypes(grads) == {F32}
    if mode != "autodiff":
        assert ("backward", BF16, BF16) in SEEN  # the hand-written backward ran in bfloat16

    def objective(p_bf16):
        logits, _ = NET.apply(p_bf16, state, x.astype(jnp.bfloat16))
        return CE.value(logits.astype(jnp.float32), y)

    ref_value, ref = jax.value_and_grad(objective)(cast_floating(params, jnp.bfloat16))
    assert dtypes(ref) == {BF16}
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    # autodiff takes the same path; the manual backward rounds in its own order (bfloat16 ulp).
    tol = 1e-6 if mode == "autodiff" else 2e-2
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(g, r.astype(jnp.float32), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------------------
# train_step and fit


@pytest.mark.parametrize("mode", MODES)
def test_train_step_keeps_float32_params_opt_state_and_batchnorm_state(key, mode):
    from fnn.train import init_train_state

    opt = optim.adam(1e-2)
    ts = init_train_state(CONV, opt, (6, 6, 1), key=key)
    step = jax.jit(train_step(CONV, CE, opt, grad_mode=mode, policy=jnp.bfloat16))
    x = jax.random.normal(key, (8, 6, 6, 1), jnp.float32)
    y = jnp.arange(8) % 3
    for _ in range(2):
        ts, metrics = step(ts, x, y)
    assert dtypes(ts.params) == {F32} and dtypes(ts.opt_state) == {F32}
    assert dtypes(ts.state) == {F32}  # BatchNorm's running statistics keep their dtype
    assert metrics["loss"].dtype == F32 and bool(metrics["finite"])
    assert not np.allclose(ts.state[1]["mean"], 0.0)  # the statistics did move


@pytest.fixture(scope="module")
def sample():
    """1000 training and 500 test images of the embedded Fashion-MNIST sample, standardized."""
    ds = load_sample()
    (x, y), (xt, yt) = ds.train, ds.test
    scaler = Standardizer.fit(x[:1000], per="global")
    return (np.asarray(scaler.apply(x[:1000])), y[:1000]), (np.asarray(scaler.apply(xt[:500])), yt[:500])


def test_fit_in_bfloat16_reaches_float32_accuracy(sample):
    train, test = sample
    kw = {"epochs": 3, "batch_size": 50, "key": jax.random.key(0), "val_data": test, "grad_mode": "manual"}
    ts32, h32 = fit(MLP_BN, CE, optim.adam(1e-3), train, **kw)
    ts16, h16 = fit(apply_policy(MLP_BN, jnp.bfloat16), CE, optim.adam(1e-3), train, **kw)
    assert dtypes(ts16.params) == {F32} and dtypes(ts16.opt_state) == {F32} and dtypes(ts16.state) == {F32}
    assert h32.val_accuracy[-1] > 0.7
    assert abs(h16.val_accuracy[-1] - h32.val_accuracy[-1]) <= 0.03, (h16.val_accuracy, h32.val_accuracy)
    assert abs(h16.train_loss[-1] - h32.train_loss[-1]) <= 0.05 * h32.train_loss[-1]
    ts_p, h_p = fit(apply_policy(MLP_BN, Policy()), CE, optim.adam(1e-3), train, **kw)
    assert h_p.records == [dict(r, seconds=p["seconds"], images_per_second=p["images_per_second"])
                           for r, p in zip(h16.records, h_p.records, strict=True)]


def test_fit_refuses_both_deprecated_spellings(sample):
    # The deprecated keywords fit(policy=..., compute_dtype=...) kept on purpose: giving both is an
    # error only they can make (apply_policy takes one); removed with them in 0.3.
    with pytest.warns(DeprecationWarning, match=r"fit\((compute_dtype|policy)=\.\.\.\) is deprecated"), \
            pytest.raises(ValueError, match="fit: give policy= or compute_dtype=, not both"):
        fit(MLP_BN, CE, optim.adam(1e-3), sample[0], epochs=1, batch_size=50, key=0,
            compute_dtype=jnp.bfloat16, policy=Policy())


def test_apply_policy_refuses_a_non_floating_dtype():
    msg = r"apply_policy: compute_dtype must be a floating dtype \(e\.g\. jnp\.bfloat16\), got int32"
    with pytest.raises(ValueError, match=msg):
        apply_policy(MLP_BN, jnp.int32)


def test_maxpool_backward_in_bfloat16(key):
    net = apply_policy(serial(Conv2D(2, 3, padding="SAME"), MaxPool((2, 2)), Flatten(), Dense(3)), Policy())
    _, params, state = net.init(key, (4, 4, 1))
    x = jax.random.normal(key, (2, 4, 4, 1), jnp.float32)
    (_, _), grads = value_and_grad(net, CE, grad_mode="manual")(params, state, x, jnp.arange(2))
    assert dtypes(grads) == {F32}


def test_cli_has_a_compute_dtype_flag():
    from fnn.cli import build_parser

    assert build_parser().parse_args(["train", "--compute-dtype", "bfloat16"]).compute_dtype == "bfloat16"
    assert build_parser().parse_args(["train"]).compute_dtype == "float32"
