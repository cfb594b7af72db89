"""Data sets: ``Dataset``, the Fashion-MNIST and MNIST specs, where files are searched, the download,
and the loaders ``load_fashion_mnist``, ``load_mnist`` and ``load_sample``.

Loaders search, in order: the ``path`` argument, ``$FNN_DATA``, ``~/.cache/fnn/<name>``,
``SYSTEM_DATA_DIR/<name>`` (``/usr/share/datasets``, Debian's ``dataset-fashion-mnist``
package), then download into the cache (MD5-checked), and, for Fashion-MNIST only, fall back to
the small sample embedded in the package (``fnn/_sample/``) with a loud warning on stderr.
``SYSTEM_DATA_DIR`` and ``DOWNLOAD_TIMEOUT`` are read from this module at each call, so tests
(and unusual installs) can set ``fnn.data.datasets.SYSTEM_DATA_DIR``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fnn.core import check_choice, fmt_shape
from fnn.data.idx import read_idx


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

