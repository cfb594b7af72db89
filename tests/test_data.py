"""Tests for fnn.data: IDX reader, loaders (search order, download, sample), preprocessing, batching."""

import gzip
import hashlib
import io
import struct
import urllib.error
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import data
from fnn.data import (
    Standardizer,
    epoch_batches,
    epoch_indices,
    iterate_batches,
    load_fashion_mnist,
    load_mnist,
    load_sample,
    read_idx,
    to_float,
    train_val_split,
)

REAL = Path("/usr/share/datasets/fashion-mnist")
CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(arr, code=None):
    """IDX bytes written by hand: 00 00 code ndim, big-endian uint32 dims, big-endian payload."""
    arr = np.asarray(arr)
    code = CODES[arr.dtype.type] if code is None else code
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_dataset(directory, n_train=12, n_test=6, *, seed=0, gz=True, labels=None):
    """The four MNIST-format files with small random contents; returns the arrays written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8) if labels is None else np.asarray(labels, np.uint8)
        images, label_file = data.FILES[split]
        for stem, arr in ((images, x), (label_file, y)):
            raw = idx_bytes(arr)
            (directory / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(raw) if gz else raw)
        arrays[split] = (x, y)
    return arrays


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No FNN_DATA, an empty HOME and an empty system directory."""
    monkeypatch.delenv("FNN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "system")
    return tmp_path


# ---------------------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("arr", [
    np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    np.array([-7, 0, 2**31 - 1, -(2**31)], np.int32),
    np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
    np.array([1.5, -2.25e300], np.float64),
    np.array([-300, 7], np.int16),
    np.array([-128, 127], np.int8),
], ids=["uint8-3d", "int32-1d", "float32-2d", "float64", "int16", "int8"])
def test_read_idx_round_trip(tmp_path, arr, compress):
    raw = idx_bytes(arr)
    path = tmp_path / "a.idx"  # no .gz extension: gzip is detected by the magic bytes
    path.write_bytes(gzip.compress(raw) if compress else raw)
    got = read_idx(path)
    assert got.dtype == arr.dtype and got.dtype.isnative
    assert got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)


def test_read_idx_raw_file_named_gz(tmp_path):
    path = tmp_path / "raw.gz"
    path.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)))
    np.testing.assert_array_equal(read_idx(path), np.arange(5))


@pytest.mark.parametrize("edit, match", [
    (lambda b: b[:-1], r"truncated: expected 24 payload bytes for shape \(2, 3\) of int32, got 23"),
    (lambda b: b + b"\0\0", r"trailing bytes: expected 24 payload bytes .* got 26"),
    (lambda b: b"\x01" + b[1:], r"magic bytes 00 00, got 01 00"),
    (lambda b: b[:2] + b"\x0a" + b[3:], r"unknown IDX type code: .* got 0x0A"),
    (lambda b: b[:6], r"truncated inside its header: expected 12 bytes"),
    (lambda b: b[:3], r"too short"),
])
def test_read_idx_rejects_bad_files(tmp_path, edit, match):
    path = tmp_path / "bad-file"
    path.write_bytes(edit(idx_bytes(np.zeros((2, 3), np.int32))))
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert "bad-file" in str(info.value)


@pytest.mark.parametrize("edit", [lambda z: z[:-6], lambda z: z[:20] + bytes([z[20] ^ 0xFF]) + z[21:],
                                  lambda z: z[:-4] + b"\0\0\0\0"], ids=["truncated", "flipped", "bad-size"])
def test_read_idx_corrupt_gzip(tmp_path, edit):
    z = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))
    path = tmp_path / "corrupt.gz"
    path.write_bytes(edit(z))
    with pytest.raises(ValueError, match=r"corrupt.gz is not a valid gzip file"):
        read_idx(path)


# ---------------------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("gz", [True, False])
def test_load_from_path(tmp_path, gz):
    written = write_dataset(tmp_path / "d", gz=gz)
    ds = load_fashion_mnist(tmp_path / "d", verbose=False)
    (x_train, y_train), (x_test, y_test) = ds.train, ds.test
    assert x_train.shape == (12, 28, 28, 1) and x_train.dtype == np.uint8
    assert y_train.shape == (12,) and y_train.dtype == np.int32
    assert x_test.shape == (6, 28, 28, 1) and y_test.shape == (6,)
    np.testing.assert_array_equal(x_train[..., 0], written["train"][0])
    np.testing.assert_array_equal(y_test, written["test"][1])
    assert ds.source == str(tmp_path / "d") and ds.name == "fashion-mnist" and not ds.is_sample


def test_load_count_mismatch(tmp_path):
    write_dataset(tmp_path, n_train=5)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz holds 5 images, .*"
                                         r"train-labels-idx1-ubyte.gz holds 4 labels"):
        load_fashion_mnist(tmp_path, verbose=False)


def test_load_label_out_of_range(tmp_path):
    write_dataset(tmp_path, n_train=3, n_test=3, labels=[1, 10, 2])
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz: expected labels in \[0, 10\), "
                                         r"got 10 at index 1"):
        load_fashion_mnist(tmp_path, verbose=False)


