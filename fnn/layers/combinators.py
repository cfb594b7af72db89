"""Layers made of layers: serial, Residual, Shared.

Each combinator is itself a ``Layer`` and implements the tape pair (``fwd``/``bwd``), so the
manual gradient of a whole network runs the forward pass once and the backward pass in reverse.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from fnn.core import Layer, check_shape, layer_bwd, layer_fwd
from fnn.typing import Array, Key, PyTree


@contextlib.contextmanager
def _at(prefix: str):
    """Re-raise a ValueError from an inner layer with its position, e.g. 'serial[2] Conv2D(...)'."""
    try:
        yield
    except ValueError as e:
        raise ValueError(f"{prefix} {e}") from None


def _split(key, n):
    return (None,) * n if key is None else tuple(jax.random.split(key, n))


def _again(key):
    """The forward pass's key, used once more by the backward pass to regenerate the same
    randomness (e.g. Dropout masks) instead of storing it; ``jax.random.clone`` tells JAX's
    key-reuse checker that this second use is intended."""
    return None if key is None else jax.random.clone(key)


def run_serial(layers: Sequence[Layer], params: Sequence[PyTree], state: Sequence[PyTree], x: Array, *,
               key: Key | None = None, train: bool = False,
               tape: bool = False) -> Iterator[tuple[Array, PyTree, Any]]:
    """Run `layers` in sequence exactly as ``serial``'s apply and fwd do, yielding per layer
    ``(y, new_state, saved)``: its output, its new state, and (``tape=True``: ``layer_fwd``)
    what its backward needs, else None (``layer.apply``).

    The one place the per-layer keys are made: ``key`` split into one subkey per layer (None
    stays None). Tools that need each layer's output (fnn.diagnostics) iterate this rather
    than re-deriving the split. Errors are prefixed with the layer's position, ``serial[i]``.
    """
    x_i = x
    for i, (layer, p, s, k) in enumerate(zip(layers, params, state, _split(key, len(layers)))):
        with _at(f"serial[{i}]"):
            if tape:
                x_i, s_new, saved = layer_fwd(layer, p, s, x_i, key=k, train=train)
            else:
                (x_i, s_new), saved = layer.apply(p, s, x_i, key=k, train=train), None
        yield x_i, s_new, saved


def serial(*layers: Layer) -> Layer:
    """Compose layers in sequence: y = fₙ(…f₂(f₁(x))).

    params and state are tuples with one entry per layer. ``key`` is split into one subkey
    per layer, the same way in ``apply`` and ``backward`` (``run_serial``), so stochastic layers
    see the same randomness in both. Errors from an inner layer are prefixed with its position:
    ``serial[2] Conv2D(...): expected x of shape ...``. ``children`` holds the layers; kind "serial".
    """
    if not layers:
        raise ValueError("serial: needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise ValueError(f"serial[{i}]: expected a Layer, got {type(layer).__name__} "
                             f"(did you forget to call the constructor, e.g. Relu() instead of Relu?)")
    n = len(layers)
    name = "serial"

    def init(key, input_shape):
        shape = check_shape(name, "input_shape", input_shape)
        params, state = [], []
        for i, (layer, k) in enumerate(zip(layers, jax.random.split(key, n))):
            with _at(f"serial[{i}]"):
                shape, p, s = layer.init(k, shape)
            params.append(p)
            state.append(s)
        return shape, tuple(params), tuple(state)

    def fwd(params, state, x, *, key=None, train=False):
        steps = list(run_serial(layers, params, state, x, key=key, train=train, tape=True))
        return steps[-1][0], tuple(s for _, s, _ in steps), tuple(sv for _, _, sv in steps)

    def bwd(params, state, saved, dy, *, key=None, train=False):
        """Chain rule in reverse: dx of layer i is dy of layer i-1."""
        keys = _split(_again(key), n)
        dparams = [None] * n
        for i in reversed(range(n)):
            dparams[i], dy = layer_bwd(layers[i], params[i], state[i], saved[i], dy, key=keys[i], train=train)
        return tuple(dparams), dy

    def apply(params, state, x, *, key=None, train=False):
        _check_tuple(params, state)
        new_state = []
        for step in run_serial(layers, params, state, x, key=key, train=train):
            new_state.append(step[1])
        return step[0], tuple(new_state)

    def backward(params, state, x, dy, *, key=None, train=False):
        _check_tuple(params, state)
        _, _, saved = fwd(params, state, x, key=key, train=train)
        return bwd(params, state, saved, dy, key=key, train=train)

    def _check_tuple(params, state):
        for what, tree in (("params", params), ("state", state)):
            if not isinstance(tree, (tuple, list)) or len(tree) != n:
                got = f"{type(tree).__name__} of length {len(tree)}" if isinstance(tree, (tuple, list)) \
                    else type(tree).__name__
                raise ValueError(f"serial: expected {what} as a tuple of {n} entries (one per layer), "
                                 f"got {got}: were these made by this model's init?")

    return Layer(name, init, apply, backward, fwd, bwd, children=tuple(layers), kind="serial")


def _auto_projection(input_shape, output_shape) -> Layer:
    """A linear shortcut mapping input_shape to output_shape: Dense, or a strided 1x..x1 Conv."""
    if len(input_shape) == 1 and len(output_shape) == 1:
        from fnn.layers.dense import Dense
        return Dense(output_shape[0])
    if len(input_shape) == len(output_shape) and len(input_shape) >= 2:
        from fnn.layers.conv import Conv
        spatial_in, spatial_out = input_shape[:-1], output_shape[:-1]
        stride = []
        for i, o in zip(spatial_in, spatial_out):
            s = -(-i // o)
            if -(-i // s) != o:
                raise ValueError(f"Residual: cannot project {input_shape} to {output_shape} with a strided "
                                 f"1x1 convolution; pass shortcut= explicitly")
            stride.append(s)
        nd = len(spatial_in)
        return Conv(output_shape[-1], (1,) * nd, stride=tuple(stride), padding="SAME", use_bias=False)
    raise ValueError(f"Residual: cannot project {input_shape} to {output_shape}; pass shortcut= explicitly")


def Residual(block: Layer, shortcut: Layer | None = None) -> Layer:
    """y = block(x) + shortcut(x); shortcut is the identity when shapes agree.

    When the block changes the shape and no shortcut is given, a linear projection is made
    (Dense for vectors, a strided 1x1 Conv without bias for images, as in ResNet option B).
    params = {"block": ..., "shortcut": ...} (shortcut params are {} for the identity).
    children: (block,), or (block, shortcut) when a shortcut is given; kind "residual".
    """
    name = f"Residual({block.name})"
    # An automatic projection is a pure function of (input shape, block output shape), both
    # static, so apply/backward rebuild it from the shapes; the cache only avoids re-making it.
    cache: dict = {}

    def _shortcut_for(input_shape, output_shape):
        if shortcut is not None:
            return shortcut
        if tuple(input_shape) == tuple(output_shape):
            return None
        k = (tuple(input_shape), tuple(output_shape))
        if k not in cache:
            cache[k] = _auto_projection(*k)
        return cache[k]

    children = (block,) if shortcut is None else (block, shortcut)

    def init(key, input_shape):
        input_shape = check_shape(name, "input_shape", input_shape)
        kb, ks = jax.random.split(key)
        with _at(f"{name}.block"):
            out_shape, pb, sb = block.init(kb, input_shape)
        sc = _shortcut_for(input_shape, out_shape)
        if sc is None:
            ps, ss = {}, {}
        else:
            with _at(f"{name}.shortcut"):
                sc_shape, ps, ss = sc.init(ks, input_shape)
            if tuple(sc_shape) != tuple(out_shape):
                raise ValueError(f"{name}: shortcut output {sc_shape} does not match block output {out_shape}")
        return out_shape, {"block": pb, "shortcut": ps}, {"block": sb, "shortcut": ss}

    def _sc(params, state, x):
        if shortcut is not None:
            return shortcut
        if not params["shortcut"]:
            return None
        yb_shape = jax.eval_shape(lambda p, s, x: block.apply(p, s, x)[0],
                                  params["block"], state["block"], x).shape
        return _shortcut_for(x.shape[1:], yb_shape[1:])

    def fwd(params, state, x, *, key=None, train=False):
        kb, ks = _split(key, 2)
        with _at(f"{name}.block"):
            yb, sb, saved_b = layer_fwd(block, params["block"], state["block"], x, key=kb, train=train)
        sc = _sc(params, state, x)
        if sc is None:
            if yb.shape != x.shape:
                raise ValueError(f"{name}: block output {yb.shape} differs from input {x.shape}")
            return x + yb, {"block": sb, "shortcut": state["shortcut"]}, (saved_b, None)
        ys, ss, saved_s = layer_fwd(sc, params["shortcut"], state["shortcut"], x, key=ks, train=train)
        return ys + yb, {"block": sb, "shortcut": ss}, (saved_b, saved_s)

    def bwd(params, state, saved, dy, *, key=None, train=False):
        """dx = dy·∂block/∂x + dy·∂shortcut/∂x (the identity shortcut passes dy straight through)."""
        kb, ks = _split(_again(key), 2)
        saved_b, saved_s = saved
        dpb, dx = layer_bwd(block, params["block"], state["block"], saved_b, dy, key=kb, train=train)
        if saved_s is None:
            return {"block": dpb, "shortcut": {}}, dx + dy
        sc = _sc(params, state, saved_s)
        dps, dxs = layer_bwd(sc, params["shortcut"], state["shortcut"], saved_s, dy, key=ks, train=train)
        return {"block": dpb, "shortcut": dps}, dx + dxs

    def apply(params, state, x, *, key=None, train=False):
        y, new_state, _ = fwd(params, state, x, key=key, train=train)
        return y, new_state

    def backward(params, state, x, dy, *, key=None, train=False):
        _, _, saved = fwd(params, state, x, key=key, train=train)
        return bwd(params, state, saved, dy, key=key, train=train)

    return Layer(name, init, apply, backward, fwd, bwd, children=children, kind="residual")


def Shared(model: Layer) -> Layer:
    """Apply one model, with one set of weights, to each input of a tuple (a siamese/triplet net).

    x: a tuple of arrays, e.g. (x_anchor, x_pos, x_neg), each (N, *input_shape)
    -> y: the tuple of outputs. State (e.g. BatchNorm statistics) is threaded through the
    branches in order; each branch gets its own subkey. dparams is the sum over branches.
    ``init`` takes the shape of ONE input. children: (model,); kind "shared".
    """
    name = f"Shared({model.name})"

    def init(key, input_shape):
        return model.init(key, input_shape)

    def fwd(params, state, x, *, key=None, train=False):
        if not isinstance(x, (tuple, list)) or not x:
            raise ValueError(f"{name}: expected x as a non-empty tuple of arrays, got {type(x).__name__}")
        ys, saved, states = [], [], []
        for i, (xi, ki) in enumerate(zip(x, _split(key, len(x)))):
            states.append(state)
            with _at(f"{name}[{i}]"):
                yi, state, sv = layer_fwd(model, params, state, xi, key=ki, train=train)
            ys.append(yi)
            saved.append(sv)
        return tuple(ys), state, (tuple(saved), tuple(states))

    def bwd(params, state, saved, dy, *, key=None, train=False):
        """Weights are shared, so their gradient is the sum of each branch's gradient."""
        saved_x, states = saved
        keys = _split(_again(key), len(saved_x))
        dparams, dxs = None, []
        for sv, si, dyi, ki in zip(saved_x, states, dy, keys):
            dp, dx = layer_bwd(model, params, si, sv, dyi, key=ki, train=train)
            dparams = dp if dparams is None else jax.tree.map(jnp.add, dparams, dp)
            dxs.append(dx)
        return dparams, tuple(dxs)

    def apply(params, state, x, *, key=None, train=False):
        y, new_state, _ = fwd(params, state, x, key=key, train=train)
        return y, new_state

    def backward(params, state, x, dy, *, key=None, train=False):
        _, _, saved = fwd(params, state, x, key=key, train=train)
        return bwd(params, state, saved, dy, key=key, train=train)

    return Layer(name, init, apply, backward, fwd, bwd, children=(model,), kind="shared")
