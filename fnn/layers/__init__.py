"""All layers. Each constructor returns a ``Layer(name, init, apply, backward)`` with its ``kind``
(composites: also ``fwd``, ``bwd`` and ``children``)."""

from fnn.layers.activation import Elu, Gelu, LeakyRelu, LogSoftmax, Relu, Sigmoid, Softmax, Tanh
from fnn.layers.augment import RandomCrop, RandomErasing, RandomHorizontalFlip, with_augmentation
from fnn.layers.combinators import Residual, Shared, run_serial, serial
from fnn.layers.conv import Conv, Conv1D, Conv2D, Conv3D
from fnn.layers.dense import Dense, Maxout
from fnn.layers.dropout import Dropout
from fnn.layers.norm import BatchNorm
from fnn.layers.pool import (
    AvgPool,
    AvgPool1D,
    AvgPool2D,
    AvgPool3D,
    GlobalAvgPool,
    MaxPool,
    MaxPool1D,
    MaxPool2D,
    MaxPool3D,
    MinPool,
    MinPool1D,
    MinPool2D,
    MinPool3D,
)
from fnn.layers.reshape import Flatten, Reshape
from fnn.layers.tta import Flip, Shift, tta_views, with_tta

__all__ = [
    "Dense", "Maxout", "Conv", "Conv1D", "Conv2D", "Conv3D", "MaxPool", "AvgPool", "MinPool", "GlobalAvgPool",
    "MaxPool1D", "MaxPool2D", "MaxPool3D", "MinPool1D", "MinPool2D", "MinPool3D", "AvgPool1D", "AvgPool2D", "AvgPool3D",
    "BatchNorm", "Dropout", "Flatten", "Reshape", "Relu", "LeakyRelu", "Elu", "Gelu", "Sigmoid", "Tanh",
    "Softmax", "LogSoftmax", "serial", "Residual", "Shared", "run_serial",
    "RandomCrop", "RandomHorizontalFlip", "RandomErasing", "with_augmentation",
    "Flip", "Shift", "tta_views", "with_tta",
]
