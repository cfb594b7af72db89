"""fnn.data, the package: every public name the single module fnn/data.py had (before the split
into idx, datasets, preprocess and batching) is still importable as ``fnn.data.X``, and nothing else
public is added. Names that module merely imported (``Path``, ``NamedTuple``, ``check_choice``, ...)
were never its API and are not kept."""

import types

import fnn.data

# dir(fnn.data) of fnn/data.py, less private names, imported modules and names imported from elsewhere.
BEFORE = [
    "Batches", "DOWNLOAD_TIMEOUT", "Dataset", "EPS", "FILES", "IDX_DTYPES", "IMAGE_SHAPE", "NUM_CLASSES",
    "SYSTEM_DATA_DIR", "Standardizer", "cache_dir", "epoch_batches", "epoch_indices", "iterate_batches",
    "load_fashion_mnist", "load_mnist", "load_sample", "read_idx", "to_float", "train_val_split",
]
SUBMODULES = {"idx", "datasets", "preprocess", "batching"}


def public_names(module):
    return {n for n in dir(module) if not n.startswith("_") and not isinstance(getattr(module, n), types.ModuleType)}


def test_public_names_unchanged():
    assert public_names(fnn.data) == set(BEFORE)
    assert sorted(fnn.data.__all__) == sorted(BEFORE)
    for name in BEFORE:
        exec(f"from fnn.data import {name}", {})


def test_only_reexports():
    """Each name is the object of a submodule (the one that defines it, for functions and classes)."""
    modules = {n for n in dir(fnn.data) if isinstance(getattr(fnn.data, n), types.ModuleType)}
    assert modules == SUBMODULES
    for name in BEFORE:
        obj = getattr(fnn.data, name)
        assert any(getattr(getattr(fnn.data, m), name, None) is obj for m in SUBMODULES), name
        if isinstance(obj, (type, types.FunctionType)):
            assert obj.__module__.rpartition(".")[2] in SUBMODULES and obj.__module__.startswith("fnn.data."), name
