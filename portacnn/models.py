"""Ready-made networks. Every factory is ``name(backend=None, dtype="float32", seed=0, workers="auto",
input_shape=..., num_classes=10)``: the convolutional part takes the channels of ``input_shape`` (C, H, W), and
the first Dense layer's inputs are counted by running the layers before it on shapes
(:func:`portacnn.layers.plan.walk`), so one factory builds its network for any image size it can take. An
``input_shape`` a network cannot take (smaller than its convolutions and pools allow) is a one-line ValueError
naming the network and the smallest side it takes.

The digit networks default to 28x28 greyscale (``INPUT_SHAPE``); :func:`resnet20` to 32x32 colour images
(``CIFAR_SHAPE``).
"""

from __future__ import annotations

import math

from .layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, Residual
from .layers.plan import check_input_shape, walk
from .sequential import Sequential
from .validation import Integer, check

#: the digit networks' default input: 28x28 greyscale images
INPUT_SHAPE = (1, 28, 28)
#: resnet20's default input: 32x32 colour images (CIFAR-10)
CIFAR_SHAPE = (3, 32, 32)
#: the number of classes a network may have (a Dense layer's outputs)
NUM_CLASSES = Integer(1)
#: the largest square side tried when naming the smallest image a network takes
MAX_SIDE_TRIED = 4096


def _smallest_side(features, channels: int) -> int | None:
    """The smallest side s such that ``features(channels)`` takes (channels, s, s) images (None if none up to
    :data:`MAX_SIDE_TRIED` does). Tried side by side, on shapes only: every rule stays the layers' own."""
    layers = features(channels)
    for side in range(1, MAX_SIDE_TRIED + 1):
        try:
            walk(layers, (channels, side, side))
        except ValueError:
            continue
        return side
    return None


def _build(name, features, head, input_shape, num_classes, backend, dtype, seed, workers) -> Sequential:
    """``features(channels)`` (the layers up to the first Dense) then ``head(in_features, num_classes)``, as a
    Sequential reading ``input_shape``. ``in_features`` is what the features give for one image."""
    shape = check_input_shape(input_shape, f"{name} input_shape")
    if len(shape) != 3:
        raise ValueError(f"{name} input_shape must be (C, H, W) images; got {shape}")
    classes = check(num_classes, NUM_CLASSES, f"{name} num_classes")
    body = features(shape[0])
    try:
        out, _ = walk(body, shape)
    except ValueError as e:
        side = _smallest_side(features, shape[0])
        if side is not None and min(shape[1:]) < side:
            raise ValueError(f"{name} takes images of at least {side}x{side} pixels (its convolutions and pools "
                             f"leave nothing of smaller ones); got input_shape {shape}") from None
        raise ValueError(f"{name} cannot take input_shape {shape}: {e}") from None
    layers = body + head(math.prod(out), classes)
    return Sequential(layers, backend=backend, dtype=dtype, seed=seed, workers=workers, input_shape=shape)


def seed_cnn(backend=None, dtype="float32", seed=0, workers="auto", input_shape=INPUT_SHAPE,
             num_classes=10) -> Sequential:
    """The tutorial's net: conv 2@5x5 -> ReLU -> maxpool 2 -> flatten (288 at 28x28) -> dense 60 -> ReLU ->
    dense num_classes."""
    def features(c):
        return [Conv2D(c, 2, 5), ReLU(), MaxPool2D(2), Flatten()]

    def head(n, k):
        return [Dense(n, 60), ReLU(), Dense(60, k)]

    return _build("seed_cnn", features, head, input_shape, num_classes, backend, dtype, seed, workers)


def lenet5(backend=None, dtype="float32", seed=0, workers="auto", input_shape=INPUT_SHAPE,
           num_classes=10) -> Sequential:
    """LeNet-5 with ReLU and max pooling: conv 6@5x5 pad 2, pool, conv 16@5x5, pool, flatten (400 at 28x28),
    dense 120, 84, num_classes."""
    def features(c):
        return [Conv2D(c, 6, 5, padding=2), ReLU(), MaxPool2D(2), Conv2D(6, 16, 5), ReLU(), MaxPool2D(2), Flatten()]

    def head(n, k):
        return [Dense(n, 120), ReLU(), Dense(120, 84), ReLU(), Dense(84, k)]

    return _build("lenet5", features, head, input_shape, num_classes, backend, dtype, seed, workers)


def kannada_cnn(backend=None, dtype="float32", seed=0, workers="auto", input_shape=INPUT_SHAPE,
                num_classes=10) -> Sequential:
    """The Kannada-MNIST paper's baseline (Prabhu 2019): conv 32@3x3, conv 64@3x3, pool 2, dropout .25,
    flatten (9216 at 28x28), dense 128, dropout .5, dense num_classes."""
    def features(c):
        return [Conv2D(c, 32, 3), ReLU(), Conv2D(32, 64, 3), ReLU(), MaxPool2D(2), Dropout(0.25), Flatten()]

    def head(n, k):
        return [Dense(n, 128), ReLU(), Dropout(0.5), Dense(128, k)]

    return _build("kannada_cnn", features, head, input_shape, num_classes, backend, dtype, seed, workers)


def _conv_bn(c_in, c_out, batchnorm=True):
    """3x3 convolution, BatchNorm, ReLU (the convolution has no bias: the BatchNorm after it has one); without
    ``batchnorm``, a biased convolution and ReLU."""
    if not batchnorm:
        return [Conv2D(c_in, c_out, 3, padding=1), ReLU()]
    return [Conv2D(c_in, c_out, 3, padding=1, bias=False), BatchNorm2D(c_out), ReLU()]


