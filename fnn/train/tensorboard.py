"""TensorBoard scalars without TensorFlow: an event-file writer in plain Python, and a callback.

TensorBoard reads ``events.out.tfevents.*`` files: a sequence of TFRecords, each one
serialized ``tensorflow.Event`` protobuf message. Both formats are small enough to write by
hand, so writing needs neither TensorFlow nor the ``tensorboard`` package (only viewing does:
``pip install 'fnn[tensorboard]'`` then ``tensorboard --logdir DIR``).

A TFRecord is ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``,
little-endian, where the CRC is CRC-32C (Castagnoli) and the mask rotates it right by 15
bits and adds ``0xA282EAD8``. The messages written use these fields of ``Event``:
``wall_time`` (1, double), ``step`` (2, int64), ``file_version`` (3, string; the first event
of a file says ``"brain.Event:2"``) and ``summary`` (5, a ``Summary``: ``repeated Value
value = 1``, each ``Value`` a ``tag`` (1, string) and a ``simple_value`` (2, float32)).

Typical use::

    fit(..., callbacks=[TensorBoard("runs/tb")])      # or: fnn train --tensorboard runs/tb
    with EventWriter("runs/tb") as w:                 # any scalars, by hand
        w.add_scalar("loss", 0.25, step=1)
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import SupportsFloat, TypeGuard

from fnn.train.callbacks import Callback, Run


def _crc32c_table() -> tuple[int, ...]:
    """The 256 CRC-32C remainders of one byte, for the reflected polynomial 0x82F63B78."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()
_MASK_DELTA = 0xA282EAD8
_FILE_COUNTER = itertools.count()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli; iSCSI, RFC 3720) of `data` as an unsigned 32-bit int.

    ``crc32c(b"123456789") == 0xE3069283``. A byte at a time through a 256-entry table.
    """
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The CRC of a TFRecord field: `crc32c(data)` rotated right by 15 bits plus 0xA282EAD8 (mod 2**32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord holding `data`: its length (uint64), the length's masked CRC, the data, its masked CRC."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


# Protocol buffers: a field is its key (field number << 3 | wire type) and its value. Wire
# types: 0 varint, 1 eight little-endian bytes, 2 length-delimited, 5 four little-endian bytes.


def _varint(n: int) -> bytes:
    """`n` (an int64 or uint64; negatives as their 64-bit two's complement) as a base-128 varint."""
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    """A field's key followed by its already encoded payload."""
    return _varint(number << 3 | wire_type) + payload


def _length_delimited(number: int, data: bytes) -> bytes:
    """A string, bytes or embedded-message field: key, byte length, bytes."""
    return _field(number, 2, _varint(len(data)) + data)


def _float32(value: float) -> bytes:
    """`value` as a little-endian float32; finite values beyond float32's range become ±inf."""
    try:
        return struct.pack("<f", value)
    except OverflowError:
        return struct.pack("<f", math.copysign(math.inf, value))


def encode_event(wall_time: float, step: int, *, file_version: str | None = None,
                 scalars: Mapping[str, float] | None = None) -> bytes:
    """A serialized ``Event``: `wall_time` (seconds since the epoch), `step`, and either the
    `file_version` string or a ``Summary`` with one ``simple_value`` per ``tag: value`` of `scalars`."""
    out = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(int(step)))
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if scalars:
        values = b"".join(
            _length_delimited(1, _length_delimited(1, tag.encode()) + _field(2, 5, _float32(float(v))))
            for tag, v in scalars.items())
        out += _length_delimited(5, values)
    return out


