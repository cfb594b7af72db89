"""fnn.checkpoint's parameters-only files: save_params / load_params (also out of a training
checkpoint), save_npz, and Checkpoint(metadata=)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import checkpoint, losses, optim
from fnn.layers.activation import Relu
from fnn.layers.combinators import serial
from fnn.layers.conv import Conv
from fnn.layers.dense import Dense
from fnn.layers.norm import BatchNorm
from fnn.layers.reshape import Flatten
from fnn.train import Checkpoint, fit

SHAPE = (6, 6, 2)
MODEL = serial(Conv(4, (3, 3)), BatchNorm(), Relu(), Flatten(), Dense(3))


def _trained_like():
    """Params and a BatchNorm state with values no init would give (random, negative zeros, extremes)."""
    _, params, state = MODEL.init(jax.random.key(0), SHAPE)
    keys = iter(jax.random.split(jax.random.key(1), 32))
    params, state = jax.tree.map(lambda a: jax.random.normal(next(keys), a.shape, a.dtype) * 3, (params, state))
    params[0]["b"] = params[0]["b"].at[0].set(-0.0).at[1].set(np.finfo(np.float32).tiny)
    return params, state


def assert_bitwise(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert isinstance(u, jax.Array) and u.dtype == v.dtype and u.shape == v.shape
        assert np.asarray(u).tobytes() == np.asarray(v).tobytes()


def test_save_load_params_round_trip_is_bitwise(tmp_path):
    params, state = _trained_like()
    path = tmp_path / "model.fnn"
    checkpoint.save_params(path, params, state, metadata={"input_shape": list(SHAPE), "note": "x"})
    assert_bitwise(checkpoint.load_params(path, MODEL, SHAPE), (params, state))
    assert_bitwise(checkpoint.load_params(path, MODEL), (params, state))  # input_shape from the metadata
    assert checkpoint.read_metadata(path) == {"input_shape": list(SHAPE), "note": "x"}
    x = jax.random.normal(jax.random.key(2), (5, *SHAPE))
    loaded_params, loaded_state = checkpoint.load_params(path, MODEL)
    np.testing.assert_array_equal(MODEL.apply(loaded_params, loaded_state, x)[0], MODEL.apply(params, state, x)[0])


def test_load_params_out_of_a_training_checkpoint(tmp_path):
    x = np.asarray(jax.random.normal(jax.random.key(3), (32, *SHAPE)), np.float32)
    y = np.arange(32, dtype=np.int32) % 3
    saver = Checkpoint(tmp_path, resume=False, metadata={"input_shape": [6, 6, 2]})
    ts, _ = fit(MODEL, losses.softmax_cross_entropy, optim.adam(1e-2), (x, y), epochs=2, batch_size=8,
                key=jax.random.key(0), callbacks=[saver])
    path = tmp_path / "checkpoint.fnn"
    meta = checkpoint.read_metadata(path)
    assert meta["input_shape"] == [6, 6, 2] and meta["epoch"] == 2 and meta["model"] == MODEL.name
    assert_bitwise(checkpoint.load_params(path, MODEL), (ts.params, ts.state))
    # the caller's metadata describes the model; the epoch and the history stay the resume's
    mine = Checkpoint(tmp_path, resume=False, metadata={"model": {"name": "mine"}, "epoch": 99})
    fit(MODEL, losses.softmax_cross_entropy, optim.adam(1e-2), (x, y), epochs=1, batch_size=8,
        key=jax.random.key(0), callbacks=[mine])
    meta = checkpoint.read_metadata(path)
    assert meta["model"] == {"name": "mine"} and meta["epoch"] == 1 and len(meta["history"]) == 1


def test_load_params_errors(tmp_path):
    params, state = _trained_like()
    path = tmp_path / "model.fnn"
    checkpoint.save_params(path, params, state)
    with pytest.raises(ValueError, match=r"stores no input_shape in its metadata; pass input_shape="):
        checkpoint.load_params(path, MODEL)
    other = serial(Conv(4, (3, 3)), Relu(), Flatten(), Dense(3))  # no BatchNorm
    with pytest.raises(ValueError, match=r"does not hold the parameters of serial.* for input_shape \(6, 6, 2\).*"
                                         r"tree structure does not match"):
        checkpoint.load_params(path, other, SHAPE)
    with pytest.raises(ValueError, match=r"leaf \['params'\]\[4\]\['w'\] expected shape \(16, 3\) float32, "
                                         r"got \(64, 3\) float32"):
        checkpoint.load_params(path, MODEL, (4, 4, 2))  # another input shape: another Dense size
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoint.load_params(tmp_path / "missing.fnn", MODEL, SHAPE)


def test_save_npz_keys_are_tree_paths(tmp_path):
    params, state = _trained_like()
    path = checkpoint.save_npz(tmp_path / "weights", params, state)  # no .npz appended
    assert path == tmp_path / "weights"
    with np.load(path) as z:
        assert sorted(z.keys()) == ["params/0/b", "params/0/w", "params/1/bias", "params/1/scale", "params/4/b",
                                    "params/4/w", "state/1/mean", "state/1/var"]
        np.testing.assert_array_equal(z["params/4/w"], params[4]["w"])
        np.testing.assert_array_equal(z["state/1/var"], state[1]["var"])
    with np.load(checkpoint.save_npz(tmp_path / "p.npz", {"w": jnp.ones(2, jnp.bfloat16)})) as z:
        assert list(z.keys()) == ["params/w"] and z["params/w"].dtype.itemsize == 2
