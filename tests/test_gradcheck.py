"""Negative controls for the gradient oracles in ``fnn.gradcheck``.

Every other test gives ``check_layer``/``check_model``/``check_loss`` a correct backward, so
a checker that compared a backward with itself would pass them all. Here each checker gets
deliberately wrong backwards and must raise ``GradCheckError`` naming the oracle that caught
it (autodiff, or finite differences for a wrong rule that autodiff shares). The same hand-built
layers with the right formula pass the same checks, so a failure means the planted bug, not
the way the layers are built.

The wrong layers are 4-field ``Layer``s (no ``fwd``/``bwd`` tape), so the manual chain of
``check_model`` (``layer_fwd``/``layer_bwd``) calls their ``backward``:
``test_manual_chain_uses_the_wrong_backward`` checks that.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FD_RTOL, RTOL64

from fnn import losses
from fnn.backprop import value_and_grad
from fnn.core import Layer, Loss
from fnn.gradcheck import GradCheckError, check_layer, check_loss, check_model
from fnn.layers import Dense, Dropout, serial

N, D, M = 3, 4, 4  # batch, Dense input width, output width (square: a transposed dw has dw's shape)
KEY = jax.random.key(7)

VJP_MSG = "backward differs from jax.vjp"
AUTO_MSG = "manual gradient differs from autodiff"
GRAD_MSG = "backward differs from jax.grad"
FD_MSG = "differs from finite differences"
# Finite differences cost most of a check's compile time: one direction where they are the oracle under
# test, none where autodiff is (the match on the message then says which oracle raised).
FD = dict(fd=True, fd_rtol=FD_RTOL, fd_directions=1)
NO_FD = dict(fd=False)


def _rng(seed):
    return np.random.default_rng(seed)


X = _rng(0).normal(size=(N, D))                    # Dense input
LABELS = _rng(1).integers(0, M, size=N)            # classes for softmax cross-entropy
LOGITS = _rng(2).normal(size=(N, M))               # predictions for the loss checks
TARGET = _rng(3).normal(size=(N, M))               # regression targets


# ----------------------------------------------------------------------------------------
# Hand-built layers: Dense's init and apply, a chosen weight/bias gradient


DENSE_GRADS = {
    "correct": lambda x, dy: (x.T @ dy, dy.sum(0)),
    "dw_times_1.01": lambda x, dy: (1.01 * (x.T @ dy), dy.sum(0)),
    "dw_transposed": lambda x, dy: ((x.T @ dy).T, dy.sum(0)),
    "db_mean_not_sum": lambda x, dy: (x.T @ dy, dy.mean(0)),
    "db_first_row": lambda x, dy: (x.T @ dy, dy[0]),
}
DENSE_BUGS = [b for b in DENSE_GRADS if b != "correct"]


def dense_with(grads: str) -> Layer:
    """Dense(M) whose backward uses DENSE_GRADS[grads]; dx = dy·wᵀ is always right."""
    base = Dense(M)

    def backward(params, state, x, dy, *, key=None, train=False):
        dw, db = DENSE_GRADS[grads](x, dy)
        return {"w": dw, "b": db}, dy @ params["w"].T

    return Layer(f"Dense({M})[{grads}]", base.init, base.apply, backward)


def dropout_with(mask: str) -> Layer:
    """Dropout(0.5) whose backward redraws the forward's mask ("same") or another one ("other")."""
    base = Dropout(0.5)

    def backward(params, state, x, dy, *, key=None, train=False):
        k = jax.random.fold_in(key, 1) if mask == "other" and key is not None else key
        return base.backward(params, state, x, dy, key=k, train=train)

    return Layer(f"Dropout(0.5)[{mask}_mask]", base.init, base.apply, backward)


def dense_with_own_wrong_rule(scale: float) -> Layer:
    """Dense(M) whose apply is a custom_vjp with dw scaled by `scale`, and whose backward is that rule.

    jax.vjp of apply then agrees with backward; only finite differences see the error.
    """
    base = Dense(M)

    def rule(params, x, dy):
        return {"w": scale * (x.T @ dy), "b": dy.sum(0)}, dy @ params["w"].T

    @jax.custom_vjp
    def affine(params, x):
        return x @ params["w"] + params["b"][None]

    affine.defvjp(lambda params, x: (affine(params, x), (params, x)), lambda res, dy: rule(*res, dy))

    def apply(params, state, x, *, key=None, train=False):
        return affine(params, x), state

    def backward(params, state, x, dy, *, key=None, train=False):
        return rule(params, x, dy)

    return Layer(f"Dense({M})[own_rule_dw_times_{scale}]", base.init, apply, backward)


