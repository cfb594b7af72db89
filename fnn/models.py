"""Ready-made networks. Each returns a ``Layer`` (a ``serial`` underneath) whose ``init`` refuses an
input shape other than the one it was built for, and whose ``apply`` checks x against it.

Image models take channels-last ``input_shape = (H, W, C)`` (any number of spatial dims works
where noted) and end with logits: pair them with ``losses.softmax_cross_entropy``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fnn.core import Layer, check_input, check_positive_int, check_range, check_shape, fmt_shape
from fnn.layers.activation import Relu, Tanh
from fnn.layers.combinators import Residual, serial
from fnn.layers.conv import Conv
from fnn.layers.dense import Dense
from fnn.layers.dropout import Dropout
from fnn.layers.norm import BatchNorm
from fnn.layers.pool import AvgPool, GlobalAvgPool, MaxPool
from fnn.layers.reshape import Flatten
from fnn.typing import ShapeLike


def _for_input(name: str, net: Layer, input_shape) -> Layer:
    """`net` renamed (children and kind kept), with init refusing any input shape but `input_shape`
    and apply checking x."""
    expected = check_shape(name, "input_shape", input_shape)

    def _check(x):
        check_input(name, x, (None, *expected))

    def init(key, shape):
        if tuple(shape) != expected:
            raise ValueError(f"{name}: built for input_shape {fmt_shape(expected)}, "
                             f"got {fmt_shape(tuple(shape))}")
        return net.init(key, expected)

    def apply(params, state, x, *, key=None, train=False):
        _check(x)
        return net.apply(params, state, x, key=key, train=train)

    def fwd(params, state, x, *, key=None, train=False):
        _check(x)
        return net.fwd(params, state, x, key=key, train=train)  # type: ignore[misc]  # net is a serial: it has fwd

    return Layer(name, init, apply, net.backward, fwd, net.bwd, net.children, net.kind)


def _make(activation) -> Layer:
    """An activation given as a constructor (Relu) or as a layer (Relu())."""
    return activation if isinstance(activation, Layer) else activation()


def _conv(nd, c, k=3, *, padding="SAME", stride=1, use_bias=True):
    return Conv(c, (k,) * nd, stride=stride, padding=padding, use_bias=use_bias)


def _nd(name, input_shape):
    shape = check_shape(name, "input_shape", input_shape, min_rank=2)
    return len(shape) - 1


def mlp(sizes: Sequence[int], activation: Callable | Layer = Relu, *, dropout: float = 0.0,
        **dense_kwargs: Any) -> Layer:
    """Multilayer perceptron: sizes = (input, hidden..., output), e.g. mlp((784, 256, 256, 10)).

    Dense → activation (→ Dropout) for every hidden size, then a Dense output (logits).
    dense_kwargs (w_init, b_init) go to every Dense.
    """
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise ValueError(f"mlp: sizes needs an input and an output size, got {sizes!r}")
    sizes = tuple(check_positive_int("mlp", "sizes[i]", s) for s in sizes)
    drop = check_range("mlp", "dropout", dropout, 0.0, 1.0)
    layers = []
    for m in sizes[1:-1]:
        layers += [Dense(m, **dense_kwargs), _make(activation)] + ([Dropout(drop)] if drop else [])
    layers.append(Dense(sizes[-1], **dense_kwargs))
    return _for_input(f"mlp{sizes}", serial(*layers), (sizes[0],))


def simple_cnn(num_classes: int = 10, input_shape: ShapeLike = (28, 28, 1)) -> Layer:
    """The benchmark workload: Conv32-3x3-SAME, ReLU, MaxPool2, Conv64-3x3-SAME, ReLU, MaxPool2,
    Flatten, Dense128, ReLU, Dense(num_classes). 421,642 parameters at 28x28x1 with 10 classes."""
    nd = _nd("simple_cnn", input_shape)
    net = serial(_conv(nd, 32), Relu(), MaxPool((2,) * nd), _conv(nd, 64), Relu(), MaxPool((2,) * nd),
                 Flatten(), Dense(128), Relu(), Dense(num_classes))
    return _for_input("simple_cnn", net, input_shape)


def lenet5(num_classes: int = 10, input_shape: ShapeLike = (28, 28, 1), batch_norm: bool = False, dropout: float = 0.0,
           activation: Callable | Layer = Tanh, pool: str = "avg") -> Layer:
    """LeNet-5 (LeCun et al. 1998) adapted to 28x28 inputs.

    C1 6@5x5 SAME (28x28 keeps the paper's 32x32 → 28x28 geometry), S2 2x2 pool, C3 16@5x5 VALID,
    S4 2x2 pool, C5 120@5x5 VALID (a 1x1 map, i.e. fully connected), F6 84, output. Tanh and
    average pooling by default, as the paper's squashing and subsampling (pool="max" and
    activation=Relu give the modern variant); C3 is fully connected to S2 (the paper's sparse
    connection table is not reproduced) and the output is a Dense layer, not RBF units.
    61,706 parameters with 10 classes (batch_norm adds 2·(6 + 16 + 120 + 84) = 452).
    batch_norm inserts BatchNorm before each hidden activation; dropout (a drop rate) follows
    C5's and F6's activations.
    """
    nd = _nd("lenet5", input_shape)
    drop = check_range("lenet5", "dropout", dropout, 0.0, 1.0)
    Pool = {"avg": AvgPool, "max": MaxPool}[pool] if pool in ("avg", "max") else None
    if Pool is None:
        raise ValueError(f"lenet5: pool must be 'avg' or 'max', got {pool!r}")
    bn = lambda: [BatchNorm()] if batch_norm else []
    act = lambda: [_make(activation)]
    dp = lambda: [Dropout(drop)] if drop else []
    layers = ([_conv(nd, 6, 5)] + bn() + act() + [Pool((2,) * nd)]
              + [_conv(nd, 16, 5, padding="VALID")] + bn() + act() + [Pool((2,) * nd)]
              + [_conv(nd, 120, 5, padding="VALID"), Flatten()] + bn() + act() + dp()
              + [Dense(84)] + bn() + act() + dp() + [Dense(num_classes)])
    return _for_input("lenet5", serial(*layers), input_shape)


def alexnet(num_classes: int = 10, input_shape: ShapeLike = (28, 28, 1), dropout: float = 0.5) -> Layer:
    """AlexNet's pattern (Krizhevsky et al. 2012) scaled to small images.

    Five 3x3 SAME convs (32, 64, 96, 96, 64 channels) with ReLU, overlapping 3x3/stride-2 max
    pooling after the 1st, 2nd and 5th, then Dropout-Dense512-ReLU-Dropout-Dense512-ReLU-Dense.
    At 28x28x1: 28 → 13 → 6 → 2; 611,978 parameters with 10 classes.
    """
    nd = _nd("alexnet", input_shape)
    drop = check_range("alexnet", "dropout", dropout, 0.0, 1.0)
    pool = lambda: MaxPool((3,) * nd, stride=(2,) * nd)
    dp = lambda: [Dropout(drop)] if drop else []
    layers = [_conv(nd, 32), Relu(), pool(), _conv(nd, 64), Relu(), pool(),
              _conv(nd, 96), Relu(), _conv(nd, 96), Relu(), _conv(nd, 64), Relu(), pool(), Flatten(),
              *dp(), Dense(512), Relu(), *dp(), Dense(512), Relu(), Dense(num_classes)]
    return _for_input("alexnet", serial(*layers), input_shape)


def vgg(num_classes: int = 10, input_shape: ShapeLike = (28, 28, 1),
        stages: Sequence[Sequence[int]] = ((32, 32), (64, 64), (128, 128)), batch_norm: bool = False,
        hidden: int = 256, dropout: float = 0.5) -> Layer:
    """VGG-style (Simonyan & Zisserman 2014): per stage, 3x3 SAME convs (→ BatchNorm) → ReLU, then a
    2x2 max pool; then Flatten-Dense(hidden)-ReLU-Dropout-Dense. The default stages at
    28x28x1 (28 → 14 → 7 → 3): 584,170 parameters with 10 classes (batch_norm: +448)."""
    nd = _nd("vgg", input_shape)
    drop = check_range("vgg", "dropout", dropout, 0.0, 1.0)
    layers = []
    for stage in stages:
        for c in stage:
            bn = [BatchNorm()] if batch_norm else []
            layers += [_conv(nd, c, use_bias=not batch_norm), *bn, Relu()]
        layers.append(MaxPool((2,) * nd))
    layers += [Flatten(), Dense(hidden), Relu()] + ([Dropout(drop)] if drop else []) + [Dense(num_classes)]
    return _for_input("vgg", serial(*layers), input_shape)


def resnet(num_classes: int = 10, input_shape: ShapeLike = (28, 28, 1), stages: Sequence[int] = (16, 32, 64),
           blocks_per_stage: int = 2) -> Layer:
    """A small ResNet (He et al. 2016, the CIFAR variant): a 3x3 conv stem with BatchNorm and ReLU;
    per stage, basic blocks Residual([Conv3x3-BN-ReLU-Conv3x3-BN]) → ReLU, the first block of
    each later stage halving the resolution with stride 2 and a 1x1 strided Conv-BN shortcut
    (option B); then GlobalAvgPool and a Dense output. Defaults: ResNet-14, 174,970 parameters at 28x28x1
    with 10 classes."""
    nd = _nd("resnet", input_shape)
    blocks_per_stage = check_positive_int("resnet", "blocks_per_stage", blocks_per_stage)
    layers = [_conv(nd, stages[0], use_bias=False), BatchNorm(), Relu()]
    for i, c in enumerate(stages):
        for j in range(blocks_per_stage):
            s = 2 if i > 0 and j == 0 else 1
            block = serial(_conv(nd, c, stride=s, use_bias=False), BatchNorm(), Relu(),
                           _conv(nd, c, use_bias=False), BatchNorm())
            shortcut = serial(_conv(nd, c, 1, stride=s, use_bias=False), BatchNorm()) if s > 1 else None
            layers += [Residual(block, shortcut), Relu()]
    layers += [GlobalAvgPool(), Dense(num_classes)]
    return _for_input("resnet", serial(*layers), input_shape)


def bn_cnn(num_classes: int = 10, input_shape: ShapeLike = (28, 28, 1), widths: Sequence[int] = (32, 64),
           hidden: int = 256, conv_dropout: float = 0.25, dropout: float = 0.5) -> Layer:
    """A BatchNorm + Dropout conv net meant for ≥ 93% on Fashion-MNIST.

    Per width c: [Conv c 3x3 SAME (no bias) - BN - ReLU] x 2, MaxPool 2, Dropout(conv_dropout);
    then Flatten - Dense(hidden) - BN - ReLU - Dropout(dropout) - Dense(num_classes).
    Defaults at 28x28x1: 871,338 parameters with 10 classes.
    """
    nd = _nd("bn_cnn", input_shape)
    cdrop = check_range("bn_cnn", "conv_dropout", conv_dropout, 0.0, 1.0)
    drop = check_range("bn_cnn", "dropout", dropout, 0.0, 1.0)
    layers = []
    for c in widths:
        for _ in range(2):
            layers += [_conv(nd, c, use_bias=False), BatchNorm(), Relu()]
        layers += [MaxPool((2,) * nd)] + ([Dropout(cdrop)] if cdrop else [])
    layers += [Flatten(), Dense(hidden), BatchNorm(), Relu()] + ([Dropout(drop)] if drop else [])
    layers.append(Dense(num_classes))
    return _for_input("bn_cnn", serial(*layers), input_shape)


def bn_vgg(num_classes: int = 10, input_shape: ShapeLike = (28, 28, 1), hidden: int = 256,
           dropout: float = 0.5) -> Layer:
    """The strong small model of the Fashion-MNIST recipe aiming at 95% (README; measured: test accuracy
    0.939 and 0.941 for seeds 0 and 1 after 40 epochs): a VGG-style net with BatchNorm.

    ``vgg(stages=((32,), (64, 64), (128, 128)), batch_norm=True)``: one 3x3 conv at full
    resolution (the second one VGG would put there costs the most time on CPU and was dropped
    by measurement: 11x simple_cnn's epoch time with it, 6x without), then two per stage at
    14x14 and 7x7, each Conv (no bias) - BN - ReLU, a 2x2 max pool after each stage, then
    Flatten - Dense(hidden) - ReLU - Dropout(dropout) - Dense(num_classes).
    575,338 parameters at 28x28x1 with 10 classes (832 of them BatchNorm scales and shifts).
    """
    net = vgg(num_classes, input_shape, stages=((32,), (64, 64), (128, 128)), batch_norm=True, hidden=hidden,
              dropout=dropout)
    return _for_input("bn_vgg", net, input_shape)


def bn_vgg_wide(num_classes: int = 10, input_shape: ShapeLike = (28, 28, 1), hidden: int = 256,
                dropout: float = 0.5) -> Layer:
    """``bn_vgg`` with 192 channels instead of 128 in its last stage (7x7 at 28x28 input): more
    capacity where it is cheapest on CPU. ``vgg(stages=((32,), (64, 64), (192, 192)), batch_norm=True)``;
    944,234 parameters at 28x28x1 with 10 classes (1,088 of them BatchNorm scales and shifts);
    one training step costs about 1.4x bn_vgg's on CPU (410 against 565 images/s on one core).
    """
    net = vgg(num_classes, input_shape, stages=((32,), (64, 64), (192, 192)), batch_norm=True, hidden=hidden,
              dropout=dropout)
    return _for_input("bn_vgg_wide", net, input_shape)
