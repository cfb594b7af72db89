"""fnn: a functional neural-network library on JAX."""

from fnn.core import Layer, Loss, Optimizer

__version__ = "0.1.0"
