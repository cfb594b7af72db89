"""Data: a strict IDX reader, Fashion-MNIST/MNIST loaders, the embedded sample, preprocessing,
splits and batching.

Typical use::

    ds = load_fashion_mnist()                    # Dataset(train, test, source, name)
    (x_train, y_train), (x_test, y_test) = ds.train, ds.test
    (x_train, y_train), (x_val, y_val) = train_val_split(x_train, y_train, 0.1, key=key_split)
    scaler = Standardizer.fit(x_train)           # statistics from the training part only
    x_train, x_val, x_test = scaler.apply(x_train), scaler.apply(x_val), scaler.apply(x_test)
    batches = epoch_batches(x_train, y_train, 128, key=key_epoch)   # (steps, 128, 28, 28, 1)

Loaders search, in order: the ``path`` argument, ``$FNN_DATA``, ``~/.cache/fnn/<name>``,
``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist`` package), then download
into the cache (MD5-checked), and, for Fashion-MNIST only, fall back to a small embedded
sample with a loud warning on stderr.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.resources
import math
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn._deprecation import key_keyword_only, warn_deprecated
from fnn.core import check_choice, check_finite, check_positive_int, check_range, fmt_shape

# ----------------------------------------------------------------------------------------
# IDX files (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")

# Type code (third magic byte) -> element type; multi-byte types are big-endian in the file.
IDX_DTYPES = {
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


# ----------------------------------------------------------------------------------------
# Data sets: where they are, where they come from


class Dataset(NamedTuple):
    """A loaded data set.

    Unpack it by name, ``(x_train, y_train), (x_test, y_test) = ds.train, ds.test``, or as
    the 4-tuple ``train, test, source, name = ds``.

    Attributes:
      train: ``(x, y)`` with x of shape (N, 28, 28, 1) uint8 and y of shape (N,) int32.
      test: ``(x, y)``, the same for the test set.
      source: the directory the IDX files were read from, or ``"sample"`` for the embedded
        sample (see ``is_sample``).
      name: ``"fashion-mnist"`` or ``"mnist"``.
    """

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    source: str
    name: str

    @property
    def is_sample(self) -> bool:
        """True when this is the small embedded sample, not the full data set."""
        return self.source == "sample"


class _Spec(NamedTuple):
    title: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]           # MD5 of each .gz file as served by the mirrors
    apt_package: str | None
    sample: str | None            # file in fnn/_sample/


# The four files of every MNIST-format data set, as (images, labels) for train and test.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)

_SPECS = {
    # MD5s published in https://github.com/zalandoresearch/fashion-mnist (README, "Get the Data").
    # Debian's dataset-fashion-mnist package recompresses the files, so its .gz MD5s differ;
    # that does not matter: files found on disk are validated by content, not by MD5.
    "fashion-mnist": _Spec(
        title="Fashion-MNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        apt_package="dataset-fashion-mnist",
        sample="fashion_mnist_sample.npz",
    ),
    # MD5s of the original files from http://yann.lecun.com/exdb/mnist/ (the same bytes are
    # served by PyTorch's mirror, which is tried when the original site refuses).
    "mnist": _Spec(
        title="MNIST",
        mirrors=("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afc8b62a52d9c1d73c3e9c",
        },
        apt_package=None,
        sample=None,
    ),
}

# Module-level so tests (and unusual installs) can point them elsewhere.
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
DOWNLOAD_TIMEOUT = 10.0  # seconds, per connection attempt and per read


def cache_dir(name: str) -> Path:
    """Where downloads go: ``~/.cache/fnn/<name>``."""
    return Path.home() / ".cache" / "fnn" / name


def _find_files(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in `directory` (``.gz`` or raw), or None if any is missing."""
    found = {}
    for stems in FILES.values():
        for stem in stems:
            for candidate in (directory / f"{stem}.gz", directory / stem):
                if candidate.is_file():
                    found[stem] = candidate
                    break
            else:
                return None
    return found


def _candidate_dirs(name: str) -> list[Path]:
    dirs = []
    env = os.environ.get("FNN_DATA")
    if env:
        dirs += [Path(env) / name, Path(env)]
    dirs += [cache_dir(name), SYSTEM_DATA_DIR / name]
    return dirs


