"""Activations: elementwise (Relu, LeakyRelu, Elu, Gelu, Sigmoid, Tanh) and over the last axis
(Softmax, LogSoftmax). None has parameters; each keeps the input's shape and dtype."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fnn.core import Layer, check_float, check_range, check_shape


def _elementwise(name: str, kind: str, f, df) -> Layer:
    """A parameter-free layer y = f(x) with backward dx = dy · f'(x); `kind` names f (e.g. "relu")."""

    def init(key, input_shape):
        return check_shape(name, "input_shape", input_shape), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, ...) -> y: (N, ...)."""
        check_float(name, "x", x)
        return f(x), state

    def backward(params, state, x, dy, *, key=None, train=False):
        return {}, dy * df(x)

    return Layer(name, init, apply, backward, kind=kind)


def Relu() -> Layer:
    """max(x, 0). The derivative at 0 is taken as 0, as jax.nn.relu does."""
    return _elementwise("Relu", "relu", lambda x: jnp.where(x > 0, x, 0),
                        lambda x: (x > 0).astype(x.dtype))


def LeakyRelu(negative_slope: float = 0.01) -> Layer:
    """x for x > 0, negative_slope·x otherwise; derivative 1 or negative_slope."""
    a = check_range("LeakyRelu", "negative_slope", negative_slope, 0.0, 1.0)
    return _elementwise(f"LeakyRelu({a})", "leaky_relu", lambda x: jnp.where(x > 0, x, a * x),
                        lambda x: jnp.where(x > 0, 1.0, a).astype(x.dtype))


def Elu(alpha: float = 1.0) -> Layer:
    """x for x > 0, α(eˣ − 1) otherwise (Clevert et al. 2015); derivative 1 or α·eˣ."""
    a = check_range("Elu", "alpha", alpha, 0.0, math.inf, low_inclusive=False)
    # expm1 of where(x > 0, 0, x) avoids overflow in the branch that where() discards. Not of
    # minimum(x, 0): autodiff splits minimum's gradient at the tie x = 0 and would give α/2 there.
    neg = lambda x: jnp.where(x > 0, 0, x)
    return _elementwise(f"Elu({a})", "elu", lambda x: jnp.where(x > 0, x, a * jnp.expm1(neg(x))),
                        lambda x: jnp.where(x > 0, 1.0, a * jnp.exp(neg(x))).astype(x.dtype))


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu_tanh(x):
    return 0.5 * x * (1 + jnp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))


def _gelu_tanh_grad(x):
    t = jnp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x**2)


def _gelu_exact(x):
    return 0.5 * x * (1 + jax.lax.erf(x / math.sqrt(2.0)))


def _gelu_exact_grad(x):
    """d/dx x·Φ(x) = Φ(x) + x·φ(x)."""
    cdf = 0.5 * (1 + jax.lax.erf(x / math.sqrt(2.0)))
    pdf = jnp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return cdf + x * pdf


def Gelu(approximate: bool = False) -> Layer:
    """x·Φ(x) (Hendrycks & Gimpel 2016); approximate=True uses the tanh form, as PyTorch's 'tanh'.

    Note the default is the exact form (PyTorch's default); jax.nn.gelu defaults to approximate.
    """
    if approximate:
        return _elementwise("Gelu(approximate=True)", "gelu", _gelu_tanh, _gelu_tanh_grad)
    return _elementwise("Gelu", "gelu", _gelu_exact, _gelu_exact_grad)


def Sigmoid() -> Layer:
    """σ(x) = 1/(1+e⁻ˣ); derivative σ(1−σ)."""

    def dsigmoid(x):
        s = jax.nn.sigmoid(x)
        return s * (1 - s)

    return _elementwise("Sigmoid", "sigmoid", jax.nn.sigmoid, dsigmoid)


def Tanh() -> Layer:
    """tanh(x); derivative 1 − tanh²."""
    return _elementwise("Tanh", "tanh", jnp.tanh, lambda x: 1 - jnp.tanh(x) ** 2)


def Softmax() -> Layer:
    """softmax over the last axis (stable: the max is subtracted first)."""
    name = "Softmax"

    def init(key, input_shape):
        return check_shape(name, "input_shape", input_shape), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, ..., M) -> y: (N, ..., M), rows sum to 1."""
        check_float(name, "x", x)
        return jax.nn.softmax(x, axis=-1), state

    def backward(params, state, x, dy, *, key=None, train=False):
        """Jacobian diag(y) − y yᵀ per row, so dx = y ⊙ (dy − ⟨dy, y⟩)."""
        y = jax.nn.softmax(x, axis=-1)
        return {}, y * (dy - (dy * y).sum(-1, keepdims=True))

    return Layer(name, init, apply, backward, kind="softmax")


def LogSoftmax() -> Layer:
    """log softmax over the last axis: x − logsumexp(x)."""
    name = "LogSoftmax"

    def init(key, input_shape):
        return check_shape(name, "input_shape", input_shape), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        """x: (N, ..., M) -> y: (N, ..., M)."""
        check_float(name, "x", x)
        return jax.nn.log_softmax(x, axis=-1), state

    def backward(params, state, x, dy, *, key=None, train=False):
        """∂yᵢ/∂xⱼ = δᵢⱼ − softmax(x)ⱼ, so dx = dy − softmax(x)·Σ dy."""
        return {}, dy - jax.nn.softmax(x, axis=-1) * dy.sum(-1, keepdims=True)

    return Layer(name, init, apply, backward, kind="log_softmax")
