"""Mixup and CutMix (fnn.train.mixing) and their place in the step, fit and fnn train.

With one class per example (y = arange(N)), a mixed label row names the partner and the weight
λ, so each test recovers them from the labels and checks the images against them: a mixer that
weighted images and labels differently, or paired them with different partners, fails.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fnn import Dense, Relu, losses, optim, serial
from fnn.cli import main
from fnn.train import fit
from fnn.train.mixing import Mixer, cutmix, mixup

N = 6


def _batch(seed, shape=(N, 5, 4, 2)):
    x = jax.random.normal(jax.random.key(seed), shape, jnp.float32)
    return x, jnp.arange(N, dtype=jnp.int32)


def _partners(ym):
    """Per row i: (λ_i, j) with λ_i the weight of class i and j the other class (i when unmixed)."""
    ym = np.asarray(ym)
    out = []
    for i, row in enumerate(ym):
        others = [j for j in np.flatnonzero(row > 0) if j != i]
        assert len(others) <= 1, row
        out.append((row[i], others[0] if others else i))
    return out


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), alpha=st.sampled_from([0.2, 1.0, 4.0]))
def test_mixup_blends_image_and_label_with_the_same_partner_and_weight(seed, alpha):
    x, y = _batch(seed % 1000)
    xm, ym = mixup(alpha, num_classes=N)(jax.random.key(seed), x, y)
    assert xm.shape == x.shape and ym.shape == (N, N)
    np.testing.assert_allclose(np.asarray(ym).sum(1), 1.0, rtol=1e-6)
    for i, (lam, j) in enumerate(_partners(ym)):
        want = lam * np.asarray(x[i]) + (1 - lam) * np.asarray(x[j]) if j != i else np.asarray(x[i])
        np.testing.assert_allclose(np.asarray(xm[i]), want, rtol=1e-5, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_cutmix_pastes_one_rectangle_of_the_labelled_share(seed):
    x, y = _batch(seed % 1000, (N, 9, 7, 2))
    xm, ym = cutmix(1.0, num_classes=N)(jax.random.key(seed), x, y)
    x, xm = np.asarray(x), np.asarray(xm)
    for i, (lam, j) in enumerate(_partners(ym)):
        pasted = np.all(xm[i] == x[j], axis=-1) & np.any(xm[i] != x[i], axis=-1)
        kept = np.all(xm[i] == x[i], axis=-1)
        assert np.all(pasted | kept)                       # every pixel from x_i or from its partner
        if j == i:
            assert lam == 1.0 and kept.all()
            continue
        rows, cols = np.flatnonzero(pasted.any(1)), np.flatnonzero(pasted.any(0))
        assert pasted[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()   # one full rectangle
        assert pasted.sum() == rows.size * cols.size
        np.testing.assert_allclose(1 - lam, pasted.mean(), rtol=1e-6)


def test_the_key_decides_everything():
    x, y = _batch(0)
    for m in (mixup(1.0, num_classes=N), cutmix(1.0, num_classes=N)):
        a, b, c = (m(jax.random.key(k), x, y) for k in (3, 3, 4))
        assert all(np.array_equal(p, q) for p, q in zip(a, b))
        assert not np.array_equal(a[0], c[0])


def test_padding_is_never_mixed_into_real_examples():
    x, y = _batch(1)
    mask = jnp.array([1, 1, 1, 1, 0, 0], jnp.float32)
    for m in (mixup(1.0, num_classes=N), cutmix(1.0, num_classes=N)):
        for k in range(20):
            _, ym = m(jax.random.key(k), x, y, mask)
            assert np.all(np.asarray(ym)[:4, 4:] == 0)


def test_probability_labels_mix_as_given():
    x, _ = _batch(2)
    soft = jax.nn.softmax(jax.random.normal(jax.random.key(5), (N, 3)))
    _, ym = mixup(1.0, num_classes=3)(jax.random.key(0), x, soft)
    np.testing.assert_allclose(np.asarray(ym).sum(1), 1.0, rtol=1e-6)


def test_bad_arguments_are_refused_with_the_shapes():
    x, y = _batch(0)
    with pytest.raises(ValueError, match="mixup: alpha"):
        mixup(0.0, num_classes=10)
    with pytest.raises(ValueError, match="cutmix: num_classes"):
        cutmix(1.0, num_classes=1)
    with pytest.raises(ValueError, match=r"cutmix: x must be images \(N, H, W, C\), got shape \(6, 3\)"):
        cutmix(1.0, num_classes=N)(jax.random.key(0), jnp.ones((N, 3)), y)
    with pytest.raises(ValueError, match=r"mixup: y must be .*\(6, 4\)"):
        mixup(1.0, num_classes=N)(jax.random.key(0), x, jnp.ones((N, 4)))
    assert mixup(0.2, num_classes=10) == Mixer("mixup", 0.2, 10)   # equal mixers share compiled programs


def _mlp_data():
    x = jax.random.normal(jax.random.key(0), (64, 6), jnp.float32)
    return x, (jnp.sum(x[:, :2], axis=1) > 0).astype(jnp.int32)


def _fit(mix, batch_size=16, **kw):
    model = serial(Dense(8), Relu(), Dense(2))
    return fit(model, losses.softmax_cross_entropy, optim.sgd(0.1), _mlp_data(), epochs=2, batch_size=batch_size,
               key=jax.random.key(1), callbacks=[mix] if mix else [], **kw)


@pytest.mark.parametrize("mode", ["autodiff", "manual"])
def test_fit_mixes_the_same_way_fused_and_per_step(mode):
    m = mixup(0.4, num_classes=2)
    fused, _ = _fit(m, grad_mode=mode)
    stepped, _ = _fit(m, grad_mode=mode, fused=False)
    plain, _ = _fit(None, grad_mode=mode)
    for a, b, c in zip(jax.tree.leaves(fused.params), jax.tree.leaves(stepped.params), jax.tree.leaves(plain.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        assert not np.allclose(a, c)            # the mixing changed the training


def test_fit_with_a_padded_last_batch_runs_and_stays_finite():
    ts, h = _fit(mixup(1.0, num_classes=2), batch_size=20, remainder="pad")   # 64 = 3 x 20 + 4
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(ts.params))
    assert np.isfinite(h["train_loss"]).all()


def test_fnn_train_mixup_and_cutmix_flags(tmp_path, capsys):
    out = tmp_path / "mix"
    code = main(["train", "--model", "mlp", "--limit", "300", "--epochs", "1", "--cutmix", "1.0",
                 "--no-progress", "--out", str(out), "--no-download", "--batch-size", "64"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["cutmix"] == 1.0 and results["mixup"] is None
    assert "cutmix 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):   # argparse: the two are mutually exclusive
        main(["train", "--mixup", "0.2", "--cutmix", "1.0"])
    assert main(["train", "--mixup", "0.2", "--loss", "mse", "--limit", "300", "--batch-size", "64",
                 "--epochs", "1", "--no-download", "--out", str(tmp_path / "mse")]) == 2
    assert "--mixup needs --loss softmax_cross_entropy" in capsys.readouterr().err


def test_fit_takes_one_mixer():
    with pytest.raises(ValueError, match="fit: at most one mixer"):
        fit(serial(Dense(2)), losses.softmax_cross_entropy, optim.sgd(0.1), _mlp_data(), epochs=1, batch_size=16,
            key=0, callbacks=[mixup(0.2, num_classes=2), cutmix(1.0, num_classes=2)])