def _errs(message):
    """(dparams err, dx err) from check_layer's vjp report."""
    m = re.search(r"dparams err (\S+), dx err (\S+)", message)
    assert m, message
    return float(m.group(1)), float(m.group(2))


# ----------------------------------------------------------------------------------------
# Hand-built losses


def _scaled_backward(loss: Loss, scale):
    return lambda pred, target: loss.backward(pred, target) * scale(pred)


WRONG_LOSSES = {
    # softmax cross-entropy averages over the N examples: forget the 1/N, or apply it twice.
    "ce_no_1/N": (losses.softmax_cross_entropy, lambda p: p.shape[0], LABELS),
    "ce_1/N^2": (losses.softmax_cross_entropy, lambda p: 1.0 / p.shape[0], LABELS),
    # mse averages over all N·M elements: dividing by N only is the classic slip.
    "mse_1/N_not_1/NM": (losses.mse, lambda p: p.shape[1], TARGET),
    "mse_1/N^2": (losses.mse, lambda p: 1.0 / p.shape[0], TARGET),
}


def wrong_loss(bug: str):
    loss, scale, target = WRONG_LOSSES[bug]
    return Loss(f"{loss.name}[{bug}]", loss.value, _scaled_backward(loss, scale)), target


def mse_with_own_rule(forget_1_over_n: bool = True) -> Loss:
    """mse whose value is a custom_vjp with a hand-written rule (by default forgetting the 1/N), backward that rule."""
    def rule(pred, target):
        return 2 * (pred - target) / (pred.shape[1] if forget_1_over_n else pred.size)

    @jax.custom_vjp
    def value(pred, target):
        return jnp.mean((pred - target) ** 2)

    value.defvjp(lambda p, t: (value(p, t), (p, t)),
                 lambda res, g: (g * rule(*res), jnp.zeros_like(res[1])))
    return Loss(f"mse[own_rule{'_no_1/N' if forget_1_over_n else ''}]", value, rule)


# ----------------------------------------------------------------------------------------
# The hand-built layers are what they claim to be


def test_hand_built_layers_have_no_tape_and_keep_the_forward():
    """No fwd/bwd: layer_fwd/layer_bwd fall back to apply/backward, i.e. the wrong backward."""
    params = {"w": jnp.asarray(_rng(4).normal(size=(D, M))), "b": jnp.asarray(_rng(5).normal(size=M))}
    y_ref = Dense(M).apply(params, {}, X)[0]
    for layer in [dense_with(b) for b in DENSE_GRADS] + [dropout_with("same"), dropout_with("other"),
                                                         dense_with_own_wrong_rule(1.01)]:
        assert layer.fwd is None and layer.bwd is None, layer.name
    for layer in [dense_with("dw_times_1.01"), dense_with_own_wrong_rule(1.01)]:
        np.testing.assert_allclose(layer.apply(params, {}, X)[0], y_ref, rtol=RTOL64)


def test_manual_chain_uses_the_wrong_backward():
    """value_and_grad(grad_mode="manual") through serial really calls the planted backward."""
    model, loss = serial(dense_with("dw_times_1.01")), losses.softmax_cross_entropy
    _, params, state = model.init(jax.random.key(0), (D,))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)

    @jax.jit  # one compilation instead of op-by-op dispatch
    def both(params):
        return [value_and_grad(model, loss, grad_mode=mode)(params, state, X, LABELS)[1]
                for mode in ("manual", "autodiff")]

    gm, ga = both(params)
    np.testing.assert_allclose(gm[0]["w"], 1.01 * ga[0]["w"], rtol=RTOL64)
    np.testing.assert_allclose(gm[0]["b"], ga[0]["b"], rtol=RTOL64)
    assert np.max(np.abs(ga[0]["w"])) > 1e-3  # so the factor is visible


# ----------------------------------------------------------------------------------------
# check_layer


