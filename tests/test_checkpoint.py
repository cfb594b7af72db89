"""Tests for fnn.checkpoint: round trips, atomicity under SIGKILL, and clear errors on bad files."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import checkpoint
from fnn.checkpoint import read_metadata, restore, save

REPO = Path(__file__).resolve().parent.parent


class Moments(NamedTuple):
    count: jax.Array
    m: dict
    v: dict


class State(NamedTuple):
    params: tuple
    opt: Moments
    key: jax.Array
    flags: jax.Array


def make_state(seed=0):
    k = jax.random.key(seed)
    w = jax.random.normal(k, (3, 4), jnp.float32)
    params = ({"w": w, "b": jnp.arange(4, dtype=jnp.float32)},
              {"scale": jnp.linspace(0, 1, 5, dtype=jnp.float64), "idx": jnp.array([3, -1], jnp.int32)})
    opt = Moments(jnp.array(7, jnp.int32), {"w": w * 2}, {"w": w ** 2})
    return State(params, opt, jax.random.split(jax.random.fold_in(k, 1), 3),
                 jnp.array([True, False, True]))


def assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert y.dtype == x.dtype and y.shape == x.shape
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert np.asarray(y).dtype == np.asarray(x).dtype
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_round_trip_nested_tree(tmp_path):
    state = make_state()
    path = tmp_path / "ckpt" / "state.fnn"  # parent directories are created
    save(path, state, metadata={"epoch": 3, "val_loss": 0.25, "tags": ["a"]})
    got = restore(path, state)
    assert type(got) is State and type(got.opt) is Moments
    assert_same(state, got)
    # The key is usable and gives the same numbers as the original.
    np.testing.assert_array_equal(jax.random.uniform(got.key[0], (2,)),
                                  jax.random.uniform(state.key[0], (2,)))
    assert read_metadata(path) == {"epoch": 3, "val_loss": 0.25, "tags": ["a"]}
    assert [p.name for p in path.parent.iterdir()] == ["state.fnn"]  # no temporary file left


def test_restore_from_shapes_and_numpy(tmp_path):
    state = make_state(1)
    save(tmp_path / "s", state)
    got = restore(tmp_path / "s", jax.eval_shape(lambda: state))  # no real arrays needed
    assert_same(state, got)
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": 5, "x": 2.5, "z": np.float64(1.5),
            "rbg": jax.random.key(3, impl="rbg"), "none": None}
    save(tmp_path / "n", tree)
    got = restore(tmp_path / "n", tree)
    assert isinstance(got["a"], np.ndarray) and got["a"].flags.writeable
    np.testing.assert_array_equal(got["a"], tree["a"])
    assert got["n"] == 5 and type(got["n"]) is int and got["x"] == 2.5 and got["none"] is None
    assert got["z"] == 1.5 and isinstance(got["z"], np.float64)
    np.testing.assert_array_equal(jax.random.key_data(got["rbg"]), jax.random.key_data(tree["rbg"]))
    assert read_metadata(tmp_path / "n") == {}


def test_overwrite_replaces_whole_file(tmp_path):
    path = tmp_path / "c"
    save(path, {"a": jnp.zeros(1000)}, metadata={"v": 1})
    save(path, {"a": jnp.ones(3)}, metadata={"v": 2})
    assert read_metadata(path) == {"v": 2}
    np.testing.assert_array_equal(restore(path, {"a": jnp.zeros(3)})["a"], np.ones(3))


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from fnn import checkpoint
    path = sys.argv[1]
    tree = {"a": np.zeros(6_250_000), "b": np.zeros(8, np.int32)}  # 50 MB
    print("ready", flush=True)
    k = 1
    while True:
        k += 1
        tree["a"].fill(k)
        tree["b"].fill(k)
        checkpoint.save(path, tree, metadata={"k": k})
        print(k, flush=True)
""")


def test_sigkill_during_save_leaves_a_valid_checkpoint(tmp_path):
    """A writer killed at random moments never leaves a torn checkpoint behind."""
    path = tmp_path / "big.fnn"
    like = {"a": np.zeros(6_250_000), "b": np.zeros(8, np.int32)}
    save(path, {"a": np.full(6_250_000, 1.0), "b": np.full(8, 1, np.int32)}, metadata={"k": 1})
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu")
    interrupted = 0
    for delay in (0.35, 0.6, 0.9):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, env=env,
                                text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        done = [int(line) for line in out.split()]
        got = restore(path, like)  # loads: checksum and size verified
        k = read_metadata(path)["k"]
        # The last completed save, or the one whose rename had just happened when it was killed.
        assert k in ({done[-1], done[-1] + 1} if done else {1, 2})
        np.testing.assert_array_equal(got["a"], np.full(6_250_000, float(k)))
        np.testing.assert_array_equal(got["b"], np.full(8, k, np.int32))
        leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        interrupted += bool(leftovers)
        for p in leftovers:
            p.unlink()
        if interrupted:
            break
    assert interrupted, "no kill landed during a write; the test proved nothing"