def test_load_wrong_image_shape(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(idx_bytes(np.zeros((6, 28, 27), np.uint8)))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: expected uint8 images of shape "
                                         r"\(N, 28, 28\), got uint8 of shape \(6, 28, 27\)"):
        load_fashion_mnist(tmp_path, verbose=False)


def test_explicit_path_without_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not hold the four Fashion-MNIST IDX files"):
        load_fashion_mnist(tmp_path, verbose=False)


def test_search_order(nowhere, monkeypatch):
    tmp = nowhere
    write_dataset(tmp / "system" / "fashion-mnist", n_train=4)
    assert load_fashion_mnist(download=False, verbose=False).train[0].shape[0] == 4
    write_dataset(tmp / "home" / ".cache" / "fnn" / "fashion-mnist", n_train=5)
    assert load_fashion_mnist(download=False, verbose=False).train[0].shape[0] == 5
    write_dataset(tmp / "env", n_train=6)
    monkeypatch.setenv("FNN_DATA", str(tmp / "env"))
    assert load_fashion_mnist(download=False, verbose=False).train[0].shape[0] == 6
    write_dataset(tmp / "env" / "fashion-mnist", n_train=7)
    ds = load_fashion_mnist(download=False, verbose=False)
    assert ds.train[0].shape[0] == 7 and ds.source == str(tmp / "env" / "fashion-mnist")


def test_fallback_to_sample_warns(nowhere, capsys):
    ds = load_fashion_mnist(download=False, verbose=False)
    assert ds.is_sample and ds.source == "sample"
    err = capsys.readouterr().err
    for text in ("SMALL EMBEDDED SAMPLE", "3000 train + 1000 test", "apt-get install dataset-fashion-mnist",
                 "export FNN_DATA=", str(nowhere / "system" / "fashion-mnist")):
        assert text in err
    assert len(err.splitlines()) >= 8


def fake_urlopen(files, calls):
    def urlopen(url, timeout=None):
        calls.append((url, timeout))
        return io.BytesIO(files[url.rsplit("/", 1)[1]])
    return urlopen


def test_download_verified_into_cache(nowhere, monkeypatch):
    src = nowhere / "src"
    written = write_dataset(src, n_train=9)
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    spec = data._SPECS["fashion-mnist"]
    monkeypatch.setitem(data._SPECS, "fashion-mnist",
                        spec._replace(md5={k: hashlib.md5(v).hexdigest() for k, v in files.items()}))
    calls = []
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen(files, calls))
    ds = load_fashion_mnist(verbose=False)
    cache = nowhere / "home" / ".cache" / "fnn" / "fashion-mnist"
    assert ds.source == str(cache) and len(calls) == 4
    assert all(t == data.DOWNLOAD_TIMEOUT and t <= 10 for _, t in calls)
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)
    np.testing.assert_array_equal(ds.train[1], written["train"][1])


def test_download_checksum_mismatch(nowhere, monkeypatch):
    files = {name: b"not the real file" for name in data._SPECS["fashion-mnist"].md5}
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen(files, []))
    with pytest.raises(ValueError, match=r"checksum mismatch, expected MD5 [0-9a-f]{32}, got "
                                         + hashlib.md5(b"not the real file").hexdigest()):
        load_fashion_mnist(verbose=False)
    cache = nowhere / "home" / ".cache" / "fnn" / "fashion-mnist"
    assert list(cache.iterdir()) == []  # the temporary file is gone, nothing was renamed


def test_network_failure_falls_back(nowhere, monkeypatch, capsys):
    calls = []

    def unreachable(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data.urllib.request, "urlopen", unreachable)
    assert load_fashion_mnist(verbose=False).is_sample
    assert len(calls) == len(data._SPECS["fashion-mnist"].mirrors)
    assert "SMALL EMBEDDED SAMPLE" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"(?s)^load: MNIST not found.*downloading .* failed"):
        load_mnist(verbose=False)


def test_load_sample():
    ds = load_sample()
    (x_train, y_train), (x_test, y_test) = ds.train, ds.test
    assert x_train.shape == (3000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), [300] * 10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [100] * 10)
    assert x_train.std() > 10  # real images, not blanks
    sample = Path(data.__file__).parent / "_sample" / "fashion_mnist_sample.npz"
    assert sample.stat().st_size < 3_000_000
    with pytest.raises(FileNotFoundError, match="no MNIST sample"):
        load_sample("mnist")