def _load_split(files: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one split: images (N, 28, 28, 1) uint8, labels (N,) int32."""
    images_file, labels_file = (files[stem] for stem in FILES[split])
    x, y = read_idx(images_file), read_idx(labels_file)
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"load: {images_file}: expected uint8 images of shape "
                         f"{fmt_shape((None, *IMAGE_SHAPE))}, got {x.dtype} of shape {fmt_shape(x.shape)}")
    if y.dtype != np.uint8 or y.ndim != 1:
        raise ValueError(f"load: {labels_file}: expected uint8 labels of shape (N,), "
                         f"got {y.dtype} of shape {fmt_shape(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"load: image and label counts differ: {images_file} holds {len(x)} images, "
                         f"{labels_file} holds {len(y)} labels")
    _check_labels(str(labels_file), y)
    return x[..., None], y.astype(np.int32)


def _check_labels(where: str, y: np.ndarray) -> None:
    bad = np.flatnonzero((y < 0) | (y >= NUM_CLASSES))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"load: {where}: expected labels in [0, {NUM_CLASSES}), got {y[i]} at index {i} "
                         f"({bad.size} labels out of range)")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, md5: str, *, verbose: bool) -> None:
    """Download `url` to `dest` through a temporary file renamed only once its MD5 matches.

    Network errors (``OSError``, which includes ``URLError`` and timeouts) propagate to the
    caller; an MD5 mismatch raises ValueError and removes the temporary file.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp:
            total = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
            bar = _progress_bar(dest.name, int(total) if total else None, verbose)
            with bar if bar is not None else contextlib.nullcontext():
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    out.write(chunk)
                    h.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        if h.hexdigest() != md5:
            raise ValueError(f"download: {url}: checksum mismatch, expected MD5 {md5}, got {h.hexdigest()}; "
                             f"the download was discarded")
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _progress_bar(desc: str, total: int | None, verbose: bool):
    if not verbose:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        print(f"fnn: downloading {desc} ...", file=sys.stderr)
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr, leave=False)


def _try_download(name: str, spec: _Spec, *, verbose: bool) -> dict[str, Path] | None:
    """Fetch the four files into the cache; None when no mirror can be reached."""
    target = cache_dir(name)
    for mirror in spec.mirrors:
        try:
            for fname, md5 in spec.md5.items():
                if not (target / fname).is_file():
                    _download(mirror + fname, target / fname, md5, verbose=verbose)
        except OSError as e:  # URLError, HTTPError, timeouts, unwritable cache: try the next mirror
            if verbose:
                print(f"fnn: could not download {spec.title} from {mirror}: {e}", file=sys.stderr)
            continue
        return _find_files(target)
    return None


def _sample_warning(spec: _Spec, searched: list[Path], download: bool, x_train: np.ndarray,
                    x_test: np.ndarray) -> str:
    bar = "=" * 78
    places = "\n".join(f"      {p}" for p in searched)
    return (
        f"{bar}\n"
        f"WARNING: fnn could not find {spec.title}; using the SMALL EMBEDDED SAMPLE instead\n"
        f"({len(x_train)} train + {len(x_test)} test images, class-balanced). Results on it are\n"
        f"NOT comparable to results on the full data set (60000 train + 10000 test).\n"
        f"  Searched:\n{places}\n"
        f"  and downloading from {', '.join(spec.mirrors)} "
        f"{'failed' if download else 'was disabled (download=False)'}.\n"
        f"  To get the full data set, either:\n"
        f"    sudo apt-get install {spec.apt_package}      # Debian/Ubuntu, /usr/share/datasets\n"
        f"    export FNN_DATA=/dir/with/the/four/idx/files    # train-images-idx3-ubyte.gz, ...\n"
        f"  or allow the download (load_{spec.title.lower().replace('-', '_')}(download=True)) "
        f"with network access.\n"
        f"{bar}"
    )