def _kannada_res(batchnorm: bool):
    """The features of kannada_bn (``batchnorm``) or kannada_nobn, as a function of the input channels."""
    def conv(c_in, c_out, k):  # a convolution that feeds a sum: BatchNorm after it, or its own bias
        if not batchnorm:
            return [Conv2D(c_in, c_out, k, padding=k // 2)]
        return [Conv2D(c_in, c_out, k, padding=k // 2, bias=False), BatchNorm2D(c_out)]

    def features(c):
        block = Residual([*_conv_bn(32, 64, batchnorm), *conv(64, 64, 3)], shortcut=conv(32, 64, 1))
        return [
            *_conv_bn(c, 32, batchnorm), *_conv_bn(32, 32, batchnorm), MaxPool2D(2),
            block, ReLU(), MaxPool2D(2),
            *_conv_bn(64, 128, batchnorm), GlobalAvgPool2D(), Dropout(0.3),
        ]  # fmt: skip

    return features


def _dense(n, k):
    return [Dense(n, k)]


def kannada_bn(backend=None, dtype="float32", seed=0, workers="auto", input_shape=INPUT_SHAPE,
               num_classes=10) -> Sequential:
    """A small BatchNorm ResNet: conv-BN-ReLU 32, 32, pool 2; a residual block 32 -> 64 (two 3x3 convs, a 1x1
    projection shortcut), pool 2; conv-BN-ReLU 128; global average pool, dropout .3, dense 128 -> num_classes."""
    return _build("kannada_bn", _kannada_res(True), _dense, input_shape, num_classes, backend, dtype, seed, workers)


def kannada_nobn(backend=None, dtype="float32", seed=0, workers="auto", input_shape=INPUT_SHAPE,
                 num_classes=10) -> Sequential:
    """kannada_bn without its BatchNorm layers (every convolution biased instead): what BatchNorm buys, measured
    in benchmarks/accuracy/."""
    return _build("kannada_nobn", _kannada_res(False), _dense, input_shape, num_classes, backend, dtype, seed,
                  workers)


#: ResNet-20's stages: (filters, stride of the first block); each stage has RESNET20_BLOCKS basic blocks
RESNET20_STAGES = ((16, 1), (32, 2), (64, 2))
RESNET20_BLOCKS = 3


def _basic_block(c_in, c_out, stride):
    """He et al.'s basic block and the ReLU after the sum: conv3x3(stride)-BN-ReLU-conv3x3-BN + shortcut. The
    shortcut is the identity, or where the block changes the size or the channels a projection (a 1x1 conv
    with the block's stride, no bias, and BatchNorm: their "option B")."""
    body = [Conv2D(c_in, c_out, 3, stride=stride, padding=1, bias=False), BatchNorm2D(c_out), ReLU(),
            Conv2D(c_out, c_out, 3, padding=1, bias=False), BatchNorm2D(c_out)]
    shortcut = None if stride == 1 and c_in == c_out else \
        [Conv2D(c_in, c_out, 1, stride=stride, bias=False), BatchNorm2D(c_out)]
    return [Residual(body, shortcut=shortcut), ReLU()]


def _resnet20_features(c):
    layers, width = [Conv2D(c, 16, 3, padding=1, bias=False), BatchNorm2D(16), ReLU()], 16
    for filters, stride in RESNET20_STAGES:
        for block in range(RESNET20_BLOCKS):
            layers += _basic_block(width, filters, stride if block == 0 else 1)
            width = filters
    return layers + [GlobalAvgPool2D()]


def resnet20(backend=None, dtype="float32", seed=0, workers="auto", input_shape=CIFAR_SHAPE,
             num_classes=10) -> Sequential:
    """ResNet-20, the CIFAR-10 network of He et al. 2016 (Deep Residual Learning for Image Recognition, section
    4.2): conv3x3 16 -> BN -> ReLU; three stages of 3 basic blocks with 16, 32 and 64 filters (a block is
    conv3x3-BN-ReLU-conv3x3-BN added to its shortcut, then ReLU; the first block of stages 2 and 3 has stride 2,
    halving the size); global average pool; dense 64 -> num_classes. 19 convolutions and the dense layer: 20.

    One difference from the paper: it uses parameter-free "option A" shortcuts (a stride-2 subsample padded with
    zero channels), which portacnn has no layer for; here the two down-sampling blocks have projection shortcuts
    (1x1 conv, stride 2, no bias, then BatchNorm: the paper's "option B"), the other seven the identity. That
    adds 2,752 parameters: 272,474 in all for 10 classes (the paper counts 0.27 M). The convolutions start from the
    library's initialisation (:class:`~portacnn.layers.Conv2D`: torch's default U(-1/sqrt(fan_in), ..)), not the
    paper's He normal one; the BatchNorms from the identity (weight 1, bias 0). Default input: 3x32x32 images.
    Any side from 1 pixel up fits (each stride-2 block gives ceil(side / 2))."""
    return _build("resnet20", _resnet20_features, _dense, input_shape, num_classes, backend, dtype, seed, workers)


MODELS = {"seed_cnn": seed_cnn, "lenet5": lenet5, "kannada_cnn": kannada_cnn, "kannada_bn": kannada_bn,
          "kannada_nobn": kannada_nobn, "resnet20": resnet20}
#: shorter names the command line has always accepted
ALIASES = {"seed": "seed_cnn", "kannada": "kannada_cnn"}


def canonical_name(name: str) -> str:
    """``name`` as a key of :data:`MODELS` (aliases resolved; unknown names come back unchanged)."""
    return ALIASES.get(name, name)
