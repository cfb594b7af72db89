import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import batch, dims, float_dtypes, seeds

from fnn import losses
from fnn.gradcheck import check_loss

torch = None


def _pred_target(which, n, m, key, dtype):
    k1, k2 = jax.random.split(key)
    z = jax.random.normal(k1, (n, m), dtype)
    if which in ("mse", "mae", "sigmoid_binary_cross_entropy"):
        t = jax.random.normal(k2, (n, m), dtype) if which != "sigmoid_binary_cross_entropy" \
            else jax.random.uniform(k2, (n, m), dtype)
        return z, t
    if which == "binary_cross_entropy":
        return jax.random.uniform(k1, (n, m), dtype, 0.05, 0.95), jax.random.uniform(k2, (n, m), dtype)
    labels = jax.random.randint(k2, (n,), 0, m)
    if which == "cross_entropy":
        return jax.nn.softmax(z), labels
    return z, labels


ELEMENTWISE = ["mse", "mae", "binary_cross_entropy", "sigmoid_binary_cross_entropy"]
CATEGORICAL = ["cross_entropy", "softmax_cross_entropy"]


@given(which=st.sampled_from(ELEMENTWISE + CATEGORICAL), n=batch, m=dims, seed=seeds, dtype=float_dtypes,
       onehot=st.booleans())
def test_loss_backward_matches_grad_and_fd(which, n, m, seed, dtype, onehot):
    pred, target = _pred_target(which, n, m, jax.random.key(seed), dtype)
    if which in CATEGORICAL and onehot:
        target = jax.nn.one_hot(target, m, dtype=dtype)
    if which == "mae":  # |x| has a kink at 0: keep pred and target apart for finite differences
        target = jnp.where(jnp.abs(pred - target) < 1e-3, target + 0.1, target)
    report = check_loss(getattr(losses, which), pred, target, key=jax.random.key(seed),
                        rtol=1e-9 if dtype == jnp.float64 else 1e-4)
    assert report.vjp_rel_err <= (1e-9 if dtype == jnp.float64 else 1e-4)


@settings(max_examples=6)  # each example compiles a new check (~2.5 s)
@given(n=batch, d=dims, seed=seeds, p=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
       margin=st.sampled_from([0.0, 0.5, 1.0, 5.0]))
def test_triplet_backward_matches_grad_and_fd(n, d, seed, p, margin):
    ka, kp, kn = jax.random.split(jax.random.key(seed), 3)
    pred = tuple(jax.random.normal(k, (n, d), jnp.float64) for k in (ka, kp, kn))
    loss = losses.triplet_margin(margin=margin, p=p)
    hinge = np.asarray(jnp.linalg.norm(pred[0] - pred[1] + 1e-6, ord=p, axis=-1)
                       - jnp.linalg.norm(pred[0] - pred[2] + 1e-6, ord=p, axis=-1) + margin)
    fd = bool(np.all(np.abs(hinge) > 1e-3))  # finite differences are invalid at the hinge
    check_loss(loss, pred, None, key=jax.random.key(seed), fd=fd)


def test_losses_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    z, t = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    p, tb = rng.uniform(0.01, 0.99, size=(6, 5)), rng.uniform(size=(6, 5))
    labels = rng.integers(0, 5, size=6)
    T = torch.from_numpy
    cases = [
        (losses.mse.value(jnp.asarray(z), jnp.asarray(t)), F.mse_loss(T(z), T(t))),
        (losses.mae.value(jnp.asarray(z), jnp.asarray(t)), F.l1_loss(T(z), T(t))),
        (losses.binary_cross_entropy.value(jnp.asarray(p), jnp.asarray(tb)), F.binary_cross_entropy(T(p), T(tb))),
        (losses.sigmoid_binary_cross_entropy.value(jnp.asarray(z), jnp.asarray(tb)),
         F.binary_cross_entropy_with_logits(T(z), T(tb))),
        (losses.softmax_cross_entropy.value(jnp.asarray(z), jnp.asarray(labels)), F.cross_entropy(T(z), T(labels))),
        (losses.softmax_cross_entropy.value(jnp.asarray(z), jnp.asarray(p)), F.cross_entropy(T(z), T(p))),
        (losses.cross_entropy.value(jax.nn.softmax(jnp.asarray(z)), jnp.asarray(labels)),
         F.nll_loss(torch.log_softmax(T(z), -1), T(labels))),
    ]
    for ours, ref in cases:
        np.testing.assert_allclose(float(ours), float(ref), rtol=1e-12)
    a, pos, neg = (rng.normal(size=(4, 3)) for _ in range(3))
    for pnorm in (1.0, 2.0, 3.0):
        ref = F.triplet_margin_loss(T(a), T(pos), T(neg), margin=0.7, p=pnorm)
        ours = losses.triplet_margin(0.7, pnorm).value(tuple(map(jnp.asarray, (a, pos, neg))), None)
        np.testing.assert_allclose(float(ours), float(ref), rtol=1e-10)


