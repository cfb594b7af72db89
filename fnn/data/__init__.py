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

Modules: ``idx`` (read_idx), ``datasets`` (Dataset, where files are searched, the download, the
loaders and the embedded sample; set ``fnn.data.datasets.SYSTEM_DATA_DIR`` to move the system
directory), ``preprocess`` (to_float, Standardizer, train_val_split) and ``batching``
(epoch_indices, epoch_batches, iterate_batches). This package only re-exports their public names.
"""

from fnn.data.batching import Batches, epoch_batches, epoch_indices, iterate_batches
from fnn.data.datasets import (
    DOWNLOAD_TIMEOUT,
    FILES,
    IMAGE_SHAPE,
    NUM_CLASSES,
    SYSTEM_DATA_DIR,
    Dataset,
    cache_dir,
    load_fashion_mnist,
    load_mnist,
    load_sample,
)
from fnn.data.idx import IDX_DTYPES, read_idx
from fnn.data.preprocess import EPS, Standardizer, to_float, train_val_split

__all__ = [
    "read_idx", "IDX_DTYPES",
    "Dataset", "load_fashion_mnist", "load_mnist", "load_sample", "cache_dir", "FILES", "NUM_CLASSES",
    "IMAGE_SHAPE", "SYSTEM_DATA_DIR", "DOWNLOAD_TIMEOUT",
    "to_float", "Standardizer", "EPS", "train_val_split",
    "Batches", "epoch_indices", "epoch_batches", "iterate_batches",
]