@pytest.mark.skipif(not REAL.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    ds = load_fashion_mnist(REAL, download=False, verbose=False)
    (x_train, y_train), (x_test, y_test) = ds.train, ds.test
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    with np.load(Path(data.__file__).parent / "_sample" / "fashion_mnist_sample.npz") as z:
        np.testing.assert_array_equal(z["x_train"], x_train[z["train_indices"], ..., 0])
        np.testing.assert_array_equal(z["y_test"], y_test[z["test_indices"]])


# ---------------------------------------------------------------------------------------- preprocessing


def test_standardizer_per_pixel_against_numpy():
    x = np.random.default_rng(0).normal(3.0, 2.0, (9, 4, 3, 1))
    s = Standardizer.fit(x)
    assert s.mean.shape == (4, 3, 1) and s.mean.dtype == jnp.float32
    n = x.shape[0]
    mean = x.sum(axis=0) / n
    std = np.sqrt(((x - mean) ** 2).sum(axis=0) / (n - 1))  # unbiased, by hand
    np.testing.assert_allclose(s.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(s.std, std, rtol=1e-6)
    y = s.apply(x)
    assert y.dtype == jnp.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, (x - mean) / (std + data.EPS), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Standardizer.fit(x, ddof=0).std, x.std(axis=0), rtol=1e-6)


def test_standardizer_zero_std_guard():
    x = np.random.default_rng(1).integers(0, 256, (6, 2, 2, 1), dtype=np.uint8)
    x[:, 0, 1, 0] = 17  # a constant pixel
    s = Standardizer.fit(x)
    assert float(s.std[0, 1, 0]) == 1.0 and float(s.mean[0, 1, 0]) == 17.0
    y = s.apply(x)
    assert bool(jnp.all(jnp.isfinite(y)))
    np.testing.assert_array_equal(y[:, 0, 1, 0], 0.0)
    np.testing.assert_allclose(s.apply(x + np.uint8(1))[:, 0, 1, 0], 1 / (1 + data.EPS), rtol=1e-6)


def test_standardizer_per_channel_and_global():
    x = np.random.default_rng(2).uniform(0, 5, (5, 3, 3, 2)) * np.array([1.0, 10.0])
    s = Standardizer.fit(x, per="channel")
    assert s.mean.shape == (2,)
    np.testing.assert_allclose(s.mean, x.reshape(-1, 2).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(s.std, x.reshape(-1, 2).std(axis=0, ddof=1), rtol=1e-6)
    y = np.asarray(s.apply(x))
    np.testing.assert_allclose(y.reshape(-1, 2).mean(axis=0), 0, atol=1e-5)
    g = Standardizer.fit(x, per="global")
    assert g.mean.shape == ()
    np.testing.assert_allclose(g.std, x.std(ddof=1), rtol=1e-6)


def test_standardizer_errors_and_jit():
    x = np.ones((4, 3, 2))
    x[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"Standardizer.fit: x of shape \(4, 3, 2\) contains NaN"):
        Standardizer.fit(x)
    s = Standardizer.fit(np.random.default_rng(3).normal(size=(4, 3, 2)))
    with pytest.raises(ValueError, match=r"apply: expected x of shape \(N, 3, 2\) .* got \(4, 2, 3\)"):
        s.apply(np.zeros((4, 2, 3)))
    with pytest.raises(ValueError, match="Standardizer.apply: the standardized x contains NaN"):
        s.apply(x)
    with pytest.raises(ValueError, match=r"ddof=1 needs more than 1 values .* got 1"):
        Standardizer.fit(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"per must be one of"):
        Standardizer.fit(x, per="row")
    z = np.random.default_rng(4).normal(size=(5, 3, 2))
    np.testing.assert_allclose(jax.jit(lambda s, z: s.apply(z))(s, z), s.apply(z), rtol=1e-6)


def test_to_float():
    x = np.array([[0, 128, 255]], np.uint8)
    y = to_float(x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, [[0.0, 128 / 255, 1.0]], rtol=1e-7)
    with pytest.raises(ValueError, match="to_float: expected uint8 x, got float32"):
        to_float(y)


# ---------------------------------------------------------------------------------------- split, batches


def test_train_val_split(key):
    x, y = np.arange(50) * 10, np.arange(50)
    (xt, yt), (xv, yv) = train_val_split(x, y, 0.2, key=key)
    assert len(xt) == 40 and len(xv) == 10
    np.testing.assert_array_equal(xt, yt * 10)  # pairs stay together
    assert not set(yt) & set(yv) and set(yt) | set(yv) == set(range(50))
    (_, yt2), (_, yv2) = train_val_split(x, y, 0.2, key=key)
    np.testing.assert_array_equal(yv, yv2)
    (_, _), (_, yv3) = train_val_split(x, y, 0.2, key=jax.random.key(1))
    assert not np.array_equal(yv, yv3)
    (xtj, _), _ = train_val_split(jnp.asarray(x), jnp.asarray(y), 0.2, key=key)
    np.testing.assert_array_equal(xtj, xt)


@pytest.mark.parametrize("fraction, match", [(0.0, r"val_fraction must be in \(0.0, 1.0\), got 0.0"),
                                             (1.0, r"got 1.0"), (0.01, r"leaves 10 for training and 0"),
                                             (0.99, r"leaves 0 for training and 10")])
def test_train_val_split_errors(key, fraction, match):
    with pytest.raises(ValueError, match=match):
        train_val_split(np.zeros((10, 2)), np.zeros(10), fraction, key=key)
    with pytest.raises(ValueError, match=r"same number of examples.*\(10, 2\).*\(9,\)"):
        train_val_split(np.zeros((10, 2)), np.zeros(9), 0.5, key=key)


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
