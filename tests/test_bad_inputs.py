"""A catalogue of bad inputs across the public API, each refused with a clear message.

Every row is ``(id, call, exception, regex)``: calling ``call()`` must raise ``exception`` whose
message matches ``regex``. The regexes check what STYLE.md asks of a message: the layer or
function by name (with its position inside ``serial``), what was expected and what was
received. One row is a warning rather than an exception (a NaN/Inf loss during ``fit`` stops
training with a RuntimeWarning and keeps the last good state; tests/test_train.py checks the
state it keeps).

Value checks (labels in range, NaN in data, a schedule's value) can only run where values are
concrete. The rows test the eager behaviour; the tests at the end pin down what happens under
``jax.jit`` instead, as the docstrings of ``fnn.losses`` and ``fnn.optim`` document it.

Related catalogues elsewhere, not repeated here: tests/test_checkpoint.py (truncated, flipped
byte, appended byte, foreign file, wrong structure/shape/dtype/kind, SIGKILL mid-save),
tests/test_train.py (fit's input checks, the NaN stop), tests/data/ (IDX and loaders).
"""

import gzip
import math
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import checkpoint, data, losses, models, optim
from fnn.backprop import value_and_grad
from fnn.layers import (
    AvgPool,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    MaxPool,
    Relu,
    Reshape,
    serial,
)
from fnn.layers.pool import AvgPool2D, MaxPool2D
from fnn.train import Checkpoint, NanGuard, evaluate, fit, init_train_state

K = jax.random.key(0)
CE = losses.softmax_cross_entropy

# Small objects shared by the rows; nothing here compiles a program.
DENSE = Dense(4)
_, DENSE_P, _ = DENSE.init(K, (3,))
CONV = Conv2D(4, 3)
_, CONV_P, _ = CONV.init(K, (8, 8, 2))
BN = BatchNorm()
_, BN_P, BN_S = BN.init(K, (3,))
MLP = models.mlp((4, 8, 3))
_, MLP_P, MLP_S = MLP.init(K, (4,))
WIDE_P = models.mlp((4, 16, 3)).init(K, (4,))[1]
MLP_DROP = models.mlp((4, 8, 3), dropout=0.5)
_, DROP_P, DROP_S = MLP_DROP.init(K, (4,))
X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
Y = (np.arange(64) % 3).astype(np.int32)
LOGITS = jnp.zeros((4, 10), jnp.float32)


def x32(*shape):
    return jnp.ones(shape, jnp.float32)


def train(x=X, y=Y, **kw):
    """fit on the tiny MLP; every bad-input row fails before anything is compiled."""
    kw = {"epochs": 1, "batch_size": 16, "key": K, **kw}
    return fit(kw.pop("model", MLP), CE, kw.pop("optimizer", optim.sgd(0.1)), (x, y), **kw)


def replaced(a, where=(3, 1), value=np.nan):
    """A copy of `a` with one entry replaced (by NaN unless told otherwise)."""
    a = np.array(a, copy=True)
    a[where] = value
    return a


def opt_update(opt, grads, params, state=None):
    return opt.update(grads, opt.init(params) if state is None else state, params)


# --------------------------------------------------------------------------------------- files


def _idx_bytes(dims, payload_len, code=0x08):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + bytes(payload_len)


def idx_file(tmp_path, raw, gz=False):
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return data.read_idx(path)


def damaged_checkpoint(tmp_path, how):
    """A fit checkpoint for MLP (fit's own layout), then damaged; Checkpoint(resume=True) must refuse it."""
    ts = init_train_state(MLP, optim.sgd(0.1), (4,), key=K)
    path = tmp_path / "checkpoint.fnn"
    checkpoint.save(path, {"train_state": ts, "callbacks": {}}, metadata={"epoch": 1})
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        raw = raw[:-100]
    elif how == "flipped":
        raw[-40] ^= 0x10  # in the payload, just before the 32-byte digest
    path.write_bytes(bytes(raw))
    return train(callbacks=[Checkpoint(tmp_path)], epochs=2)


