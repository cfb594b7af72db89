"""fnn.data.datasets: loading from a path, the search order, the download (MD5-checked, into the
cache), the fallback to the embedded sample and its warning, MNIST's clear error, the sample itself."""

import gzip
import hashlib
import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from idx_files import idx_bytes, write_dataset

import fnn
from fnn.data import datasets, load_fashion_mnist, load_mnist, load_sample

REAL = Path("/usr/share/datasets/fashion-mnist")
SAMPLE = Path(fnn.__file__).parent / "_sample" / "fashion_mnist_sample.npz"


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No FNN_DATA, an empty HOME and an empty system directory."""
    monkeypatch.delenv("FNN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIR", tmp_path / "system")
    return tmp_path


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
    spec = datasets._SPECS["fashion-mnist"]
    monkeypatch.setitem(datasets._SPECS, "fashion-mnist",
                        spec._replace(md5={k: hashlib.md5(v).hexdigest() for k, v in files.items()}))
    calls = []
    monkeypatch.setattr(datasets.urllib.request, "urlopen", fake_urlopen(files, calls))
    ds = load_fashion_mnist(verbose=False)
    cache = nowhere / "home" / ".cache" / "fnn" / "fashion-mnist"
    assert ds.source == str(cache) and len(calls) == 4
    assert all(t == datasets.DOWNLOAD_TIMEOUT and t <= 10 for _, t in calls)
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)
    np.testing.assert_array_equal(ds.train[1], written["train"][1])


def test_download_checksum_mismatch(nowhere, monkeypatch):
    files = {name: b"not the real file" for name in datasets._SPECS["fashion-mnist"].md5}
    monkeypatch.setattr(datasets.urllib.request, "urlopen", fake_urlopen(files, []))
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

    monkeypatch.setattr(datasets.urllib.request, "urlopen", unreachable)
    assert load_fashion_mnist(verbose=False).is_sample
    assert len(calls) == len(datasets._SPECS["fashion-mnist"].mirrors)
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
    sample = SAMPLE
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
    with np.load(SAMPLE) as z:
        np.testing.assert_array_equal(z["x_train"], x_train[z["train_indices"], ..., 0])
        np.testing.assert_array_equal(z["y_test"], y_test[z["test_indices"]])

