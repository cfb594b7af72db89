"""fnn.train.tensorboard: CRC-32C against published vectors, and event files from a real fit read
back by an independent reader written here (framing, both CRCs, the protobuf fields), and by
TensorBoard's own loader when the `tensorboard` package is installed (skipped otherwise)."""

import math
import struct
from pathlib import Path

import numpy as np
import pytest

from fnn import losses, optim
from fnn.cli import build_parser
from fnn.layers import Dense, Relu, serial
from fnn.train import Callback, LearningRateLog, Progress, StepRecorder, TensorBoard, fit
from fnn.train.tensorboard import EventWriter, crc32c, encode_event

# ----------------------------------------------------------------------------------------
# An independent reader: TFRecord framing and the protobuf wire format, from their specs.

_POLY = 0x82F63B78  # CRC-32C, reflected


def _crc32c_bitwise(data: bytes) -> int:
    """CRC-32C a bit at a time (no table: a second implementation, not a copy of the first)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (_POLY & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    c = _crc32c_bitwise(data)
    return ((c >> 15 | c << 17) + 0xA282EAD8) % 2**32


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _fields(buf: bytes) -> list[tuple[int, object]]:
    """[(field number, value)] of a message: ints for varints, bytes for the rest."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        else:
            raise AssertionError(f"wire type {wire}")
        out.append((number, value))
    assert i == len(buf)
    return out


def read_events(path: Path | bytes) -> list[dict]:
    """Each record's Event (of a file, or of its bytes) as {"wall_time", "step", "file_version",
    "values": [(tag, value)]}."""
    data = path if isinstance(path, bytes) else path.read_bytes()
    i, events = 0, []
    while i < len(data):
        header = data[i:i + 8]
        (length,) = struct.unpack("<Q", header)
        (crc_len,) = struct.unpack("<I", data[i + 8:i + 12])
        assert crc_len == _masked(header), "length CRC"
        body = data[i + 12:i + 12 + length]
        (crc_body,) = struct.unpack("<I", data[i + 12 + length:i + 16 + length])
        assert crc_body == _masked(body), "data CRC"
        i += 16 + length
        event: dict = {"values": [], "file_version": None, "step": 0}
        for number, value in _fields(body):
            if number == 1:
                (event["wall_time"],) = struct.unpack("<d", value)
            elif number == 2:
                event["step"] = value - 2**64 if value >= 2**63 else value
            elif number == 3:
                event["file_version"] = value.decode()
            elif number == 5:
                for vnum, v in _fields(value):
                    assert vnum == 1
                    parts = dict(_fields(v))
                    event["values"].append((parts[1].decode(), struct.unpack("<f", parts[2])[0]))
            else:
                raise AssertionError(f"unexpected Event field {number}")
        events.append(event)
    assert i == len(data)
    return events