class EventWriter:
    """Appends scalars to a new event file ``events.out.tfevents.{time}.{host}.{pid}.{n}{suffix}``
    in `logdir` (created if missing); `n` counts the writers of this process, so two writers
    never share a file. The first record is the ``brain.Event:2`` version event.

    Values are stored as float32 (TensorBoard's ``simple_value``); NaN and ±inf are kept.
    ``flush()`` hands the bytes to the operating system, so a running TensorBoard sees them.
    """

    def __init__(self, logdir: str | os.PathLike, filename_suffix: str = ""):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}."
                f"{next(_FILE_COUNTER)}{filename_suffix}")
        self.path = self.logdir / name
        self._file = open(self.path, "wb")
        self._file.write(tfrecord(encode_event(time.time(), 0, file_version="brain.Event:2")))
        self._file.flush()

    def add_scalars(self, scalars: Mapping[str, float], step: int, wall_time: float | None = None) -> None:
        """One event at `step` with a value per ``tag: value`` of `scalars` (nothing when empty)."""
        if scalars:
            when = time.time() if wall_time is None else wall_time
            self._file.write(tfrecord(encode_event(when, step, scalars=scalars)))

    def add_scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        """One scalar `value` under `tag` at `step`."""
        self.add_scalars({tag: value}, step, wall_time)

    def flush(self) -> None:
        """Write the buffered records to the file."""
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file (a second call does nothing)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _number(value: object) -> TypeGuard[SupportsFloat]:
    """Whether `value` is a real number (Python or NumPy int/float), not a bool and not None."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def epoch_scalars(record: Mapping[str, object]) -> dict[str, float]:
    """The scalars of a History row: every numeric field but ``epoch``, ``train_x`` tagged
    ``train/x``, ``val_x`` tagged ``val/x``, the others by their name (``lr``, ``grad_norm``,
    ``seconds``...). None and non-numbers are left out."""
    out: dict[str, float] = {}
    for field, value in record.items():
        if field == "epoch" or not _number(value):
            continue
        for prefix in ("train", "val"):
            if field.startswith(prefix + "_"):
                field = f"{prefix}/{field[len(prefix) + 1:]}"
                break
        out[field] = float(value)
    return out


def step_scalars(row: Mapping[str, object], layer_names: list[str]) -> dict[str, float]:
    """The scalars of a ``History.steps`` row: ``step/loss``, ``step/grad_norm``, and per layer
    with parameters ``step/layer_grad_norm/{name}`` and ``step/layer_update_ratio/{name}``."""
    out: dict[str, float] = {}
    for k in ("loss", "grad_norm"):
        value = row.get(k)
        if _number(value):
            out[f"step/{k}"] = float(value)
    for field, tag in (("layer_grad_norms", "layer_grad_norm"), ("layer_update_ratios", "layer_update_ratio")):
        values = row.get(field)
        if isinstance(values, (list, tuple)):
            out.update({f"step/{tag}/{name}": float(v) for name, v in zip(layer_names, values) if _number(v)})
    return out


class TensorBoard(Callback):
    """Write the run's scalars as TensorBoard event files into `logdir`.

    After each epoch, every numeric field of its History row at step = epoch, tagged
    ``train/loss``, ``train/accuracy``, ``val/loss``, ``val/accuracy``, ``lr``, ``lr_scale``,
    ``grad_norm``, ``seconds``, ``images_per_second`` (``epoch_scalars``; missing values are
    left out). With a ``StepRecorder`` (and ``steps=True``) also its per-step records at
    step = the global step: ``step/loss``, ``step/grad_norm``, ``step/layer_grad_norm/{layer}``
    and ``step/layer_update_ratio/{layer}`` (``step_scalars``); their wall time is the time
    they are written, at the end of the epoch. The file is flushed after
    every epoch, so a running ``tensorboard --logdir`` shows the progress, and closed when
    fit ends. Each ``fit`` call writes a new file (``EventWriter``); a resumed run continues
    the curves, as its epochs and steps continue.

    Writing needs no extra package; viewing needs TensorBoard (``pip install 'fnn[tensorboard]'``).
    Runs after the callbacks that fill the row (``LearningRateLog``) and before ``Checkpoint``.
    """

    order = 85

    def __init__(self, logdir: str | os.PathLike, steps: bool = True, filename_suffix: str = ""):
        self.logdir, self.steps, self.filename_suffix = Path(logdir), bool(steps), filename_suffix
        self.writer: EventWriter | None = None
        self._last_step = 0

    def _writer(self) -> EventWriter:
        if self.writer is None:
            self.writer = EventWriter(self.logdir, self.filename_suffix)
        return self.writer

    def _new_steps(self, run: Run) -> Iterator[dict]:
        """The step records not written yet (in order of their global step)."""
        for row in run.history.steps if self.steps else ():
            if row["step"] > self._last_step:
                self._last_step = row["step"]
                yield row

    def _write_new_steps(self, run: Run) -> None:
        """Write the step records not written yet; the file is opened only if there are any."""
        for row in self._new_steps(run):
            self._writer().add_scalars(step_scalars(row, run.history.layer_names), row["step"])

    def on_fit_start(self, run: Run) -> None:
        if self.writer is not None:  # a callback reused by another fit starts a new file
            self.writer.close()
            self.writer = None
        self._last_step = 0

    def on_epoch_end(self, run: Run) -> None:
        self._write_new_steps(run)
        writer = self._writer()
        writer.add_scalars(epoch_scalars(run.record), run.epoch)
        writer.flush()

    def on_fit_end(self, run: Run) -> None:
        self._write_new_steps(run)  # the steps of an epoch that stopped on NaN/Inf
        if self.writer is not None:
            self.writer.close()
            self.writer = None