def checkpoint_of_other_model(tmp_path):
    ts = init_train_state(models.mlp((4, 16, 3)), optim.sgd(0.1), (4,), key=K)
    checkpoint.save(tmp_path / "checkpoint.fnn", {"train_state": ts, "callbacks": {}},
                    metadata={"epoch": 1})
    return train(callbacks=[Checkpoint(tmp_path)], epochs=2)


def restore_params_into_other_shape(tmp_path):
    checkpoint.save(tmp_path / "p.fnn", MLP_P)
    return checkpoint.restore(tmp_path / "p.fnn", WIDE_P)


# The learning rate explodes at the first step of epoch 2 (steps 0-3 are epoch 1).
BOOM = optim.sgd(lambda count: jnp.where(count < 4, 0.05, 1e38))


def exploding_fit():
    return train(optimizer=BOOM, epochs=3)


# ---------------------------------------------------------------------------------------- rows
# (id, call, exception, regex). `call` takes tmp_path (most ignore it).

CASES = [
    # --- wrong rank, feature or channel mismatch
    ("dense_wrong_rank", lambda t: DENSE.apply(DENSE_P, {}, x32(2, 3, 1)), ValueError,
     r"Dense\(4\): expected x of shape \(N, 3\), got \(2, 3, 1\)"),
    ("dense_feature_mismatch", lambda t: DENSE.apply(DENSE_P, {}, x32(2, 5)), ValueError,
     r"Dense\(4\): expected x of shape \(N, 3\), got \(2, 5\)"),
    ("conv_missing_batch_axis", lambda t: CONV.apply(CONV_P, {}, x32(8, 8, 2)), ValueError,
     r"Conv2D\(4, 3x3\): expected x of shape \(N, H, W, 2\), got \(8, 8, 2\)"),
    ("conv_channel_mismatch", lambda t: CONV.apply(CONV_P, {}, x32(1, 8, 8, 3)), ValueError,
     r"Conv2D\(4, 3x3\): expected x of shape \(N, H, W, 2\), got \(1, 8, 8, 3\)"),
    ("model_wrong_input_shape", lambda t: MLP.init(K, (5,)), ValueError,
     r"mlp\(4, 8, 3\): built for input_shape \(4,\), got \(5,\)"),
    ("model_channels_first_image", lambda t: models.simple_cnn().apply((), (), x32(2, 1, 28, 28)), ValueError,
     r"simple_cnn: expected x of shape \(N, 28, 28, 1\), got \(2, 1, 28, 28\)"),
    ("batchnorm_channel_mismatch", lambda t: BN.apply(BN_P, BN_S, x32(4, 5), train=True), ValueError,
     r"BatchNorm: expected x of shape \(N, 3\) \(3 channels on axis -1\), got \(4, 5\)"),
    ("pool_wrong_rank", lambda t: MaxPool((2, 2)).apply({}, {}, x32(4, 4, 1)), ValueError,
     r"MaxPool2D\(2x2\): expected x of rank 4 \(N, 2 spatial dims, C\), got \(4, 4, 1\)"),
    ("reshape_wrong_size_in_serial",
     lambda t: serial(Relu(), Reshape((5,))).apply(((), ()), ((), ()), x32(2, 4)), ValueError,
     r"serial\[1\] Reshape\(\(5,\)\): cannot reshape x of shape \(2, 4\) \(4 values per example\) "
     r"to \(N, 5\)"),
    # --- window larger than the (padded) input
    ("conv_kernel_larger_than_input", lambda t: Conv2D(4, 5).init(K, (3, 3, 1)), ValueError,
     r"Conv2D\(4, 5x5\): kernel \(dilated\) 5x5 is larger than the padded input 3x3 "
     r"\(input spatial shape \(3, 3\)\)"),
    ("conv_dilated_kernel_larger", lambda t: Conv2D(4, 3, dilation=3).init(K, (6, 6, 1)), ValueError,
     r"Conv2D\(4, 3x3, dilation=\(3, 3\)\): kernel \(dilated\) 7x7 is larger than the padded input 6x6"),
    ("conv_kernel_larger_at_apply", lambda t: CONV.apply(CONV_P, {}, x32(1, 2, 2, 2)), ValueError,
     r"Conv2D\(4, 3x3\): kernel \(dilated\) 3x3 is larger than the padded input 2x2"),
    ("pool_window_larger_than_input", lambda t: MaxPool2D(5).apply({}, {}, x32(1, 3, 3, 1)), ValueError,
     r"MaxPool2D\(5x5\): window 5x5 is larger than the padded input 3x3"),
    # --- stride, dilation, padding
    ("conv_stride_zero", lambda t: Conv2D(4, 3, stride=0), ValueError,
     r"Conv2D: stride must be a positive int or a tuple of 2 positive ints, got 0"),
    ("conv_stride_negative_tuple", lambda t: Conv2D(4, 3, stride=(1, -2)), ValueError,
     r"Conv2D: stride must be a positive int or a tuple of 2 positive ints, got \(1, -2\)"),
    ("conv_dilation_negative", lambda t: Conv2D(4, 3, dilation=-1), ValueError,
     r"Conv2D: dilation must be a positive int or a tuple of 2 positive ints, got -1"),
    ("pool_stride_zero", lambda t: AvgPool2D(2, stride=0), ValueError,
     r"AvgPool2D: stride must be a positive int or a tuple of 2 positive ints, got \(0, 0\)"),
    ("conv_unknown_padding", lambda t: Conv2D(4, 3, padding="same_ish"), ValueError,
     r"Conv2D: padding must be 'VALID', 'SAME', 'FULL', a non-negative int or 2 \(low, high\) pairs, "
     r"got 'same_ish'"),
    ("pool_unknown_padding", lambda t: AvgPool((2, 2), padding="CAUSAL"), ValueError,
     r"AvgPool2D: padding must be 'VALID', 'SAME', 'FULL'.*got 'CAUSAL'"),
    # --- dropout and keys
    ("dropout_rate_one", lambda t: Dropout(1.0), ValueError,
     r"Dropout: drop_rate must be in \[0.0, 1.0\), got 1.0"),
    ("dropout_rate_negative", lambda t: Dropout(-0.1), ValueError,
     r"Dropout: drop_rate must be in \[0.0, 1.0\), got -0.1"),
    ("dropout_rate_nan", lambda t: models.mlp((4, 8, 3), dropout=math.nan), ValueError,
     r"mlp: dropout must be in \[0.0, 1.0\), got nan"),
    ("dropout_train_without_key", lambda t: MLP_DROP.apply(DROP_P, DROP_S, x32(2, 4), train=True), ValueError,
     r"serial\[2\] Dropout\(0.5\): a PRNG key is required when train=True \(pass key=jax.random.key\(seed\)"),
    ("dropout_key_is_an_int", lambda t: Dropout(0.5).apply({}, {}, x32(2, 3), key=0, train=True), ValueError,
     r"Dropout\(0.5\): key must be a PRNG key \(jax.random.key\(seed\)\), got int 0"),
    ("fit_key_none", lambda t: train(key=None), ValueError,
     r"fit: key must be a PRNG key \(jax.random.key\(seed\)\), got NoneType"),
    # --- BatchNorm
    ("batchnorm_train_batch_of_one", lambda t: BN.apply(BN_P, BN_S, x32(1, 3), train=True), ValueError,
     r"BatchNorm: train=True needs more than one value per channel to compute batch statistics, "
     r"got x of shape \(1, 3\)"),
    ("batchnorm_state_of_other_width", lambda t: BN.apply(BN_P, BatchNorm().init(K, (4,))[2], x32(2, 3)),
     ValueError, r"BatchNorm: expected state of shapes \{'mean': \(3,\), 'var': \(3,\)\}, "
                 r"got \{'mean': \(4,\), 'var': \(4,\)\}"),
    # --- integer images: refused, never wrapped around
    ("uint8_images_to_conv", lambda t: CONV.apply(CONV_P, {}, jnp.ones((1, 8, 8, 2), jnp.uint8)), ValueError,
     r"Conv2D\(4, 3x3\): expected x of a floating dtype, got uint8 \(convert integer images"),
    ("int32_to_dense", lambda t: DENSE.apply(DENSE_P, {}, jnp.ones((2, 3), jnp.int32)), ValueError,
     r"Dense\(4\): expected x of a floating dtype, got int32"),
    ("uint8_images_to_model", lambda t: MLP.apply(MLP_P, MLP_S, np.ones((2, 4), np.uint8)), ValueError,
     r"mlp\(4, 8, 3\): expected x of a floating dtype, got uint8"),
    ("uint8_images_to_fit", lambda t: train(x=X.astype(np.uint8)), ValueError,
     r"fit: train_data x has dtype uint8; convert images to float first"),
    ("uint8_pred_to_mae", lambda t: losses.mae.value(jnp.array([3], jnp.uint8), jnp.array([5], jnp.uint8)),
     ValueError, r"mae: expected pred of a floating dtype, got uint8"),
    ("to_float_of_floats", lambda t: data.to_float(X), ValueError,
     r"to_float: expected uint8 x, got float32 of shape \(64, 4\)"),
    # --- labels
    ("labels_out_of_range", lambda t: CE.value(LOGITS, jnp.array([0, 1, 10, 2])), ValueError,
     r"softmax_cross_entropy: labels must be in \[0, 10\) for pred \(4, 10\), got values in \[0, 10\]"),
    ("labels_negative", lambda t: CE.value(LOGITS, jnp.array([0, -1, 2, 3])), ValueError,
     r"softmax_cross_entropy: labels must be in \[0, 10\) for pred \(4, 10\), got values in \[-1, 3\]"),
    ("onehot_width_differs", lambda t: CE.value(LOGITS, jnp.zeros((4, 5), jnp.float32)), ValueError,
     r"softmax_cross_entropy: one-hot/probability labels must have the shape of pred \(4, 10\), "
     r"got \(4, 5\)"),
    ("integer_labels_wrong_shape",
     lambda t: losses.cross_entropy.value(LOGITS + 0.1, jnp.zeros((4, 1), jnp.int32)), ValueError,
     r"cross_entropy: integer labels must have shape \(N,\) = \(4,\) for pred \(4, 10\), got \(4, 1\)"),
    ("mse_silent_broadcast", lambda t: losses.mse.value(x32(4, 1), x32(4)), ValueError,
     r"mse: pred and target must have the same shape, got pred \(4, 1\) and target \(4,\)"),
    ("bce_target_outside_0_1", lambda t: losses.binary_cross_entropy.value(x32(4) / 2, x32(4) * 2),
     ValueError,
     r"binary_cross_entropy: target must be in \[0, 1\], got values in \[2.0, 2.0\]"),
    ("fit_labels_out_of_range", lambda t: train(y=replaced(Y, 5, 3)), ValueError,
     r"fit: train_data labels must be in \[0, 3\) for a model with 3 outputs, got values in \[0, 3\] "
     r"\(first bad label 3 at index 5\)"),
    ("fit_val_labels_negative", lambda t: train(val_data=(X, replaced(Y, 7, -1))), ValueError,
     r"fit: val_data labels must be in \[0, 3\).*got values in \[-1, 2\] \(first bad label -1 at index 7\)"),
    ("evaluate_labels_negative", lambda t: evaluate(MLP, CE, MLP_P, MLP_S, X[:8], replaced(Y[:8], 2, -1)),
     ValueError, r"evaluate: data labels must be in \[0, 3\).*\(first bad label -1 at index 2\)"),
    ("evaluate_labels_out_of_range", lambda t: evaluate(MLP, CE, MLP_P, MLP_S, X[:8], replaced(Y[:8], 4, 9)),
     ValueError, r"evaluate: data labels must be in \[0, 3\).*\(first bad label 9 at index 4\)"),
    ("fit_onehot_width_differs", lambda t: train(y=np.eye(5, dtype=np.float32)[Y]), ValueError,
     r"softmax_cross_entropy: one-hot/probability labels must have the shape of pred \(16, 3\), "
     r"got \(16, 5\)"),
    # --- empty batches and data sets, batch larger than the data
    ("dense_empty_batch", lambda t: DENSE.apply(DENSE_P, {}, x32(0, 3)), ValueError,
     r"Dense\(4\): got an empty batch, x of shape \(0, 3\)"),
    ("cross_entropy_empty_batch", lambda t: CE.value(jnp.zeros((0, 10)), jnp.zeros((0,), jnp.int32)),
     ValueError,
     r"softmax_cross_entropy: got an empty batch, pred of shape \(0, 10\)"),
    ("mse_empty_batch", lambda t: losses.mse.backward(x32(0), x32(0)), ValueError,
     r"mse: got an empty batch, pred of shape \(0,\)"),
    ("fit_empty_dataset", lambda t: train(x=X[:0], y=Y[:0]), ValueError,
     r"fit: train_data is empty \(x of shape \(0, 4\)\)"),
    ("evaluate_x_y_lengths_differ", lambda t: evaluate(MLP, CE, MLP_P, MLP_S, X, Y[:10]), ValueError,
     r"evaluate: data x and y must have the same number of examples, got x of shape \(64, 4\) "
     r"and y of shape \(10,\)"),
    ("fit_batch_larger_than_dataset", lambda t: train(batch_size=65), ValueError,
     r"fit: batch_size=65 is larger than the number of training examples N=64"),
    ("epoch_batches_batch_larger", lambda t: data.epoch_batches(X[:4], Y[:4], 8, key=K), ValueError,
     r"epoch_batches: batch_size=8 is larger than the number of examples N=4"),
    ("fit_batch_size_zero", lambda t: train(batch_size=0), ValueError,
     r"fit: batch_size must be a positive int, got 0"),
    ("fit_epochs_float", lambda t: train(epochs=2.5), ValueError,
     r"fit: epochs must be a positive int, got 2.5"),
    # --- params, state and optimizer trees from another model
    ("params_of_wider_dense", lambda t: DENSE.apply(Dense(8).init(K, (3,))[1], {}, x32(2, 3)), ValueError,
     r"Dense\(4\): expected params of shapes \{'w': \(\?, 4\), 'b': \(4,\)\}, "
     r"got \{'w': \(3, 8\), 'b': \(8,\)\} \(were they made by this layer's init\?\)"),
    ("params_missing", lambda t: DENSE.apply({}, {}, x32(2, 3)), ValueError,
     r"Dense\(4\): expected params of shapes \{'w': \(\?, 4\), 'b': \(4,\)\}, got \{\}"),
    ("conv_params_of_other_kernel",
     lambda t: CONV.apply(Conv2D(4, 5).init(K, (8, 8, 2))[1], {}, x32(1, 8, 8, 2)),
     ValueError, r"Conv2D\(4, 3x3\): expected params of shapes \{'w': \(3, 3, \?, 4\), 'b': \(4,\)\}, "
                 r"got \{'w': \(5, 5, 2, 4\), 'b': \(4,\)\}"),
    ("model_params_of_other_model", lambda t: MLP.apply(WIDE_P, MLP_S, x32(2, 4)), ValueError,
     r"serial\[0\] Dense\(8\): expected params of shapes \{'w': \(\?, 8\), 'b': \(8,\)\}, "
     r"got \{'w': \(4, 16\), 'b': \(16,\)\}"),
    ("serial_params_wrong_length", lambda t: MLP.apply(MLP_P[:2], MLP_S, x32(2, 4)), ValueError,
     r"serial: expected params as a tuple of 3 entries \(one per layer\), got tuple of length 2"),
    ("fit_train_state_of_other_model", lambda t: train(
        optimizer=optim.adam(0.1),
        train_state=init_train_state(models.mlp((4, 16, 3)), optim.adam(0.1), (4,), key=K)),
     ValueError, r"fit: train_state.params leaf \[0\]\['b'\] expected shape \(8,\), got \(16,\)"),
    ("fit_opt_state_of_other_optimizer", lambda t: train(
        optimizer=optim.adam(0.1), train_state=init_train_state(MLP, optim.sgd(0.1), (4,), key=K)), ValueError,
     r"fit: train_state.opt_state tree structure does not match: expected .*AdamState.*, got .*SgdState"),
    ("opt_state_of_other_model", lambda t: opt_update(
        optim.adam(0.1), MLP_P, MLP_P, optim.adam(0.1).init(WIDE_P)), ValueError,
     r"adam: grads leaf \[0\]\['b'\] expected shape \(16,\), got \(8,\)"),
    ("grads_tree_mismatch", lambda t: opt_update(optim.sgd(0.1), {"w": x32(2)}, {"w": x32(2), "b": x32(1)}),
     ValueError, r"sgd: grads tree structure does not match: expected PyTreeDef\(\{'b': \*, 'w': \*\}\), "
                 r"got PyTreeDef\(\{'w': \*\}\)"),
    ("grads_leaf_shape_mismatch", lambda t: opt_update(optim.momentum(0.1), {"w": x32(3)}, {"w": x32(2)}),
     ValueError, r"momentum: grads leaf \['w'\] expected shape \(2,\), got \(3,\)"),
    ("updates_tree_mismatch", lambda t: optim.apply_updates({"w": x32(2)}, {"w": x32(3)}), ValueError,
     r"apply_updates: updates leaf \['w'\] expected shape \(2,\), got \(3,\)"),
    # --- learning rates and schedules
    ("learning_rate_negative", lambda t: optim.sgd(-0.1), ValueError,
     r"sgd: learning_rate must be a finite float >= 0 or a schedule count -> lr, got -0.1"),
    ("learning_rate_nan", lambda t: optim.adam(math.nan), ValueError,
     r"adam: learning_rate must be a finite float >= 0 or a schedule count -> lr, got nan"),
    ("learning_rate_inf", lambda t: optim.rmsprop(math.inf), ValueError,
     r"rmsprop: learning_rate must be a finite float >= 0 .*got inf"),
    ("schedule_returns_nan",
     lambda t: opt_update(optim.sgd(lambda count: jnp.nan), {"w": x32(2)}, {"w": x32(2)}),
     ValueError, r"sgd: the learning-rate schedule returned nan at count 0; "
                 r"expected a finite float >= 0"),
    ("schedule_returns_negative",
     lambda t: opt_update(optim.adam(lambda count: -1.0), {"w": x32(2)}, {"w": x32(2)}),
     ValueError, r"adam: the learning-rate schedule returned -1.0 at count .*; expected a finite float >= 0"),
    ("schedule_built_from_nan", lambda t: optim.cosine_decay(math.nan, 10), ValueError,
     r"cosine_decay: init_value must be a finite float >= 0, got nan"),
    ("momentum_out_of_range", lambda t: optim.momentum(0.1, momentum=1.5), ValueError,
     r"momentum: momentum must be in \[0.0, 1.0\), got 1.5"),
    # --- NaN/Inf in the data, and during training
    ("nan_in_fit_x", lambda t: train(x=replaced(X)), ValueError, r"fit: train_data x contains NaN or Inf"),
    ("inf_in_val_x", lambda t: train(val_data=(replaced(X, value=np.inf), Y)), ValueError,
     r"fit: val_data x contains NaN or Inf"),
    ("nan_in_evaluate_x", lambda t: evaluate(MLP, CE, MLP_P, MLP_S, replaced(X), Y), ValueError,
     r"evaluate: data x contains NaN or Inf"),
    ("nan_in_standardizer_fit", lambda t: data.Standardizer.fit(replaced(X)), ValueError,
     r"Standardizer.fit: x of shape \(64, 4\) contains NaN or Inf"),
    ("inf_loss_during_training", lambda t: exploding_fit(), RuntimeWarning,
     r"fit: non-finite (loss|gradient|parameters).* \(NaN/Inf\) at epoch 2, step \d+ of 4 "
     r"\(global step \d+\); "
     r"stopped, and kept the state from the end of epoch 1"),
    # --- checkpoints
    ("restore_into_other_shape", restore_params_into_other_shape, ValueError,
     r"restore: .*p.fnn: leaf \[0\]\['b'\] expected shape \(16,\) float32, got \(8,\) float32"),
    ("fit_resume_checkpoint_of_other_model", checkpoint_of_other_model, ValueError,
     r"restore: .*checkpoint.fnn: leaf \['train_state'\]\.params\[0\]\['b'\] expected shape \(8,\) float32, "
     r"got \(16,\) float32"),
    ("fit_resume_truncated_checkpoint", lambda t: damaged_checkpoint(t, "truncated"), ValueError,
     r"restore: .*checkpoint.fnn is truncated: expected \d+ bytes, got \d+"),
    ("fit_resume_corrupt_checkpoint", lambda t: damaged_checkpoint(t, "flipped"), ValueError,
     r"restore: .*checkpoint.fnn is corrupt: SHA-256 checksum mismatch"),
    ("restore_missing_path", lambda t: checkpoint.restore(t / "nope.fnn", MLP_P), FileNotFoundError,
     r"restore: no checkpoint at .*nope.fnn \(file not found\)"),
    # --- IDX files
    ("idx_truncated", lambda t: idx_file(t, _idx_bytes((10, 28, 28), 7000)), ValueError,
     r"read_idx: .*x.idx is truncated: expected 7840 payload bytes for shape \(10, 28, 28\) of uint8, "
     r"got 7000"),
    ("idx_trailing_bytes", lambda t: idx_file(t, _idx_bytes((10,), 11), gz=True), ValueError,
     r"read_idx: .*x.idx.gz is followed by trailing bytes: expected 10 payload bytes for shape \(10,\) "
     r"of uint8, got 11"),
    ("idx_bad_magic", lambda t: idx_file(t, b"\x00\x01" + _idx_bytes((10,), 10)[2:]), ValueError,
     r"read_idx: .*x.idx is not an IDX file: expected magic bytes 00 00, got 00 01"),
    ("idx_unknown_type_code", lambda t: idx_file(t, _idx_bytes((10,), 10, code=0x0A)), ValueError,
     r"read_idx: .*x.idx has an unknown IDX type code: expected one of 0x08, .*, got 0x0A"),
    ("idx_corrupt_gzip", lambda t: idx_file(t, b"\x1f\x8b" + bytes(30)), ValueError,
     r"read_idx: .*x.idx is not a valid gzip file"),
    # --- misc API
    ("serial_of_a_constructor", lambda t: serial(Dense(4), Relu), ValueError,
     r"serial\[1\]: expected a Layer, got function \(did you forget to call the constructor"),
    ("unknown_grad_mode", lambda t: value_and_grad(MLP, CE, grad_mode="symbolic"), ValueError,
     r"value_and_grad: grad_mode must be one of \['auto', 'manual', 'autodiff', 'custom_vjp'\], got 'symbolic'"),
    ("standardizer_wrong_shape", lambda t: data.Standardizer.fit(X).apply(x32(2, 5)), ValueError,
     r"Standardizer.apply: expected x of shape \(N, 4\) \(statistics of shape \(4,\)\), got \(2, 5\)"),
    ("split_fraction_out_of_range", lambda t: data.train_val_split(X, Y, 1.5, key=K), ValueError,
     r"train_val_split: val_fraction must be in \(0.0, 1.0\), got 1.5"),
]