def test_check_layer_passes_the_correct_hand_built_layers():
    for layer, train in [(dense_with("correct"), False), (dropout_with("same"), True)]:
        report = check_layer(layer, (D,), key=KEY, x=X, train=train, **FD)
        assert report.vjp_rel_err <= RTOL64, layer.name
        assert report.fd_rel_err <= FD_RTOL, layer.name
        assert report.output_shape == (M,)


@pytest.mark.parametrize("bug", DENSE_BUGS)
def test_check_layer_catches_a_wrong_dense_backward(bug):
    layer = dense_with(bug)
    with pytest.raises(GradCheckError, match=re.escape(f"{layer.name}: {VJP_MSG}")) as info:
        check_layer(layer, (D,), key=KEY, x=X, **NO_FD)
    dparams_err, dx_err = _errs(str(info.value))
    assert dparams_err > 1e-3 and dx_err <= RTOL64  # blamed on dparams, not on the right dx


def test_check_layer_catches_dropout_with_another_mask():
    layer = dropout_with("other")
    with pytest.raises(GradCheckError, match=re.escape(f"{layer.name}: {VJP_MSG}")) as info:
        check_layer(layer, (D,), key=KEY, x=X, train=True, **NO_FD)
    dparams_err, dx_err = _errs(str(info.value))
    assert dparams_err == 0.0 and dx_err > 0.1


def test_check_layer_needs_finite_differences_for_a_wrong_custom_vjp():
    """apply's own vjp rule is wrong and backward repeats it: only finite differences can tell.

    check_layer compares with jax.vjp first, so a finite-difference error means jax.vjp agreed."""
    layer = dense_with_own_wrong_rule(1.01)
    with pytest.raises(GradCheckError, match=re.escape(f"{layer.name}: backward {FD_MSG}")):
        check_layer(layer, (D,), key=KEY, x=X, **FD)
    # The same construction with the right rule passes finite differences.
    check_layer(dense_with_own_wrong_rule(1.0), (D,), key=KEY, x=X, **FD)


# ----------------------------------------------------------------------------------------
# check_model: the wrong layer (or loss) inside serial


def test_check_model_passes_the_correct_hand_built_model():
    model = serial(dense_with("correct"), dropout_with("same"), Dense(M))
    report = check_model(model, losses.softmax_cross_entropy, (D,), LABELS, key=KEY, x=X, **FD)
    assert report.vjp_rel_err <= RTOL64 and report.fd_rel_err <= FD_RTOL


@pytest.mark.parametrize("bug", DENSE_BUGS)
def test_check_model_catches_a_wrong_dense_backward(bug):
    model = serial(dense_with(bug))
    with pytest.raises(GradCheckError, match=re.escape(f"serial: {AUTO_MSG}")):
        check_model(model, losses.softmax_cross_entropy, (D,), LABELS, key=KEY, x=X, **NO_FD)


def test_check_model_catches_dropout_with_another_mask():
    model = serial(Dense(M), dropout_with("other"), Dense(M))
    with pytest.raises(GradCheckError, match=re.escape(f"serial: {AUTO_MSG}")):
        check_model(model, losses.softmax_cross_entropy, (D,), LABELS, key=KEY, x=X, train=True, **NO_FD)


@pytest.mark.parametrize("bug", ["ce_no_1/N", "mse_1/N_not_1/NM"])
def test_check_model_catches_a_wrong_loss_backward(bug):
    loss, target = wrong_loss(bug)
    with pytest.raises(GradCheckError, match=re.escape(f"serial: {AUTO_MSG}")):
        check_model(serial(Dense(M)), loss, (D,), target, key=KEY, x=X, **NO_FD)


def test_check_model_needs_finite_differences_for_a_wrong_custom_vjp():
    """Autodiff runs the same wrong rules as the manual chain (a layer's, then a loss's)."""
    cases = [(serial(dense_with_own_wrong_rule(1.01)), losses.mse),
             (serial(Dense(M)), mse_with_own_rule())]
    for model, loss in cases:
        with pytest.raises(GradCheckError, match=re.escape(f"serial: manual gradient {FD_MSG}")):
            check_model(model, loss, (D,), TARGET, key=KEY, x=X, **FD)


# ----------------------------------------------------------------------------------------
# check_loss


