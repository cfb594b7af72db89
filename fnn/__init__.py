"""fnn: a functional neural-network library on JAX.

Parameters are pytrees; layers are pure ``init``/``apply``/``backward`` functions; gradients
come from ``jax.grad`` or from every layer's hand-derived backward (``fnn.backprop``).
"""

from fnn import checkpoint, data, diagnostics, init, layers, losses, models, optim, parallel, precision, search, train
from fnn._compile import jit
from fnn.backprop import value_and_grad, with_own_vjp
from fnn.core import Layer, Loss, Optimizer
from fnn.diagnostics import summary
from fnn.gradcheck import check_layer, check_loss, check_model
from fnn.layers import *  # noqa: F403  (the layer constructors, also at the top level)
from fnn.layers import __all__ as _layer_names
from fnn.train import History, TrainState, evaluate, fit, init_train_state, train_step

__version__ = "0.2.0.dev0"

__all__ = [
    "Layer", "Loss", "Optimizer", "init", "layers", "losses", "models", "optim", "data", "train", "checkpoint",
    "diagnostics", "search", "parallel", "precision",
    "fit", "evaluate", "train_step", "init_train_state", "TrainState", "History",
    "value_and_grad", "with_own_vjp", "jit", "summary", "check_layer", "check_loss", "check_model", *_layer_names,
]
