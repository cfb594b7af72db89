"""``summary``: a model's layers as a tree with output shapes, parameter counts and state sizes.

Everything is computed with ``jax.eval_shape`` (shapes only: no parameter is materialized and
no FLOP is spent), and the structure comes from ``Layer.children`` and ``Layer.kind``: a
``serial``'s children take the entries of its params tuple in order, a ``Residual``'s its
``"block"`` and ``"shortcut"`` entries, a ``Shared``'s child the same params as itself (one set
of weights, counted once however many inputs share it). Parameters a composite holds beyond
its children's (e.g. a ``Residual``'s automatic projection shortcut) get a row of their own,
so the leaf rows always add up to the total.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fnn.core import Layer, check_shape, fmt_shape


class SummaryRow(NamedTuple):
    """One row of a model summary.

    Attributes:
      path: where the layer sits, e.g. ``"3"`` (the 4th layer of the top serial) or
        ``"5.block.0"`` (the first layer of the block of the Residual at position 5); ``""`` for
        the model itself.
      depth: nesting depth (0 for the model itself).
      name: the layer's name, e.g. ``"Dense(128)"``.
      kind: the layer's ``kind`` (``"dense"``, ``"serial"``, ...), None when unknown.
      output_shape: the layer's output shape for one example (no batch axis); for a
        ``Shared`` layer, the output for each of its inputs. None for the extra-parameters rows.
      num_params: scalar parameters held by this layer and everything inside it.
      num_state: scalar state values (BatchNorm's running statistics) likewise.
      is_leaf: True for rows without children: the leaf rows' counts add up to the total.
    """

    path: str
    depth: int
    name: str
    kind: str | None
    output_shape: tuple[int, ...] | None
    num_params: int
    num_state: int
    is_leaf: bool


class Summary(NamedTuple):
    """What ``summary`` returns; ``str(s)`` is the table.

    Attributes:
      rows: one ``SummaryRow`` per layer, depth first (a composite before its children).
      input_shape: the shape of one example.
      output_shape: the model's output shape for one example.
      total_params: scalar parameters of the whole model (the leaf rows' sum).
      total_state: scalar state values of the whole model.
      param_bytes, state_bytes: their size in bytes at the dtypes ``init`` makes (float32).
    """

    rows: tuple[SummaryRow, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    total_params: int
    total_state: int
    param_bytes: int
    state_bytes: int

    def __str__(self) -> str:
        return format_summary(self)


def _size(tree) -> int:
    return int(sum(math.prod(a.shape) for a in jax.tree.leaves(tree)))


def _nbytes(tree) -> int:
    return int(sum(math.prod(a.shape) * jnp.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree)))


def _output_shape(layer: Layer, params, state, input_shape, *, shared: bool) -> tuple[int, ...]:
    """The per-example output shape of ``layer.apply`` (evaluation mode), from shapes alone."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    y = jax.eval_shape(lambda p, s, xx: layer.apply(p, s, (xx,) if shared else xx)[0], params, state, x)
    if shared:
        y = y[0]
    if not hasattr(y, "shape"):
        raise ValueError(f"summary: {layer.name} returns {type(y).__name__}, not an array; "
                         f"summary handles layers with one array output")
    return tuple(int(d) for d in y.shape[1:])


def _parts(layer: Layer, params, state, input_shape):
    """(label, child, params, state, input shape) for each child of a composite, or None to treat
    `layer` as a leaf (a kind whose params layout this function does not know)."""
    kids = tuple(layer.children)
    if not kids:
        return None
    if layer.kind == "serial" and isinstance(params, (tuple, list)) and len(params) == len(kids):
        parts, shape = [], input_shape
        for i, (child, p, s) in enumerate(zip(kids, params, state, strict=True)):
            parts.append((str(i), child, p, s, shape))
            shape = _output_shape(child, p, s, shape, shared=child.kind == "shared")
        return parts
    if layer.kind == "residual" and isinstance(params, dict) and set(params) == {"block", "shortcut"}:
        labels = ("block", "shortcut")[:len(kids)]
        return [(lab, child, params[lab], state[lab], input_shape) for lab, child in zip(labels, kids, strict=True)]
    if layer.kind == "shared" and len(kids) == 1:
        return [("shared", kids[0], params, state, input_shape)]
    return None


def _walk(layer: Layer, params, state, input_shape, path: str, depth: int, rows: list) -> None:
    """Append the rows of `layer` and of everything inside it (depth first) to `rows`."""
    shared = layer.kind == "shared"
    out_shape = _output_shape(layer, params, state, input_shape, shared=shared)
    parts = _parts(layer, params, state, input_shape)
    rows.append(SummaryRow(path, depth, layer.name, layer.kind, out_shape, _size(params), _size(state),
                           parts is None))
    if parts is None:
        return
    for label, child, p, s, shape in parts:
        _walk(child, p, s, shape, f"{path}.{label}" if path else label, depth + 1, rows)
    if shared:
        return  # the child holds exactly the shared weights
    own_p = _size(params) - sum(_size(p) for _, _, p, _, _ in parts)
    own_s = _size(state) - sum(_size(s) for _, _, _, s, _ in parts)
    if own_p or own_s:
        what = "(projection shortcut)" if layer.kind == "residual" else "(own parameters)"
        rows.append(SummaryRow(f"{path}.+" if path else "+", depth + 1, what, None, None, own_p, own_s, True))


def summary(model: Layer, input_shape: Sequence[int], *, key: jax.Array | None = None) -> Summary:
    """Per-layer output shapes, parameter counts and state sizes of `model`, from shapes alone.

    Args:
      model: any Layer; ``serial``, ``Residual`` and ``Shared`` (also inside ``fnn.models``) are
        shown as a tree, other layers as one row.
      input_shape: the shape of one example, no batch axis, e.g. (28, 28, 1). For a ``Shared``
        model, the shape of one of its inputs.
      key: the PRNG key given to ``init`` (default ``jax.random.key(0)``); only shapes are used,
        so it does not change the summary.

    Returns:
      A ``Summary``: ``rows``, totals, and ``str(summary)`` as a table.

    Raises:
      ValueError: a bad input shape (the message of the layer's ``init`` names the layer).
    """
    input_shape = check_shape("summary", "input_shape", input_shape)
    key = jax.random.key(0) if key is None else key
    params, state = jax.eval_shape(lambda k: model.init(k, input_shape)[1:], key)
    rows: list[SummaryRow] = []
    _walk(model, params, state, input_shape, "", 0, rows)
    leaves = [r for r in rows if r.is_leaf]
    return Summary(tuple(rows), input_shape, rows[0].output_shape,  # type: ignore[arg-type]  # the model's row has one
                   sum(r.num_params for r in leaves),
                   sum(r.num_state for r in leaves), _nbytes(params), _nbytes(state))


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _label(r: SummaryRow) -> str:
    """The row's name, after its place for a Residual's parts ("block: serial")."""
    last = r.path.rsplit(".", 1)[-1]
    return f"{last}: {r.name}" if last in ("block", "shortcut") else r.name


def format_summary(s: Summary) -> str:
    """The summary as a fixed-width table: one row per layer, children indented under their parent."""
    names = ["  " * r.depth + _label(r) for r in s.rows]
    shapes = ["-" if r.output_shape is None else fmt_shape((None, *r.output_shape)) for r in s.rows]
    wn, ws = max(len(n) for n in names + ["layer"]), max(len(x) for x in shapes + ["output shape"])
    lines = [f"{'layer':<{wn}}  {'output shape':<{ws}}  {'params':>10}  {'state':>8}"]
    lines.append("-" * len(lines[0]))
    for r, n, sh in zip(s.rows, names, shapes, strict=True):
        lines.append(f"{n:<{wn}}  {sh:<{ws}}  {r.num_params:>10,}  {r.num_state:>8,}")
    lines.append("-" * len(lines[0]))
    lines.append(f"input {fmt_shape((None, *s.input_shape))}, output {fmt_shape((None, *s.output_shape))}")
    lines.append(f"parameters: {s.total_params:,} ({_bytes(s.param_bytes)}); "
                 f"state: {s.total_state:,} ({_bytes(s.state_bytes)})")
    return "\n".join(lines)


def summary_dict(s: Summary) -> dict[str, Any]:
    """The summary as JSON-ready data (rows as dicts, shapes as lists)."""
    return {"input_shape": list(s.input_shape), "output_shape": list(s.output_shape),
            "total_params": s.total_params, "total_state": s.total_state,
            "param_bytes": s.param_bytes, "state_bytes": s.state_bytes,
            "rows": [r._replace(output_shape=None if r.output_shape is None else list(r.output_shape))._asdict()  # type: ignore[arg-type]
                     for r in s.rows]}


__all__ = ["SummaryRow", "Summary", "summary", "format_summary", "summary_dict"]