def test_failure_mid_write_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "c"
    save(path, {"a": jnp.arange(3.0)}, metadata={"v": 1})

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save(path, {"a": jnp.zeros(3)}, metadata={"v": 2})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["c"]
    np.testing.assert_array_equal(restore(path, {"a": jnp.zeros(3)})["a"], [0.0, 1.0, 2.0])
    assert read_metadata(path) == {"v": 1}


# ---------------------------------------------------------------------------------------- bad files


@pytest.fixture
def saved(tmp_path):
    state = make_state()
    path = tmp_path / "state.fnn"
    save(path, state, metadata={"epoch": 1})
    return path, state


def test_truncated(saved):
    path, state = saved
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(ValueError, match=rf"state.fnn is truncated: expected {len(raw)} bytes, "
                                         rf"got {len(raw) - 100}"):
        restore(path, state)
    path.write_bytes(raw[:12])
    with pytest.raises(ValueError, match=r"truncated: 12 bytes is too short"):
        read_metadata(path)


def _flip(path, where):
    raw = bytearray(path.read_bytes())
    raw[where] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", ["payload", "header", "digest", "appended"])
def test_flipped_byte_is_corrupt(saved, where):
    path, state = saved
    raw = path.read_bytes()
    if where == "appended":
        path.write_bytes(raw + b"\0")
    else:
        positions = {"payload": len(raw) - 40, "header": raw.index(b"namedtuple") + 3, "digest": len(raw) - 1}
        _flip(path, positions[where])
    with pytest.raises(ValueError, match=r"state.fnn is corrupt: SHA-256 checksum mismatch"):
        restore(path, state)
    with pytest.raises(ValueError, match="corrupt"):
        read_metadata(path)


def test_missing_and_foreign_files(tmp_path, saved):
    _, state = saved
    with pytest.raises(FileNotFoundError, match=r"restore: no checkpoint at .*nope.fnn"):
        restore(tmp_path / "nope.fnn", state)
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ValueError, match="is not an fnn checkpoint: expected magic"):
        restore(tmp_path / "x.npz", state)


def test_wrong_structure(saved):
    path, state = saved
    with pytest.raises(ValueError, match=r"structure does not match: expected .* got .*namedtuple\[State\]"):
        restore(path, state.params)
    params = (dict(state.params[0], extra=jnp.zeros(2)), state.params[1])
    with pytest.raises(ValueError, match=r"leaves missing from the file: \[\"\.params\[0\]\['extra'\]\"\]"):
        restore(path, state._replace(params=params))
    with pytest.raises(ValueError, match="tree structure does not match"):
        restore(path, state._replace(params=list(state.params)))


def test_wrong_shape_dtype_or_kind(saved):
    path, state = saved
    bad = state._replace(params=(dict(state.params[0], w=jnp.zeros((2, 4), jnp.float32)), state.params[1]))
    with pytest.raises(ValueError, match=r"leaf \.params\[0\]\['w'\] expected shape \(2, 4\) float32, "
                                         r"got \(3, 4\) float32"):
        restore(path, bad)
    bad = state._replace(flags=jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"leaf \.flags expected shape \(3,\) int32, got \(3,\) bool"):
        restore(path, bad)
    bad = state._replace(key=jax.random.split(jax.random.key(0), 2))
    with pytest.raises(ValueError, match=r"leaf \.key expected shape \(2,\) key<fry>, got \(3,\) key<fry>"):
        restore(path, bad)
    bad = state._replace(key=jnp.zeros((3, 2), jnp.uint32))
    with pytest.raises(ValueError, match=r"leaf \.key expected an array, got a typed PRNG key"):
        restore(path, bad)


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="metadata must be JSON-serializable"):
        save(tmp_path / "a", {"a": jnp.zeros(2)}, metadata={"when": object()})
    with pytest.raises(ValueError, match="metadata must be a dict, got list"):
        save(tmp_path / "a", {"a": jnp.zeros(2)}, metadata=[1])
    with pytest.raises(ValueError, match=r"leaf \['name'\] is not a numeric array"):
        save(tmp_path / "a", {"name": "adam"})
    assert list(tmp_path.iterdir()) == []


def test_header_is_plain_json(saved):
    """No pickle: the header is JSON and describes every leaf."""
    path, state = saved
    raw = path.read_bytes()
    assert raw[:8] == checkpoint.MAGIC
    length = int.from_bytes(raw[8:16], "little")
    header = json.loads(raw[16:16 + length])
    assert [e["path"] for e in header["leaves"]][:2] == [".params[0]['b']", ".params[0]['w']"]
    key_entry = next(e for e in header["leaves"] if e["path"] == ".key")
    assert key_entry["key_impl"] == "threefry2x32" and key_entry["data_shape"] == [3, 2]
    assert header["metadata"] == {"epoch": 1}
