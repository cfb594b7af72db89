"""Atomic, checksummed save and restore of any pytree of arrays (a TrainState, params, ...).

One file, no pickle (loading never runs code). Layout, integers little-endian::

    8 bytes    magic b"FNNCKPT1"
    8 bytes    header length H (uint64)
    H bytes    header, UTF-8 JSON: format version, tree structure (the treedef as text and
               every leaf's key path), each leaf's shape, dtype, byte offset and length (typed
               PRNG keys: their key_data's shape and the impl name), and the user's metadata
    payload    the leaves' raw little-endian bytes, one after another
    32 bytes   SHA-256 of everything above (header included, so a flipped bit anywhere is caught)

`save` writes a temporary file in the destination directory, flushes and fsyncs it,
``os.replace``s it onto the destination and fsyncs the directory: after a crash the path holds
either the previous checkpoint or the new one, never a mixture. A process killed mid-write may
leave a hidden ``.<name>.<pid>.<random>.tmp`` file next to it, which is safe to delete.

`restore` rebuilds the tree from `like` (a tree of the same structure: the current state, or
``jax.eval_shape`` of its init), so NamedTuples and any other registered containers come back
as the caller's own types, and every leaf is checked against `like`'s shape and dtype.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn.core import Layer, fmt_shape

MAGIC = b"FNNCKPT1"
VERSION = 1
_PREFIX = len(MAGIC) + 8
_DIGEST = 32  # bytes of SHA-256


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _describe(shape, dtype) -> str:
    return f"{fmt_shape(shape)} {dtype}"


def _to_host(where: str, leaf: Any) -> tuple[np.ndarray, dict]:
    """One leaf as a contiguous little-endian host array, and its header entry."""
    entry: dict[str, Any] = {}
    if _is_key(leaf):
        entry["shape"] = list(leaf.shape)
        entry["key_impl"] = str(jax.random.key_impl(leaf))
        entry["key_dtype"] = str(leaf.dtype)  # "key<fry>": comparable with a ShapeDtypeStruct's
        leaf = jax.random.key_data(leaf)
    arr = np.asarray(jax.device_get(leaf))
    if arr.dtype.kind in "OUS" or (arr.dtype.kind == "V" and arr.dtype.name.startswith("void")):
        raise ValueError(f"save: leaf {where} is not a numeric array: got {type(leaf).__name__} "
                         f"of dtype {arr.dtype}")
    if arr.dtype.itemsize > 1:
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        arr = arr.copy(order="C")
    entry.setdefault("shape", list(arr.shape))
    entry.update(dtype=arr.dtype.name, data_shape=list(arr.shape), nbytes=arr.nbytes)
    return arr, entry


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms where directories cannot be opened (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(path: str | os.PathLike, tree: Any, *, metadata: dict | None = None) -> None:
    """Write `tree` (any pytree of arrays, typed PRNG keys included) to `path` atomically.

    Args:
      path: destination file; its parent directories are created. An existing file is
        replaced only once the new one is completely on disk.
      tree: a pytree whose leaves are arrays (JAX or NumPy), NumPy or Python scalars, or
        typed PRNG keys (``jax.random.key``), stored as their key_data and impl name.
      metadata: a JSON-serializable dict (epoch, metrics, configuration), read back with
        `read_metadata`. JSON turns tuples into lists.

    Raises:
      ValueError: a leaf is not numeric, or metadata is not a JSON-serializable dict.
    """
    path = Path(path)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValueError(f"save: metadata must be a dict, got {type(metadata).__name__}")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    arrays, entries, offset = [], [], 0
    for key_path, leaf in leaves:
        where = jax.tree_util.keystr(key_path)
        arr, entry = _to_host(where, leaf)
        entry.update(path=where, offset=offset)
        offset += entry["nbytes"]
        arrays.append(arr)
        entries.append(entry)
    header = {"format": "fnn.checkpoint", "version": VERSION, "treedef": str(treedef),
              "leaves": entries, "payload_bytes": offset, "metadata": metadata}
    try:
        header_bytes = json.dumps(header).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"save: metadata must be JSON-serializable: {e}") from None

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like open()
    try:
        with os.fdopen(fd, "wb") as f:
            digest = hashlib.sha256()

            def write(chunk) -> None:
                f.write(chunk)
                digest.update(chunk)

            write(MAGIC)
            write(struct.pack("<Q", len(header_bytes)))
            write(header_bytes)
            for arr in arrays:
                write(memoryview(arr.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]  # numpy arrays are buffers (the 3.10 stubs lack __buffer__)
            f.write(digest.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _parse_header(raw: bytes) -> dict | None:
    """The header of `raw`, or None if it cannot be decoded."""
    if len(raw) < _PREFIX:
        return None
    (length,) = struct.unpack("<Q", raw[len(MAGIC):_PREFIX])
    if _PREFIX + length > len(raw):
        return None
    try:
        header = json.loads(raw[_PREFIX:_PREFIX + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(header, dict) or not isinstance(header.get("payload_bytes"), int):
        return None
    header["_start"] = _PREFIX + length
    return header


def _read(path: str | os.PathLike) -> tuple[dict, memoryview]:
    """Verified header and payload of the checkpoint at `path`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"restore: no checkpoint at {path} (file not found)") from None
    if len(raw) >= len(MAGIC) and raw[:len(MAGIC)] != MAGIC:
        raise ValueError(f"restore: {path} is not an fnn checkpoint: expected magic {MAGIC!r}, "
                         f"got {raw[:len(MAGIC)]!r}")
    header = _parse_header(raw)
    intact = len(raw) >= _PREFIX + _DIGEST and hashlib.sha256(raw[:-_DIGEST]).digest() == raw[-_DIGEST:]
    expected = header["_start"] + header["payload_bytes"] + _DIGEST if header is not None else None
    if not intact or header is None or len(raw) != expected:
        if expected is not None and len(raw) < expected:
            raise ValueError(f"restore: {path} is truncated: expected {expected} bytes, got {len(raw)}")
        if header is None and len(raw) < _PREFIX + _DIGEST:
            raise ValueError(f"restore: {path} is truncated: {len(raw)} bytes is too short for a checkpoint")
        raise ValueError(f"restore: {path} is corrupt: SHA-256 checksum mismatch "
                         f"(the file was damaged after it was written)")
    if header.get("format") != "fnn.checkpoint" or header.get("version", 0) > VERSION:
        raise ValueError(f"restore: {path}: expected an fnn checkpoint of version <= {VERSION}, "
                         f"got format {header.get('format')!r} version {header.get('version')!r}")
    return header, memoryview(raw)[header["_start"]:header["_start"] + header["payload_bytes"]]


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata dict saved with the checkpoint (after the same checks as `restore`)."""
    header, _ = _read(path)
    return header["metadata"]


def _restore_leaf(path: Path, entry: dict, like_leaf: Any, payload: memoryview) -> Any:
    where = entry["path"]
    stored_shape = tuple(entry["shape"])
    like_key = _is_key(like_leaf)
    if like_key != ("key_impl" in entry):
        want = "a typed PRNG key" if like_key else "an array"
        got = "a typed PRNG key" if "key_impl" in entry else "an array"
        raise ValueError(f"restore: {path}: leaf {where} expected {want}, got {got}")
    python_scalar = (isinstance(like_leaf, (bool, int, float, complex))
                     and not isinstance(like_leaf, np.generic))  # np.float64 subclasses float
    if python_scalar:  # Python scalars come back as such
        like_shape, like_dtype = (), None
    else:
        like_shape = tuple(like_leaf.shape)
        like_dtype = None if like_key else jnp.dtype(like_leaf.dtype)
    stored_dtype = jnp.dtype(entry["dtype"])
    if like_key:
        if stored_shape != like_shape or entry["key_dtype"] != str(like_leaf.dtype):
            raise ValueError(f"restore: {path}: leaf {where} expected shape "
                             f"{_describe(like_shape, like_leaf.dtype)}, "
                             f"got {_describe(stored_shape, entry['key_dtype'])}")
    elif stored_shape != like_shape or (like_dtype is not None and stored_dtype != like_dtype):
        raise ValueError(f"restore: {path}: leaf {where} expected shape "
                         f"{_describe(like_shape, like_dtype or 'scalar')}, "
                         f"got {_describe(stored_shape, stored_dtype)}")
    count = int(np.prod(entry["data_shape"], dtype=np.int64))
    arr = np.frombuffer(payload, dtype=stored_dtype.newbyteorder("<") if stored_dtype.itemsize > 1
                        else stored_dtype, count=count, offset=entry["offset"])
    arr = arr.astype(stored_dtype, copy=True).reshape(entry["data_shape"])
    if like_key:
        value = jax.random.wrap_key_data(arr, impl=entry["key_impl"])
        return jax.device_put(value, getattr(like_leaf, "sharding", None))
    if python_scalar:
        return type(like_leaf)(arr.item())
    if isinstance(like_leaf, (np.ndarray, np.generic)):
        return arr if isinstance(like_leaf, np.ndarray) else arr[()]
    sharding = getattr(like_leaf, "sharding", None)
    return jax.device_put(arr, sharding) if sharding is not None else jnp.asarray(arr)


def restore(path: str | os.PathLike, like: Any) -> Any:
    """Read a checkpoint written by `save` into a tree shaped like `like`.

    Args:
      path: the checkpoint file.
      like: a pytree with the saved structure; its leaves may be arrays, ``jax.ShapeDtypeStruct``
        (``jax.eval_shape(init, ...)``) or typed PRNG keys. Containers (NamedTuples, dicts,
        custom nodes) are rebuilt from `like`, so they are the caller's types.

    Returns:
      A pytree with `like`'s structure. Leaves match `like`'s kind: NumPy in, NumPy out; JAX
      arrays are placed with `like`'s sharding; ShapeDtypeStructs give JAX arrays on the default
      device; typed PRNG keys are rebuilt with ``jax.random.wrap_key_data``.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: truncated or corrupt file (SHA-256 mismatch), a tree structure different from
        `like`'s, or a leaf whose shape or dtype differs (the message names the leaf path).
    """
    path = Path(path)
    header, payload = _read(path)
    return _restore_from(path, header, payload, like)


def _under(path: str, prefix: str) -> bool:
    return path.startswith(prefix) and path[len(prefix):len(prefix) + 1] in ("", "[", ".")


def _restore_from(path: Path, header: dict, payload: memoryview, like: Any, prefix: str | None = None) -> Any:
    """`like` filled from a read checkpoint; with `prefix` (a key path such as
    ``"['train_state']"``), from the stored leaves under ``prefix + p`` for each top-level
    entry ``p`` of like (``.params``, ``.state``), which must match like's leaves one for one
    (the stored treedef covers the whole file, so leaf paths, shapes and dtypes are compared)."""
    like_leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    entries = header["leaves"]
    if prefix is not None:
        tops = [jax.tree_util.keystr((k,)) for k in _top_keys(like)]
        entries = [{**e, "path": e["path"][len(prefix):]} for e in entries
                   if any(_under(e["path"], prefix + t) for t in tops)]
    stored_paths = [e["path"] for e in entries]
    like_paths = [jax.tree_util.keystr(p) for p, _ in like_leaves]
    if stored_paths != like_paths or (prefix is None and header["treedef"] != str(treedef)):
        missing = [p for p in like_paths if p not in stored_paths]
        extra = [p for p in stored_paths if p not in like_paths]
        detail = "".join([f"; leaves missing from the file: {missing[:5]}" if missing else "",
                          f"; leaves in the file but not in like: {extra[:5]}" if extra else ""])
        got = header["treedef"] if prefix is None else f"the leaves under {prefix} of {header['treedef']}"
        raise ValueError(f"restore: {path}: tree structure does not match: expected {treedef}, got {got}{detail}")
    leaves = [_restore_leaf(path, entry, leaf, payload)
              for entry, (_, leaf) in zip(entries, like_leaves, strict=True)]
    return jax.tree.unflatten(treedef, leaves)


# ----------------------------------------------------------------------------------------
# Parameters only: inference without the optimizer

_TRAIN_STATE = "['train_state']"  # where fnn.train.Checkpoint keeps the TrainState


class _ParamsState(NamedTuple):
    params: Any
    state: Any


def _top_keys(like: Any) -> list:
    """The first key of each top-level entry of a NamedTuple (attributes) or dict."""
    if isinstance(like, tuple) and hasattr(like, "_fields"):
        return [jax.tree_util.GetAttrKey(f) for f in like._fields]
    return [jax.tree_util.DictKey(k) for k in like]


def save_params(path: str | os.PathLike, params: Any, state: Any, *, metadata: dict | None = None) -> None:
    """Write a model's `params` and `state` (no optimizer state, no key) to `path` with `save`.

    The file holds the tree ``{"params": params, "state": state}``; `load_params` reads it
    back given the model. Put what is needed to rebuild the model and its input pipeline in
    `metadata` (``fnn train`` stores ``model``, ``input_shape``, ``class_names`` and the
    ``standardizer``'s statistics there).

    Args:
      path: destination file (``.fnn`` by convention), written atomically.
      params, state: e.g. ``ts.params, ts.state`` of a trained ``TrainState``.
      metadata: a JSON-serializable dict, read back with `read_metadata`.
    """
    save(path, {"params": params, "state": state}, metadata=metadata)


def load_params(path: str | os.PathLike, model: Layer, input_shape: Sequence[int] | None = None) -> tuple[Any, Any]:
    """``(params, state)`` of `model` from a `save_params` file or a full training checkpoint.

    Args:
      path: a file written by `save_params` (``fnn train``'s ``model.fnn``), or by
        ``fnn.train.Checkpoint`` (``checkpoint.fnn``: its TrainState's params and state are
        read, the optimizer state is skipped).
      model: the Layer the parameters belong to; its ``init`` gives the expected tree (through
        ``jax.eval_shape``: nothing is computed).
      input_shape: the shape of one example, without the batch axis; by default the file's
        ``metadata["input_shape"]``.

    Returns:
      ``(params, state)``: JAX arrays bitwise equal to those saved, in the model's structure.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: a damaged file, no `input_shape` given or stored, or parameters that do not
        belong to `model` at `input_shape` (the message names the leaf and both shapes).
    """
    path = Path(path)
    header, payload = _read(path)
    if input_shape is None:
        input_shape = header["metadata"].get("input_shape")
        if input_shape is None:
            raise ValueError(f"load_params: {path} stores no input_shape in its metadata; pass "
                             f"input_shape=, the shape of one example (e.g. (28, 28, 1))")
    input_shape = tuple(int(d) for d in input_shape)
    _, params, state = jax.eval_shape(lambda key: model.init(key, input_shape), jax.random.key(0))
    full = any(_under(e["path"], _TRAIN_STATE) for e in header["leaves"]) or "'train_state'" in header["treedef"]
    try:
        if full:  # a TrainState's fields are attributes: .params, .state
            out = _restore_from(path, header, payload, _ParamsState(params, state), prefix=_TRAIN_STATE)
        else:
            out = _ParamsState(**_restore_from(path, header, payload, {"params": params, "state": state}))
    except ValueError as e:
        raise ValueError(f"load_params: {path} does not hold the parameters of {model.name} for "
                         f"input_shape {fmt_shape(input_shape)}: {e}") from None
    return out.params, out.state


def save_npz(path: str | os.PathLike, params: Any, state: Any = None) -> Path:
    """Export `params` (and `state`) to a NumPy ``.npz`` file keyed by their paths in the tree.

    Keys are the key paths joined by ``/``: ``params/0/w`` is ``params[0]["w"]``, ``state/3/mean``
    a BatchNorm running mean. Read it with ``numpy.load`` from any language with an npz reader;
    the tree structure itself is not stored (use `save_params` to load it back into fnn).

    Returns:
      The path written.

    Raises:
      ValueError: a leaf is not a numeric array.
    """
    path = Path(path)
    tree = {"params": params} if state is None else {"params": params, "state": state}
    arrays: dict[str, Any] = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        where = jax.tree_util.keystr(key_path, simple=True, separator="/")
        arrays[where] = _to_host(where, leaf)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object: numpy would append ".npz" to a path without it
        np.savez(f, **arrays)
    return path
