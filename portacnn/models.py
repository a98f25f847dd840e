"""Ready-made networks for 28x28 greyscale digits (10 classes); each declares ``input_shape=(1, 28, 28)``."""

from __future__ import annotations

from .layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, Residual
from .sequential import Sequential

INPUT_SHAPE = (1, 28, 28)


def seed_cnn(backend=None, dtype="float32", seed=0, workers="auto") -> Sequential:
    """The tutorial's net: conv 2@5x5 -> ReLU -> maxpool 2 -> flatten 288 -> dense 60 -> ReLU -> dense 10."""
    layers = [Conv2D(1, 2, 5), ReLU(), MaxPool2D(2), Flatten(), Dense(288, 60), ReLU(), Dense(60, 10)]
    return Sequential(layers, backend=backend, dtype=dtype, seed=seed, workers=workers, input_shape=INPUT_SHAPE)


def lenet5(backend=None, dtype="float32", seed=0, workers="auto") -> Sequential:
    """LeNet-5 with ReLU and max pooling: conv 6@5x5 pad 2, pool, conv 16@5x5, pool, 400-120-84-10."""
    layers = [
        Conv2D(1, 6, 5, padding=2), ReLU(), MaxPool2D(2),
        Conv2D(6, 16, 5), ReLU(), MaxPool2D(2),
        Flatten(), Dense(400, 120), ReLU(), Dense(120, 84), ReLU(), Dense(84, 10),
    ]  # fmt: skip
    return Sequential(layers, backend=backend, dtype=dtype, seed=seed, workers=workers, input_shape=INPUT_SHAPE)


def kannada_cnn(backend=None, dtype="float32", seed=0, workers="auto") -> Sequential:
    """The Kannada-MNIST paper's baseline (Prabhu 2019): conv 32@3x3, conv 64@3x3, pool 2, dropout .25,
    dense 9216 -> 128, dropout .5, dense 128 -> 10."""
    layers = [
        Conv2D(1, 32, 3), ReLU(), Conv2D(32, 64, 3), ReLU(), MaxPool2D(2), Dropout(0.25),
        Flatten(), Dense(9216, 128), ReLU(), Dropout(0.5), Dense(128, 10),
    ]  # fmt: skip
    return Sequential(layers, backend=backend, dtype=dtype, seed=seed, workers=workers, input_shape=INPUT_SHAPE)


def _conv_bn(c_in, c_out, batchnorm=True):
    """3x3 convolution, BatchNorm, ReLU (the convolution has no bias: the BatchNorm after it has one); without
    ``batchnorm``, a biased convolution and ReLU."""
    if not batchnorm:
        return [Conv2D(c_in, c_out, 3, padding=1), ReLU()]
    return [Conv2D(c_in, c_out, 3, padding=1, bias=False), BatchNorm2D(c_out), ReLU()]


def _kannada_res(batchnorm: bool) -> list:
    def conv(c_in, c_out, k):  # a convolution that feeds a sum: BatchNorm after it, or its own bias
        if not batchnorm:
            return [Conv2D(c_in, c_out, k, padding=k // 2)]
        return [Conv2D(c_in, c_out, k, padding=k // 2, bias=False), BatchNorm2D(c_out)]

    block = Residual([*_conv_bn(32, 64, batchnorm), *conv(64, 64, 3)], shortcut=conv(32, 64, 1))
    return [
        *_conv_bn(1, 32, batchnorm), *_conv_bn(32, 32, batchnorm), MaxPool2D(2),
        block, ReLU(), MaxPool2D(2),
        *_conv_bn(64, 128, batchnorm), GlobalAvgPool2D(), Dropout(0.3), Dense(128, 10),
    ]  # fmt: skip


def kannada_bn(backend=None, dtype="float32", seed=0, workers="auto") -> Sequential:
    """A small BatchNorm ResNet: conv-BN-ReLU 32, 32, pool 2; a residual block 32 -> 64 (two 3x3 convs, a 1x1
    projection shortcut), pool 2; conv-BN-ReLU 128; global average pool, dropout .3, dense 128 -> 10."""
    layers = _kannada_res(batchnorm=True)
    return Sequential(layers, backend=backend, dtype=dtype, seed=seed, workers=workers, input_shape=INPUT_SHAPE)


def kannada_nobn(backend=None, dtype="float32", seed=0, workers="auto") -> Sequential:
    """kannada_bn without its BatchNorm layers (every convolution biased instead): what BatchNorm buys, measured
    in benchmarks/accuracy/."""
    layers = _kannada_res(batchnorm=False)
    return Sequential(layers, backend=backend, dtype=dtype, seed=seed, workers=workers, input_shape=INPUT_SHAPE)


MODELS = {"seed_cnn": seed_cnn, "lenet5": lenet5, "kannada_cnn": kannada_cnn, "kannada_bn": kannada_bn,
          "kannada_nobn": kannada_nobn}
#: shorter names the command line has always accepted
ALIASES = {"seed": "seed_cnn", "kannada": "kannada_cnn"}


def canonical_name(name: str) -> str:
    """``name`` as a key of :data:`MODELS` (aliases resolved; unknown names come back unchanged)."""
    return ALIASES.get(name, name)