def _load(name: str, path, *, download: bool, verbose: bool) -> Dataset:
    spec = _SPECS[name]
    if path is not None:
        files = _find_files(Path(path))
        if files is None:
            names = ", ".join(s for stems in FILES.values() for s in stems)
            raise FileNotFoundError(f"load: {path} does not hold the four {spec.title} IDX files "
                                    f"({names}, .gz or raw)")
        searched, source = [Path(path)], Path(path)
    else:
        searched, files, source = _candidate_dirs(name), None, None
        for directory in searched:
            files = _find_files(directory)
            if files is not None:
                source = directory
                break
        if files is None and download:
            files = _try_download(name, spec, verbose=verbose)
            source = cache_dir(name)
    if files is None:
        if spec.sample is None:
            places = "\n".join(f"  {p}" for p in searched)
            raise FileNotFoundError(
                f"load: {spec.title} not found. Searched:\n{places}\n"
                f"and downloading from {', '.join(spec.mirrors)} "
                f"{'failed' if download else 'was disabled (download=False)'}.\n"
                f"Put the four files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in {cache_dir(name)}, "
                f"or in a directory named by $FNN_DATA, or pass path=...")
        ds = load_sample(name)
        print(_sample_warning(spec, searched, download, ds.train[0], ds.test[0]), file=sys.stderr)
        return ds
    if verbose:
        print(f"fnn: loading {spec.title} from {source}", file=sys.stderr)
    return Dataset(_load_split(files, "train"), _load_split(files, "test"), str(source), name)


def load_fashion_mnist(path: str | os.PathLike | None = None, *, download: bool = True,
                       verbose: bool = True) -> Dataset:
    """Load Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 60000 train and 10000 test images.

    Looks in `path` if given (and only there), else in ``$FNN_DATA/fashion-mnist``,
    ``$FNN_DATA``, ``~/.cache/fnn/fashion-mnist`` and ``/usr/share/datasets/fashion-mnist``;
    then downloads into the cache (each file MD5-checked, ~10 s network timeout) if
    `download`; then falls back to the embedded sample (3000 train + 1000 test images),
    printing a warning to stderr. ``Dataset.source`` says which one was used.

    Args:
      path: a directory holding the four IDX files (``.gz`` or raw), standard names.
      download: allow downloading from the official mirror.
      verbose: print where the data came from, and a progress bar while downloading.

    Returns:
      ``Dataset(train=(x, y), test=(x, y), source, name)``; x: (N, 28, 28, 1) uint8,
      y: (N,) int32 in [0, 10).

    Raises:
      FileNotFoundError: `path` lacks one of the files.
      ValueError: a file is corrupt, image and label counts differ, a label is outside
        [0, 10), or a download does not match its MD5.
    """
    return _load("fashion-mnist", path, download=download, verbose=verbose)


def load_mnist(path: str | os.PathLike | None = None, *, download: bool = True,
               verbose: bool = True) -> Dataset:
    """Load MNIST (LeCun et al., 1998): 60000 train and 10000 test images of digits.

    Same search order as `load_fashion_mnist` with ``mnist`` as the directory name. There is
    no embedded MNIST sample: when nothing is found, FileNotFoundError explains where to put
    the files.

    Returns:
      ``Dataset(train=(x, y), test=(x, y), source, name)``; x: (N, 28, 28, 1) uint8,
      y: (N,) int32 in [0, 10).
    """
    return _load("mnist", path, download=download, verbose=verbose)


