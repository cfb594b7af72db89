"""Dense and Maxout: the affine layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnn.core import Layer, check_input, check_params, check_positive_int, check_shape, promote
from fnn.init import glorot_uniform, zeros
from fnn.typing import Initializer


def Dense(out_dim: int, w_init: Initializer = glorot_uniform, b_init: Initializer = zeros) -> Layer:
    """Fully connected layer: y = x @ w + b, with w (D, M) and b (M,)."""
    out_dim = check_positive_int("Dense", "out_dim", out_dim)
    name = f"Dense({out_dim})"

    def init(key, input_shape):
        (d,) = check_shape(name, "input_shape", input_shape, rank=1)
        kw, kb = jax.random.split(key)
        return (out_dim,), {"w": w_init(kw, (d, out_dim)), "b": b_init(kb, (out_dim,))}, {}

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, D) -> y: (N, M)."""
        check_params(name, "params", params, {"w": (None, out_dim), "b": (out_dim,)})
        check_input(name, x, (None, params["w"].shape[0]))
        x, w, b = promote(x, params["w"], params["b"])
        return x @ w + b[None], state

    def backward(params, state, x, dy, *, key=None, train=False):
        """dw = xᵀ·dy, db = Σ_N dy, dx = dy·wᵀ."""
        x, w, dy = promote(x, params["w"], dy)
        dparams = {"w": (x.T @ dy).astype(params["w"].dtype), "b": dy.sum(0).astype(params["b"].dtype)}
        return dparams, dy @ w.T

    return Layer(name, init, apply, backward, kind="dense")


def Maxout(out_dim: int, pieces: int, w_init: Initializer = glorot_uniform) -> Layer:
    """Maxout (Goodfellow et al. 2013): y_m = max_k (x @ w[:, m, k] + b[m, k]).

    w: (D, M, K), b: (M, K). Where pieces tie, the gradient is split evenly between them,
    as JAX's autodiff of ``max`` does.
    """
    out_dim = check_positive_int("Maxout", "out_dim", out_dim)
    pieces = check_positive_int("Maxout", "pieces", pieces)
    name = f"Maxout({out_dim}, pieces={pieces})"

    def init(key, input_shape):
        (d,) = check_shape(name, "input_shape", input_shape, rank=1)
        w = w_init(key, (d, out_dim * pieces)).reshape(d, out_dim, pieces)
        return (out_dim,), {"w": w, "b": jnp.zeros((out_dim, pieces), jnp.float32)}, {}

    def _z(params, x):
        x, w, b = promote(x, params["w"], params["b"])
        return jnp.einsum("nd,dmk->nmk", x, w) + b[None]

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, D) -> y: (N, M)."""
        check_params(name, "params", params, {"w": (None, out_dim, pieces), "b": (out_dim, pieces)})
        check_input(name, x, (None, params["w"].shape[0]))
        return _z(params, x).max(-1), state

    def backward(params, state, x, dy, *, key=None, train=False):
        """dz = dy routed to the winning piece(s); dw = Σ_N x ⊗ dz, db = Σ_N dz, dx = Σ_{m,k} dz·w."""
        z = _z(params, x)
        win = (z == z.max(-1, keepdims=True)).astype(z.dtype)
        dz = dy.astype(z.dtype)[..., None] * win / win.sum(-1, keepdims=True)
        x, w = promote(x, params["w"])
        dparams = {"w": jnp.einsum("nd,nmk->dmk", x, dz).astype(params["w"].dtype),
                   "b": dz.sum(0).astype(params["b"].dtype)}
        return dparams, jnp.einsum("nmk,dmk->nd", dz, w)

    return Layer(name, init, apply, backward, kind="maxout")