def scalars(events: list[dict]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for e in events:
        for tag, v in e["values"]:
            out.setdefault(tag, []).append((e["step"], v))
    return out


def f32(v: float) -> float:
    return float(np.float32(v))


# ----------------------------------------------------------------------------------------


def test_crc32c_known_vectors():
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283
    # RFC 3720, appendix B.4
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    rng = np.random.default_rng(0)
    blob = rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()
    assert crc32c(blob) == _crc32c_bitwise(blob)


def test_writer_round_trip(tmp_path):
    with EventWriter(tmp_path, filename_suffix=".x") as w:
        w.add_scalar("a", 0.1, step=3, wall_time=12.5)
        w.add_scalars({"b/c": 1e40, "d": -math.inf, "e": 7}, step=-1)
        w.add_scalars({}, step=4)  # nothing
    name = w.path.name
    assert name.startswith("events.out.tfevents.") and name.endswith(".x") and w.path.parent == tmp_path
    first, a, rest = read_events(w.path)
    assert first["file_version"] == "brain.Event:2" and first["values"] == []
    assert (a["wall_time"], a["step"], a["values"]) == (12.5, 3, [("a", f32(0.1))])
    assert rest["step"] == -1 and rest["values"] == [("b/c", math.inf), ("d", -math.inf), ("e", 7.0)]
    assert EventWriter(tmp_path).path != w.path  # a second writer never reuses the file
    assert encode_event(1.0, 2) == b"\x09" + struct.pack("<d", 1.0) + b"\x10\x02"


def test_epoch_scalars_keep_numbers_only():
    from fnn.train.tensorboard import epoch_scalars

    row = {"epoch": 2, "train_loss": 0.5, "val_loss": None, "val_accuracy": np.float32(0.25), "lr": np.int64(1),
           "flag": True, "name": "x", "grad_norm": math.nan, "validation": 3.0}
    got = epoch_scalars(row)
    assert got.keys() == {"train/loss", "val/accuracy", "lr", "grad_norm", "validation"}
    assert got["val/accuracy"] == 0.25 and got["lr"] == 1.0 and math.isnan(got["grad_norm"])


class _Snapshot(Callback):
    """Runs after TensorBoard: the bytes a live reader finds in the file at the end of each epoch."""

    order = 86

    def __init__(self, logdir):
        self.logdir, self.seen = logdir, []

    def on_epoch_end(self, run):
        (path,) = self.logdir.glob("events.out.tfevents.*")
        self.seen.append(path.read_bytes())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny MLP fit for 2 epochs with validation, a learning-rate log and per-step records."""
    logdir = tmp_path_factory.mktemp("tb")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 4)).astype(np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int32)
    snap = _Snapshot(logdir)
    grads_only = StepRecorder(3, probe=lambda model: ((), None))  # no activation probe: one compile less
    _, history = fit(serial(Dense(8), Relu(), Dense(2)), losses.softmax_cross_entropy, optim.sgd(0.1),
                     (x[:64], y[:64]), epochs=2, batch_size=16, key=0, val_data=(x[64:], y[64:]),
                     callbacks=[TensorBoard(logdir), LearningRateLog(0.1), grads_only, Progress(False), snap])
    (path,) = logdir.glob("events.out.tfevents.*")
    return history, path, snap


def _expected(history) -> dict[str, list[tuple[int, float]]]:
    """Every numeric field of every History row and step record, as tag -> [(step, float32 value)]."""
    tags = {"train_loss": "train/loss", "train_accuracy": "train/accuracy", "val_loss": "val/loss",
            "val_accuracy": "val/accuracy"}
    out: dict[str, list[tuple[int, float]]] = {}
    for s in history.steps:
        out.setdefault("step/loss", []).append((s["step"], f32(s["loss"])))
        out.setdefault("step/grad_norm", []).append((s["step"], f32(s["grad_norm"])))
        for name, g, r in zip(history.layer_names, s["layer_grad_norms"], s["layer_update_ratios"], strict=True):
            out.setdefault(f"step/layer_grad_norm/{name}", []).append((s["step"], f32(g)))
            out.setdefault(f"step/layer_update_ratio/{name}", []).append((s["step"], f32(r)))
    for r in history.records:
        for field, v in r.items():
            if field != "epoch" and v is not None:
                out.setdefault(tags.get(field, field), []).append((r["epoch"], f32(v)))
    return out


def test_fit_scalars_read_back(run):
    history, path, snap = run
    events = read_events(path)
    assert events[0]["file_version"] == "brain.Event:2"
    assert all(e["wall_time"] > 1e9 for e in events)
    got, want = scalars(events), _expected(history)
    assert {"train/loss", "val/accuracy", "lr", "grad_norm", "seconds", "step/loss"} <= set(want)
    assert got == want
    assert [s for s, _ in got["step/loss"]] == [1, 3, 6]  # 4 steps per epoch: steps 1, 3, 6 recorded
    # flushed after every epoch: a live reader sees each epoch's row as soon as it ends
    seen = [sorted(e["step"] for e in read_events(data) if "val/loss" in dict(e["values"])) for data in snap.seen]
    assert seen == [[1], [1, 2]]


def test_fit_scalars_tensorboard_oracle(run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history, path, _ = run
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    got = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert got == _expected(history)

    # What TensorBoard's server reads: the events converted to tensors of its scalars plugin.
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.util import tensor_util

    acc = plugin_event_accumulator.EventAccumulator(str(path), size_guidance={"tensors": 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    assert {acc.SummaryMetadata(tag).plugin_data.plugin_name for tag in tags} == {"scalars"}
    got = {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
           for tag in tags}
    assert got == _expected(history)


def test_cli_flag(tmp_path):
    from fnn.cli.train import _callbacks

    parser = build_parser()
    args = parser.parse_args(["train", "--tensorboard", str(tmp_path / "tb")])
    assert [type(cb).__name__ for cb in _callbacks(args, tmp_path, {}, 1e-3)].count("TensorBoard") == 1
    (tb,) = [cb for cb in _callbacks(args, tmp_path, {}, 1e-3) if isinstance(cb, TensorBoard)]
    assert tb.logdir == tmp_path / "tb"
    args = parser.parse_args(["train"])
    assert not any(isinstance(cb, TensorBoard) for cb in _callbacks(args, tmp_path, {}, 1e-3))