def test_bce_is_finite_at_zero_and_one_like_torch():
    p = jnp.array([0.0, 1.0, 0.5], jnp.float64)
    t = jnp.array([1.0, 0.0, 1.0], jnp.float64)
    value = losses.binary_cross_entropy.value(p, t)
    np.testing.assert_allclose(float(value), (100 + 100 + np.log(2)) / 3, rtol=1e-12)
    assert bool(jnp.all(jnp.isfinite(losses.binary_cross_entropy.backward(p, t))))


def test_softmax_cross_entropy_stable_for_huge_logits():
    z = jnp.array([[1e4, 0.0, -1e4]], jnp.float64)
    assert float(losses.softmax_cross_entropy.value(z, jnp.array([0]))) == 0.0
    np.testing.assert_allclose(float(losses.softmax_cross_entropy.value(z, jnp.array([1]))), 1e4)


def test_regularizers_value_and_gradient():
    params = {"w": jnp.array([[1.0, -2.0]], jnp.float64), "b": jnp.array([3.0], jnp.float64)}
    np.testing.assert_allclose(float(losses.l1(0.1).value(params, None)), 0.6)
    np.testing.assert_allclose(float(losses.l2(0.1).value(params, None)), 0.5 * 0.1 * 14)
    np.testing.assert_allclose(float(losses.l2(0.1, weights_only=True).value(params, None)), 0.5 * 0.1 * 5)
    g = losses.l2(0.1).backward(params, None)
    ref = jax.grad(lambda p: losses.l2(0.1).value(p, None))(params)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    g1 = losses.l1(0.1, weights_only=True).backward(params, None)
    np.testing.assert_allclose(g1["w"], [[0.1, -0.1]])
    np.testing.assert_array_equal(g1["b"], [0.0])


@pytest.mark.parametrize("loss", [losses.mse, losses.mae, losses.binary_cross_entropy,
                                  losses.sigmoid_binary_cross_entropy])
def test_elementwise_losses_refuse_broadcasting(loss):
    with pytest.raises(ValueError, match=rf"{loss.name}: pred and target must have the same shape, "
                                         r"got pred \(4, 1\) and target \(4,\)"):
        loss.value(jnp.zeros((4, 1)), jnp.zeros((4,)))
    with pytest.raises(ValueError, match="same shape"):
        loss.backward(jnp.zeros((4, 1)), jnp.zeros((4,)))


@pytest.mark.parametrize("loss", [losses.softmax_cross_entropy, losses.cross_entropy])
def test_categorical_label_errors(loss):
    pred = jnp.full((3, 4), 0.25)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\) for pred \(3, 4\), got values in \[0, 4\]"):
        loss.value(pred, jnp.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"got values in \[-1, 1\]"):
        loss.value(pred, jnp.array([0, 1, -1]))
    with pytest.raises(ValueError,
                       match=r"one-hot/probability labels must have the shape of pred \(3, 4\), got \(3, 5\)"):
        loss.value(pred, jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"integer labels must have shape \(N,\) = \(3,\)"):
        loss.value(pred, jnp.array([0, 1]))


def test_label_range_unchecked_under_jit_is_documented_behaviour():
    """Under jit only shapes are checked: an out-of-range label gives a zero one-hot row."""
    z = jnp.zeros((2, 3))
    value = jax.jit(losses.softmax_cross_entropy.value)(z, jnp.array([0, 7]))
    np.testing.assert_allclose(float(value), np.log(3) / 2, rtol=1e-6)


