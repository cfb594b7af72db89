"""fnn.data.batching: epoch_batches (drop, pad, jit), epoch_indices gives epoch_batches's batches,
iterate_batches; the deprecated spellings (positional key, drop_remainder) warn and give the same
result, train_val_split's included."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn.data import epoch_batches, epoch_indices, iterate_batches, train_val_split

# ---------------------------------------------------------------------------------------- batches


def test_epoch_batches_drop(key):
    x = jnp.arange(10.0, dtype=jnp.float32)[:, None] * jnp.ones((1, 3), jnp.float32)
    y = jnp.arange(10)
    b = epoch_batches(x, y, 3, key=key)
    assert b.x.shape == (3, 3, 3) and b.y.shape == (3, 3) and b.mask.shape == (3, 3)
    assert b.mask.dtype == jnp.float32 and float(b.mask.sum()) == 9
    ids = np.asarray(b.y).ravel()
    assert len(set(ids)) == 9  # each example at most once
    np.testing.assert_array_equal(np.asarray(b.x)[..., 0], np.asarray(b.y))
    assert not np.array_equal(ids, np.arange(9))  # shuffled
    again = epoch_batches(x, y, 3, key=key)
    np.testing.assert_array_equal(again.y, b.y)


def test_epoch_batches_pad_and_jit(key):
    x, y = np.arange(10, dtype=np.float64)[:, None], np.arange(10)
    b = epoch_batches(x, y, 4, key=key, remainder="pad")
    assert b.x.shape == (3, 4, 1) and b.mask.dtype == jnp.float64
    mask = np.asarray(b.mask).ravel()
    np.testing.assert_array_equal(mask, [1] * 10 + [0] * 2)
    valid = np.asarray(b.y).ravel()[mask == 1]
    np.testing.assert_array_equal(np.sort(valid), np.arange(10))  # each exactly once
    jitted = jax.jit(epoch_batches, static_argnames=("batch_size", "remainder"))
    bj = jitted(x, y, batch_size=4, key=key, remainder="pad")
    for a, c in zip(bj, b, strict=True):
        np.testing.assert_array_equal(a, c)
    assert jitted(x, y, batch_size=3, key=key).x.shape == (3, 3, 1)


@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_epoch_indices_are_epoch_batches(key, remainder):
    # fit gathers batch i as x[idx[i]] inside the scan: the same batches as epoch_batches.
    x = np.arange(22, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    y = np.arange(22)
    idx, mask = epoch_indices(22, 5, key=key, remainder=remainder)
    perm = np.asarray(jax.random.permutation(key, 22))  # the per-step loop's shuffle
    want = perm[:20] if remainder == "drop" else np.concatenate([perm, perm[:3]])
    np.testing.assert_array_equal(idx, want.reshape(-1, 5))
    assert idx.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(mask).ravel(), (np.arange(want.size) < 22).astype(np.float32))
    b = epoch_batches(x, y, 5, key=key, remainder=remainder)
    np.testing.assert_array_equal(y[np.asarray(idx)], b.y)
    np.testing.assert_array_equal(x[np.asarray(idx)], b.x)
    with pytest.raises(ValueError, match="epoch_indices: batch_size=23 is larger than the number of examples N=22"):
        epoch_indices(22, 23, key=key)


def test_epoch_batches_errors(key):
    with pytest.raises(ValueError, match="batch_size=11 is larger than the number of examples N=10"):
        epoch_batches(np.zeros((10, 2)), np.zeros(10), 11, key=key)
    with pytest.raises(ValueError, match=r"empty data set, x of shape \(0, 2\)"):
        epoch_batches(np.zeros((0, 2)), np.zeros(0), 1, key=key)
    with pytest.raises(ValueError, match="remainder must be one of"):
        epoch_batches(np.zeros((10, 2)), np.zeros(10), 2, key=key, remainder="keep")
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        epoch_batches(np.zeros((10, 2)), np.zeros(10), 0, key=key)


def test_iterate_batches(key):
    x, y = np.arange(10)[:, None] * 2, np.arange(10)
    batches = list(iterate_batches(x, y, 4, key=key))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert all(isinstance(b[0], np.ndarray) for b in batches)
    ys = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(np.sort(ys), np.arange(10))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches])[:, 0], ys * 2)
    assert not np.array_equal(ys, np.arange(10))
    ordered = [b[1] for b in iterate_batches(x, y, 4, shuffle=False, remainder="drop")]
    np.testing.assert_array_equal(np.concatenate(ordered), np.arange(8))
    with pytest.raises(ValueError, match="shuffle=True needs a PRNG key"):
        iterate_batches(x, y, 4)
    with pytest.raises(ValueError, match="batch_size=11 is larger .* N=10, so remainder='drop'"):
        iterate_batches(x, y, 11, shuffle=False, remainder="drop")


# ----------------------------------------------------------------------------------------
# Deprecated spellings (removed in 0.3): they warn and give the same result


def test_positional_key_is_deprecated_and_still_works(key):
    x, y = np.arange(20, dtype=np.float64)[:, None], np.arange(20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling does not warn
        split = train_val_split(x, y, 0.2, key=key)
        idx, mask = epoch_indices(20, 6, key=key, remainder="pad")
        batches = epoch_batches(x, y, 6, key=key)
    with pytest.warns(DeprecationWarning, match=r"train_val_split\(\) with a positional key is deprecated"):
        old_split = train_val_split(key, x, y, 0.2)
    with pytest.warns(DeprecationWarning, match="positional key"):
        old_split_kw = train_val_split(key, x, y, val_fraction=0.2)
    for a, b, c in zip(jax.tree.leaves(split), jax.tree.leaves(old_split), jax.tree.leaves(old_split_kw), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    with pytest.warns(DeprecationWarning, match=r"epoch_indices\(\) with a positional key"):
        old_idx, old_mask = epoch_indices(key, 20, 6, remainder="pad")
    np.testing.assert_array_equal(old_idx, idx)
    np.testing.assert_array_equal(old_mask, mask)
    with pytest.warns(DeprecationWarning, match=r"epoch_batches\(\) with a positional key"):
        old_batches = epoch_batches(key, x, y, 6)
    for a, b in zip(old_batches, batches, strict=True):
        np.testing.assert_array_equal(a, b)


def test_positional_key_still_works_under_jit(key):
    """fit's fused epoch called epoch_indices(perm_key, n, batch_size, ...) on a traced key."""
    new = jax.jit(lambda k: epoch_indices(22, 5, key=k, remainder="pad"))(key)
    with pytest.warns(DeprecationWarning, match="positional key"):
        old = jax.jit(lambda k: epoch_indices(k, 22, 5, remainder="pad"))(key)
    for a, b in zip(old, new, strict=True):
        np.testing.assert_array_equal(a, b)


def test_key_is_keyword_only(key):
    x, y = np.zeros((10, 2)), np.zeros(10)
    with pytest.raises(TypeError, match="key"):
        train_val_split(x, y, 0.2)
    with pytest.raises(TypeError, match="key"):
        epoch_indices(10, 2)
    with pytest.raises(TypeError, match="key"):
        epoch_batches(x, y, 2)


def test_drop_remainder_is_deprecated(key):
    x, y = np.arange(10)[:, None], np.arange(10)

    def run(**kw):
        return [b[1].tolist() for b in iterate_batches(x, y, 4, key=key, **kw)]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drop, keep = run(remainder="drop"), run(remainder="keep")
        assert run() == keep and [len(b) for b in drop] == [4, 4] and [len(b) for b in keep] == [4, 4, 2]
    with pytest.warns(DeprecationWarning, match=r"iterate_batches\(drop_remainder=...\) is deprecated"):
        assert run(drop_remainder=True) == drop
    with pytest.warns(DeprecationWarning):
        assert run(drop_remainder=False) == keep
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="not both"):
        run(remainder="drop", drop_remainder=True)
    with pytest.raises(ValueError, match=r"iterate_batches: remainder must be one of \['drop', 'keep'\]"):
        run(remainder="pad")