IDS = [c[0] for c in CASES]
assert len(set(IDS)) == len(IDS), "duplicate case ids"


def test_catalogue_size():
    """At least 30 distinct bad inputs refused with ValueError/TypeError (the count is printed)."""
    refused = [c for c in CASES if issubclass(c[2], (ValueError, TypeError))]
    print(f"\nbad-input catalogue: {len(CASES)} cases, {len(refused)} refused with ValueError/TypeError, "
          f"{len(CASES) - len(refused)} with another exception or a warning")
    assert len(refused) >= 30


@pytest.mark.parametrize("case_id, call, exc, regex", CASES, ids=IDS)
def test_bad_input(case_id, call, exc, regex, tmp_path):
    if issubclass(exc, Warning):
        with pytest.warns(exc, match=regex):
            call(tmp_path)
    else:
        with pytest.raises(exc, match=regex):
            call(tmp_path)


# ----------------------------------------------------------------------------------------
# What the value checks do under jit, where values are tracers (documented, tested here)


def test_labels_under_jit_contribute_nothing():
    """Under jit only shapes are checked: an out-of-range label gives a zero one-hot row, so its
    example adds nothing to the loss (the sum is still divided by N). fit and evaluate check
    labels before compiling; validate labels when loading data."""
    logits = jax.random.normal(K, (4, 10), jnp.float32)
    bad = jnp.array([1, 2, 10, 3])
    got = jax.jit(CE.value)(logits, bad)
    per = -jax.nn.log_softmax(logits)[jnp.arange(4), jnp.array([1, 2, 0, 3])]
    np.testing.assert_allclose(float(got), float((per[0] + per[1] + per[3]) / 4), rtol=1e-6)


