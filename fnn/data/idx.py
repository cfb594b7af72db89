"""The strict IDX reader: ``read_idx`` and ``IDX_DTYPES``, the IDX type codes it knows.

IDX is the file format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/, "THE IDX
FILE FORMAT"). The reader accepts raw or gzip-compressed files and refuses anything that is not
exactly a header plus prod(dims) elements.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from fnn.core import fmt_shape

# Type code (third magic byte) -> element type; multi-byte types are big-endian in the file.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed (detected by its magic bytes, not its name) or raw.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32. The payload must hold exactly prod(dims) elements: nothing missing, nothing extra.

    Args:
      path: the file.

    Returns:
      An array of shape ``dims`` in native byte order (uint8 for image and label files).

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: corrupt gzip stream, bad magic, unknown type code, or a payload whose size
        is not prod(dims) * itemsize (the message gives both byte counts).
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"read_idx: {path} is not a valid gzip file ({e})") from None
    if len(raw) < 4:
        raise ValueError(f"read_idx: {path} is too short for an IDX header: expected at least 4 bytes, "
                         f"got {len(raw)}")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"read_idx: {path} is not an IDX file: expected magic bytes 00 00, "
                         f"got {raw[0]:02x} {raw[1]:02x}")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"read_idx: {path} has an unknown IDX type code: expected one of {known}, "
                         f"got 0x{code:02X}")
    if ndim == 0:
        raise ValueError(f"read_idx: {path}: expected at least 1 dimension, got 0")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"read_idx: {path} is truncated inside its header: expected {header} bytes "
                         f"for {ndim} dimensions, got {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "followed by trailing bytes"
        raise ValueError(f"read_idx: {path} is {what}: expected {expected} payload bytes for shape "
                         f"{fmt_shape(dims)} of {dtype.newbyteorder('=').name}, got {actual}")
    data = np.frombuffer(raw, dtype=dtype, count=math.prod(dims), offset=header)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(dims)