def load_sample(name: str = "fashion-mnist") -> Dataset:
    """The embedded sample: a deterministic, class-balanced subset (see scripts/make_sample.py).

    Fashion-MNIST: 3000 train images (300 per class) and 1000 test images (100 per class).

    Returns:
      ``Dataset`` with ``source == "sample"``; x: (N, 28, 28, 1) uint8, y: (N,) int32.
    """
    check_choice("load_sample", "name", name, list(_SPECS))
    spec = _SPECS[name]
    if spec.sample is None:
        raise FileNotFoundError(f"load_sample: fnn embeds no {spec.title} sample; "
                                f"available: {[n for n, s in _SPECS.items() if s.sample]}")
    resource = importlib.resources.files("fnn") / "_sample" / spec.sample
    with resource.open("rb") as f, np.load(f, allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    for split in ("train", "test"):
        _check_labels(f"sample {spec.sample} y_{split}", arrays[f"y_{split}"])
    return Dataset(
        (arrays["x_train"][..., None], arrays["y_train"].astype(np.int32)),
        (arrays["x_test"][..., None], arrays["y_test"].astype(np.int32)),
        "sample", name)


# ----------------------------------------------------------------------------------------
# Preprocessing

EPS = 1e-7


def to_float(x: np.ndarray | jax.Array) -> jax.Array:
    """uint8 images -> float32 in [0, 1] (x / 255). Any shape."""
    if np.dtype(x.dtype) != np.uint8:
        raise ValueError(f"to_float: expected uint8 x, got {x.dtype} of shape {fmt_shape(np.shape(x))}")
    return jnp.asarray(x).astype(jnp.float32) / 255.0


class Standardizer(NamedTuple):
    """Per-feature standardization ``(x - mean) / (std + eps)``, a pytree of two float32 arrays.

    Fit it on the training set only and apply it to train, validation and test alike.
    ``std`` is the unbiased (ddof=1) standard deviation by default, as in the course notes.
    Where the std is zero (constant pixels, such as image borders) it is stored as 1, so
    those features become ``x - mean`` (zero on the training set) instead of NaN.

    Attributes:
      mean: statistics shape: ``x.shape[1:]`` (per="pixel"), ``(C,)`` ("channel") or ``()``.
      std: the same shape; already guarded (1 where the data were constant).
    """

    mean: jax.Array
    std: jax.Array

    @classmethod
    def fit(cls, x: np.ndarray | jax.Array, *, per: str = "pixel", ddof: int = 1) -> Standardizer:
        """Compute mean and std on the host in float64 (two passes, in chunks).

        Args:
          x: (N, ...) training data, any numeric dtype (uint8 images are fine).
          per: "pixel" (statistics over N, shape x.shape[1:]), "channel" (over all axes but
            the last, shape (C,)) or "global" (over everything, shape ()).
          ddof: delta degrees of freedom, divisor ``count - ddof`` (1: unbiased, 0: biased).

        Raises:
          ValueError: bad `per`, too few values for `ddof`, NaN or Inf in x.
        """
        name = "Standardizer.fit"
        check_choice(name, "per", per, ("pixel", "channel", "global"))
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"{name}: expected non-empty x of shape (N, ...), got {fmt_shape(x.shape)}")
        if per == "pixel":
            stat_shape = x.shape[1:]
        elif per == "channel":
            if x.ndim < 2:
                raise ValueError(f"{name}: per='channel' expects x of shape (N, ..., C), "
                                 f"got {fmt_shape(x.shape)}")
            stat_shape = x.shape[-1:]
        else:
            stat_shape = ()
        rows = x.reshape(-1, math.prod(stat_shape))
        if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
            raise ValueError(f"{name}: ddof must be a non-negative int, got {ddof!r}")
        if len(rows) <= ddof:
            raise ValueError(f"{name}: ddof={ddof} needs more than {ddof} values per statistic, "
                             f"got {len(rows)} (x of shape {fmt_shape(x.shape)}, per={per!r})")
        # Chunks bound the float64 temporaries to a few MB whatever the size of x.
        step = max(1, (1 << 20) // rows.shape[1])
        total = np.zeros(rows.shape[1], np.float64)
        for i in range(0, len(rows), step):
            total += rows[i:i + step].sum(axis=0, dtype=np.float64)
        mean = total / len(rows)
        squares = np.zeros(rows.shape[1], np.float64)
        for i in range(0, len(rows), step):
            squares += ((rows[i:i + step].astype(np.float64) - mean) ** 2).sum(axis=0)
        std = np.sqrt(squares / (len(rows) - ddof))
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise ValueError(f"{name}: x of shape {fmt_shape(x.shape)} contains NaN or Inf")
        std = np.where(std <= EPS, 1.0, std)
        return cls(jnp.asarray(mean.reshape(stat_shape), jnp.float32),
                   jnp.asarray(std.reshape(stat_shape), jnp.float32))

    def apply(self, x: np.ndarray | jax.Array, *, eps: float = EPS) -> jax.Array:
        """x: (..., *mean.shape) -> float32 ``(x - mean) / (std + eps)`` of the same shape.

        Works under ``jax.jit``. Eagerly, a NaN or Inf in the result raises ValueError.
        """
        name = "Standardizer.apply"
        x = jnp.asarray(x)
        stat_shape = tuple(self.mean.shape)
        k = x.ndim - len(stat_shape)
        if k < 0 or tuple(x.shape[k:]) != stat_shape:
            raise ValueError(f"{name}: expected x of shape {fmt_shape((None, *stat_shape))} "
                             f"(statistics of shape {fmt_shape(stat_shape)}), got {fmt_shape(x.shape)}")
        lead = (1,) * k  # explicit, since rank promotion is refused
        y = (x.astype(jnp.float32) - self.mean.reshape(lead + stat_shape)) / (
            self.std.reshape(lead + stat_shape) + eps)
        check_finite(name, "the standardized x", y)
        return y


# ----------------------------------------------------------------------------------------
# Splits and batches


def _check_xy(name: str, x, y) -> int:
    nx, ny = np.shape(x), np.shape(y)
    if len(nx) == 0 or len(ny) == 0 or nx[0] != ny[0]:
        raise ValueError(f"{name}: x and y must have the same number of examples, "
                         f"got x of shape {fmt_shape(nx)} and y of shape {fmt_shape(ny)}")
    if nx[0] == 0:
        raise ValueError(f"{name}: got an empty data set, x of shape {fmt_shape(nx)}")
    return int(nx[0])


@key_keyword_only(0)
def train_val_split(x, y, val_fraction: float, *, key: jax.Array):
    """Split off a random validation set, deterministically for a given key.

    ``train_val_split(key, x, y, val_fraction)``, the key first, still works until 0.3 with a
    ``DeprecationWarning``.

    Args:
      x: (N, ...) inputs (NumPy or JAX; the parts keep that type).
      y: (N, ...) targets.
      val_fraction: in (0, 1); the validation set has round(N * val_fraction) examples.
      key: a PRNG key (keyword-only).

    Returns:
      ``((x_train, y_train), (x_val, y_val))``, disjoint, together all N examples.

    Raises:
      ValueError: x and y differ in N, val_fraction outside (0, 1), or an empty part.
    """
    name = "train_val_split"
    n = _check_xy(name, x, y)
    check_range(name, "val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False)
    n_val = int(round(n * float(val_fraction)))
    if n_val == 0 or n_val == n:
        raise ValueError(f"{name}: val_fraction={val_fraction} of N={n} examples leaves "
                         f"{n - n_val} for training and {n_val} for validation; both must be non-empty")
    perm = np.asarray(jax.random.permutation(key, n))
    val, train = perm[:n_val], perm[n_val:]
    return (x[train], y[train]), (x[val], y[val])


class Batches(NamedTuple):
    """One epoch of device-resident batches, ready for ``lax.scan`` over the first axis.

    Attributes:
      x: (steps, batch, ...) inputs.
      y: (steps, batch, ...) targets.
      mask: (steps, batch), 1 for real examples and 0 for padding; x's dtype when x is
        floating, else float32. All ones with remainder="drop".
    """

    x: jax.Array
    y: jax.Array
    mask: jax.Array


@key_keyword_only(0)
def epoch_indices(n: int, batch_size: int, *, key: jax.Array, remainder: str = "drop",
                  mask_dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """One epoch's shuffled example indices, cut into equal batches: what ``epoch_batches`` gathers.

    ``fit``'s fused epoch scans over these and gathers each batch inside the scan
    (``jnp.take(x, idx[i], axis=0)``), so no shuffled copy of the whole training set is made.
    The permutation, the remainder rule and the mask are exactly ``epoch_batches``'s.
    ``epoch_indices(key, n, batch_size)``, the key first, still works until 0.3 with a
    ``DeprecationWarning``.

    Args:
      n: the number of examples N (static).
      batch_size: examples per batch, at most N (static).
      key: a PRNG key (keyword-only).
      remainder: "drop" or "pad" (see ``epoch_batches``).
      mask_dtype: dtype of the mask.

    Returns:
      ``(idx, mask)``: idx (steps, batch_size) int32 indices into the N examples, mask
      (steps, batch_size) 1 for real examples and 0 for padding.
    """
    return _indices("epoch_indices", key, check_positive_int("epoch_indices", "n", n), batch_size, remainder,
                    mask_dtype)


def _indices(name: str, key, n: int, batch_size: int, remainder: str, mask_dtype):
    """epoch_indices with errors prefixed by `name` (the public function the caller called)."""
    check_choice(name, "remainder", remainder, ("drop", "pad"))
    batch_size = check_positive_int(name, "batch_size", batch_size)
    if batch_size > n:
        raise ValueError(f"{name}: batch_size={batch_size} is larger than the number of examples N={n}")
    perm = jax.random.permutation(key, n)
    if remainder == "drop":
        steps = n // batch_size
        idx = perm[: steps * batch_size]
        mask = jnp.ones((steps, batch_size), mask_dtype)
    else:
        steps = -(-n // batch_size)
        idx = jnp.concatenate([perm, perm[: steps * batch_size - n]])
        mask = (jnp.arange(steps * batch_size) < n).astype(mask_dtype).reshape(steps, batch_size)
    return idx.reshape(steps, batch_size).astype(jnp.int32), mask


@key_keyword_only(0)
def epoch_batches(x, y, batch_size: int, *, key: jax.Array, remainder: str = "drop") -> Batches:
    """Shuffle on the device with `key` and cut one epoch into equal batches.

    remainder="drop": ``steps = N // batch_size``; the last ``N % batch_size`` examples of
    the permutation are left out this epoch (each example appears at most once).
    remainder="pad": ``steps = ceil(N / batch_size)``; the last batch is filled up with the
    first examples of the permutation, marked 0 in ``mask`` (each example appears exactly once
    with mask 1). Weight per-example losses by ``mask`` and divide by ``mask.sum()``.

    This materializes a shuffled copy of x; ``epoch_indices`` gives the same batches as
    indices to gather one at a time (what ``fit`` does).

    Jit-able with `batch_size` and `remainder` static:
    ``jax.jit(epoch_batches, static_argnames=("batch_size", "remainder"))``.
    ``epoch_batches(key, x, y, batch_size)``, the key first, still works until 0.3 with a
    ``DeprecationWarning``.

    Args:
      x: (N, ...) inputs.
      y: (N, ...) targets.
      batch_size: examples per batch, at most N.
      key: a PRNG key (keyword-only).
      remainder: "drop" or "pad".

    Returns:
      ``Batches(x, y, mask)`` with x: (steps, batch_size, ...), y: (steps, batch_size, ...),
      mask: (steps, batch_size).

    Raises:
      ValueError: empty data, x and y differ in N, batch_size not positive or larger than N.
    """
    name = "epoch_batches"
    n = _check_xy(name, x, y)
    x, y = jnp.asarray(x), jnp.asarray(y)
    mask_dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    idx, mask = _indices(name, key, n, batch_size, remainder, mask_dtype)
    steps, batch_size = idx.shape
    xb = jnp.take(x, idx.reshape(-1), axis=0).reshape((steps, batch_size) + x.shape[1:])
    yb = jnp.take(y, idx.reshape(-1), axis=0).reshape((steps, batch_size) + y.shape[1:])
    return Batches(xb, yb, mask)


def iterate_batches(x, y, batch_size: int, *, key: jax.Array | None = None, shuffle: bool = True,
                    remainder: str = "keep",
                    drop_remainder: bool | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield host (NumPy) batches, for data that does not fit on the device.

    Arguments are checked when called, not at the first ``next``. ``remainder`` shares its
    vocabulary with ``epoch_batches``: "drop" leaves the last N % batch_size examples out;
    "keep" yields them as a last, smaller batch (host batches may differ in size, so there
    is no need for "pad" and its mask here).

    Args:
      x: (N, ...) inputs, anything indexable by an integer array (np.ndarray, np.memmap).
      y: (N, ...) targets.
      batch_size: examples per batch.
      key: PRNG key for the shuffle; required when `shuffle` is True.
      shuffle: visit examples in a random order (from `key`) instead of in order.
      remainder: "keep" (default) or "drop" the last, smaller batch.
      drop_remainder: deprecated (removed in 0.3): True is ``remainder="drop"``, False ``"keep"``.

    Yields:
      ``(x_batch, y_batch)`` of shapes (B, ...), B = batch_size except perhaps the last.
    """
    name = "iterate_batches"
    batch_size = check_positive_int(name, "batch_size", batch_size)
    n = _check_xy(name, x, y)
    if shuffle and key is None:
        raise ValueError(f"{name}: shuffle=True needs a PRNG key (pass key=jax.random.key(seed), "
                         f"or shuffle=False)")
    if drop_remainder is not None:
        warn_deprecated("iterate_batches(drop_remainder=...)", 'iterate_batches(remainder="drop" or "keep")')
        if remainder != "keep":
            raise ValueError(f"{name}: pass remainder={remainder!r} or the deprecated "
                             f"drop_remainder={drop_remainder!r}, not both")
        remainder = "drop" if drop_remainder else "keep"
    check_choice(name, "remainder", remainder, ("drop", "keep"))
    if remainder == "drop" and batch_size > n:
        raise ValueError(f"{name}: batch_size={batch_size} is larger than the number of examples N={n}, "
                         f"so remainder='drop' would yield no batch")
    order = np.asarray(jax.random.permutation(key, n)) if shuffle else np.arange(n)
    stop = n - n % batch_size if remainder == "drop" else n

    def batches():
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size]
            yield np.asarray(x[idx]), np.asarray(y[idx])

    return batches()
