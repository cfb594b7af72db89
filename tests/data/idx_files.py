"""IDX files written by hand for the tests of fnn.data (imported by tests/data/test_*.py)."""

import gzip
import struct

import numpy as np

from fnn.data import datasets

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
        images, label_file = datasets.FILES[split]
        for stem, arr in ((images, x), (label_file, y)):
            raw = idx_bytes(arr)
            (directory / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(raw) if gz else raw)
        arrays[split] = (x, y)
    return arrays