@pytest.mark.parametrize("loss, target", [(losses.softmax_cross_entropy, LABELS), (losses.mse, TARGET)],
                         ids=["softmax_cross_entropy", "mse"])
def test_check_loss_passes_the_correct_losses(loss, target):
    report = check_loss(loss, LOGITS, target, key=KEY, **FD)
    assert report.vjp_rel_err <= RTOL64 and report.fd_rel_err <= FD_RTOL


@pytest.mark.parametrize("bug", list(WRONG_LOSSES))
def test_check_loss_catches_a_wrong_normalization(bug):
    loss, target = wrong_loss(bug)
    with pytest.raises(GradCheckError, match=re.escape(f"{loss.name}: {GRAD_MSG}")):
        check_loss(loss, LOGITS, target, key=KEY, **NO_FD)


def test_check_loss_needs_finite_differences_for_a_wrong_custom_vjp():
    loss = mse_with_own_rule()
    with pytest.raises(GradCheckError, match=re.escape(f"{loss.name}: backward {FD_MSG}")):
        check_loss(loss, LOGITS, TARGET, key=KEY, **FD)
    # The same construction with the right rule passes finite differences.
    check_loss(mse_with_own_rule(forget_1_over_n=False), LOGITS, TARGET, key=KEY, **FD)


def test_float64_without_64_bit_jax_is_a_clear_error_not_a_false_failure():
    """Without x64, float64 would quietly be float32 and finite differences would blame the layer."""
    with jax.enable_x64(False):
        for check in (lambda: check_layer(Dense(2), (3,), key=jax.random.key(0)),
                      lambda: check_model(serial(Dense(2)), losses.mse, (3,), jnp.zeros((4, 2), jnp.float32),
                                          key=jax.random.key(0))):
            with pytest.raises(ValueError, match="jax_enable_x64"):
                check()
        report = check_layer(Dense(2), (3,), key=jax.random.key(0), dtype=jnp.float32)
        assert report is not None


# ----------------------------------------------------------------------------------------
# A dead network: the gradient is round-off, compared absolutely below GRAD_FLOOR


def _dead_relu_model(relu_backward: str) -> tuple:
    """Dense(1) - Relu - Maxout(1, 2) - Relu - Dense(3) whose Relus are off for every example and
    whose labels are one of each class (seed 1, a failure drawn by tests/test_backprop.py's
    property): the logits are all equal, the manual chain gives the output bias
    Σ(softmax − one-hot) = 3e-17, autodiff exactly 0. With relu_backward "leaky" the hand-built
    Relus pass dy through where they are off: a real bug, which gives the first Dense O(0.1)
    gradients."""
    from fnn.layers import Maxout, Relu

    base = Relu()

    def backward(params, state, x, dy, *, key=None, train=False):
        return {}, jnp.where(x > 0, dy, 0.0) if relu_backward == "correct" else dy

    def relu():
        return Layer(f"Relu[{relu_backward}]", base.init, base.apply, backward)

    model = serial(Dense(1), relu(), Maxout(1, 2), relu(), Dense(3))
    return model, jnp.array([2, 0, 1]), jax.random.key(1)


def test_check_model_compares_a_dead_networks_round_off_absolutely():
    model, labels, key = _dead_relu_model("correct")
    report = check_model(model, losses.softmax_cross_entropy, (1,), labels, key=key, rtol=1e-10, fd=False)
    assert report.vjp_rel_err <= 1e-10
    # The case is the one meant: autodiff's gradient is all zero, the manual one is not.
    _, p, s = model.init(jax.random.split(key, 4)[0], (1,))
    p = jax.tree.map(lambda a: a.astype(jnp.float64), p)
    x = jax.random.normal(jax.random.split(key, 4)[1], (3, 1), jnp.float64)
    ga = value_and_grad(model, losses.softmax_cross_entropy, grad_mode="autodiff")(p, s, x, labels)[1]
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(ga)) == 0.0


def test_check_model_still_catches_a_wrong_backward_in_a_dead_network():
    model, labels, key = _dead_relu_model("leaky")
    with pytest.raises(GradCheckError, match=re.escape(f"serial: {AUTO_MSG}")):
        check_model(model, losses.softmax_cross_entropy, (1,), labels, key=key, rtol=1e-10, fd=False)