def test_triplet_errors():
    with pytest.raises(ValueError, match="pred must be the tuple"):
        losses.triplet_margin().value(jnp.zeros((2, 3)), None)
    with pytest.raises(ValueError, match=r"anchor and positive must have the same shape"):
        losses.triplet_margin().value((jnp.zeros((2, 3)), jnp.zeros((2, 4)), jnp.zeros((2, 3))), None)
    with pytest.raises(ValueError, match=r"triplet_margin: p must be in \[1.0"):
        losses.triplet_margin(p=0.5)


@settings(max_examples=10)
@given(n=batch, m=st.integers(2, 6), seed=seeds, eps=st.sampled_from([0.0, 0.05, 0.1, 0.5, 0.9]),
       which=st.sampled_from(CATEGORICAL), onehot=st.booleans())
def test_label_smoothing_backward_matches_grad_and_fd(n, m, seed, eps, which, onehot):
    pred, labels = _pred_target(which, n, m, jax.random.key(seed), jnp.float64)
    target = jax.nn.one_hot(labels, m, dtype=jnp.float64) if onehot else labels
    loss = losses.label_smoothing(getattr(losses, which), eps)
    report = check_loss(loss, pred, target, key=jax.random.key(seed), rtol=1e-9)
    assert report.vjp_rel_err <= 1e-9


def test_label_smoothing_matches_torch_and_optax():
    torch = pytest.importorskip("torch")
    optax = pytest.importorskip("optax")
    rng = np.random.default_rng(1)
    z, labels = rng.normal(size=(7, 5)), rng.integers(0, 5, size=7)
    for eps in (0.0, 0.1, 0.3):
        loss = losses.label_smoothing(losses.softmax_cross_entropy, eps)
        zt = torch.tensor(z, requires_grad=True)
        value = torch.nn.functional.cross_entropy(zt, torch.from_numpy(labels), label_smoothing=eps)
        value.backward()
        ref = value.detach()
        np.testing.assert_allclose(float(loss.value(jnp.asarray(z), jnp.asarray(labels))), float(ref), rtol=1e-12)
        np.testing.assert_allclose(loss.backward(jnp.asarray(z), jnp.asarray(labels)), zt.grad.numpy(), rtol=1e-10,
                                   atol=1e-15)
        smooth = optax.smooth_labels(jax.nn.one_hot(labels, 5, dtype=jnp.float64), eps)
        ref_optax = optax.softmax_cross_entropy(jnp.asarray(z), smooth).mean()
        np.testing.assert_allclose(float(loss.value(jnp.asarray(z), jnp.asarray(labels))), float(ref_optax),
                                   rtol=1e-12)
        probs = losses.label_smoothing(losses.cross_entropy, eps).value(jax.nn.softmax(jnp.asarray(z)),
                                                                          jnp.asarray(labels))
        np.testing.assert_allclose(float(probs), float(ref), rtol=1e-10)
    assert loss.name == "softmax_cross_entropy(label_smoothing=0.3)"


def test_label_smoothing_zero_is_the_loss_and_zero_rows_stay_zero():
    z = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3)))
    y = jnp.array([0, 2, 1, 1])
    plain, none = losses.softmax_cross_entropy, losses.label_smoothing(losses.softmax_cross_entropy, 0.0)
    assert float(none.value(z, y)) == float(plain.value(z, y))
    np.testing.assert_array_equal(none.backward(z, y), plain.backward(z, y))
    # under jit an out-of-range label is a zero row, which smoothing keeps at zero: the example adds nothing
    smoothed = losses.label_smoothing(losses.softmax_cross_entropy, 0.2)
    both = jax.jit(smoothed.value)(z[:2], jnp.array([0, 9]))
    np.testing.assert_allclose(float(both), float(smoothed.value(z[:1], y[:1])) / 2, rtol=1e-12)


def test_label_smoothing_errors():
    with pytest.raises(ValueError, match=r"label_smoothing: loss must be losses.softmax_cross_entropy or "
                                         r"losses.cross_entropy, got mse"):
        losses.label_smoothing(losses.mse, 0.1)
    with pytest.raises(ValueError, match=r"label_smoothing: smoothing must be in \[0.0, 1.0\), got 1.0"):
        losses.label_smoothing(losses.softmax_cross_entropy, 1.0)
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: integer labels must have shape"):
        losses.label_smoothing(losses.softmax_cross_entropy, 0.1).value(jnp.zeros((3, 4)), jnp.array([0, 1]))