def test_schedule_nan_under_jit_reaches_fits_guard():
    """A schedule's value that depends on the count is a tracer under jit: no check, the update is
    NaN, and fit's NaN/Inf guard is what stops such a run (row inf_loss_during_training;
    tests/test_train.py checks the state it keeps). A constant NaN is still refused at trace time."""
    params = {"w": x32(2)}
    opt = optim.sgd(lambda count: jnp.where(count < 10, jnp.nan, 0.1))
    updates, _ = jax.jit(opt.update)(params, opt.init(params), params)
    assert np.isnan(np.asarray(updates["w"])).all()
    constant = optim.sgd(lambda count: math.nan)
    with pytest.raises(ValueError, match=r"sgd: the learning-rate schedule returned nan at a traced count"):
        jax.jit(constant.update)(params, constant.init(params), params)


def test_nan_input_to_a_layer_propagates_under_jit():
    """Layers check shapes and dtypes, never values: NaN in x propagates (eagerly too); fit,
    evaluate and Standardizer check their data for NaN/Inf once, before any compiled code runs."""
    y, _ = jax.jit(DENSE.apply)(DENSE_P, {}, jnp.asarray(replaced(np.ones((2, 3), np.float32), (0, 0))))
    assert np.isnan(np.asarray(y[0])).all() and np.isfinite(np.asarray(y[1])).all()


