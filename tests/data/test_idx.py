"""fnn.data.idx: read_idx round trips every IDX type, raw or gzip (by magic bytes), and refuses
truncated, padded, mislabelled or corrupt files with the byte counts in the message."""

import gzip

import numpy as np
import pytest
from idx_files import idx_bytes

from fnn.data import read_idx


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