# ----------------------------------------------------------------------------------------
# The NaN/Inf guard: the state it keeps can be checkpointed; NanGuard(locate=True) names the operation


def test_nonfinite_stop_keeps_a_checkpointable_state_and_nan_guard_locates_it(tmp_path):
    """Row inf_loss_during_training, further: the checkpoint on disk is epoch 1's, the returned
    state saves and restores, and NanGuard(locate=True) (the epoch re-run up to its bad step, then that step
    run eagerly under jax.debug_nans/debug_infs) stops with the same state and names the operation."""
    hint = r"\(fit\(\.\.\., callbacks=\[NanGuard\(locate=True\)\]\) finds the operation\)"
    with pytest.warns(RuntimeWarning, match=hint):
        ts, history = train(optimizer=BOOM, epochs=3, callbacks=[Checkpoint(tmp_path / "a")])
    assert len(history) == 1 and checkpoint.read_metadata(tmp_path / "a" / "checkpoint.fnn")["epoch"] == 1
    on_disk = checkpoint.restore(tmp_path / "a" / "checkpoint.fnn",
                                 {"train_state": ts, "callbacks": {}})["train_state"]
    checkpoint.save(tmp_path / "kept.fnn", ts)
    kept = checkpoint.restore(tmp_path / "kept.fnn", ts)
    for a, b, c in zip(jax.tree.leaves(ts.params), jax.tree.leaves(on_disk.params),
                       jax.tree.leaves(kept.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
        assert np.isfinite(np.asarray(a)).all()

    located = r"jax.debug_nans: invalid value \((nan|inf)\) encountered in \w+ at .*\.py:\d+ \(\w+\)"
    with pytest.warns(RuntimeWarning, match=r"at epoch 2, step \d+ of 4 .*" + located) as record:
        ts_debug, history_debug = train(optimizer=BOOM, epochs=3, callbacks=[NanGuard(locate=True)])
    assert len(history_debug) == 1 and history_debug.stop_reason == str(record[-1].message)
    for a, b in zip(jax.tree.leaves(ts.params), jax.tree.leaves(ts_debug.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
