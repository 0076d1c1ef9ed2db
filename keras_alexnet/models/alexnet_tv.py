"""torchvision's AlexNet: the "one weird trick" net, not the NIPS 2012 paper's.

torchvision.models.alexnet follows Krizhevsky's 2014 "One weird trick for parallelizing
convolutional neural networks" (arXiv:1404.5997): one tower of 64, 192, 384, 256 and 256
filters, no LRN, no groups, adaptive average pooling to 6x6 before the classifier and
dropout before fc6 and fc7; 61,100,840 parameters at 1000 classes. Its published weights
(`alexnet-owt-7be5be79.pth`) import into it; the paper's two-tower net is `alexnet`.
"""

import typing

import keras

from keras_alexnet.layers import AdaptiveAveragePooling2D
from keras_alexnet.models import common


class ConvLayer(typing.NamedTuple):
    """One convolution of torchvision's `features` (Conv2d, ReLU, maybe MaxPool2d)."""

    name: str
    filters: int
    kernel: int
    stride: int
    padding: int  # zeros on every side, as torch.nn.Conv2d's `padding`
    pool: bool  # followed by MaxPool2d(3, 2)


CONV_LAYERS = (
    ConvLayer("conv1", 64, kernel=11, stride=4, padding=2, pool=True),
    ConvLayer("conv2", 192, kernel=5, stride=1, padding=2, pool=True),
    ConvLayer("conv3", 384, kernel=3, stride=1, padding=1, pool=False),
    ConvLayer("conv4", 256, kernel=3, stride=1, padding=1, pool=False),
    ConvLayer("conv5", 256, kernel=3, stride=1, padding=1, pool=True),
)
POOL = (3, 2)  # MaxPool2d(kernel_size=3, stride=2)
POOLED = 6  # AdaptiveAvgPool2d((6, 6))
FC_UNITS = 4096
INPUT_SIZE = 224
PAPER_STDDEV = 0.01  # init="paper": AlexNet's N(0, 0.01), biases 0 (no paper of its own)


def alexnet_tv(
    *,
    classes=1000,
    input_shape=None,
    include_top=True,
    pooling=None,
    classifier_activation="softmax",
    dropout=0.5,
    init="glorot",
    width=1.0,
    seed=None,
    mean=None,
    scale=1.0,
    name="alexnet_tv",
):
    """Build torchvision's AlexNet (layer for layer `torchvision.models.alexnet`).

    conv1 64 11x11/4 pad 2, pool 3/2, conv2 192 5x5 pad 2, pool, conv3 384, conv4 256,
    conv5 256 (3x3 pad 1), pool, adaptive average pooling to 6x6 (PyTorch's bins, so any
    input size gives torchvision's numbers), then dropout, fc6 4096, dropout, fc7 4096,
    fc8 `classes`. The arguments are `alexnet()`'s; `init` "paper" is N(0, 0.01) with zero
    biases, "glorot" (default) or "he". Without the top the model ends at pool5 (the
    adaptive pooling belongs to the classifier, as torchvision's `avgpool` does), with
    `pooling` "avg" or "max" global pooling there.
    """
    common.check_common_args(classes, include_top, pooling, classifier_activation)
    input_shape = common.resolve_input_shape(input_shape, INPUT_SIZE)
    inputs, x = common.stem(input_shape, mean, scale)
    for index, layer in enumerate(CONV_LAYERS, start=1):
        x = _conv_stage(x, layer, index, width, init, seed, input_shape)
    if include_top:
        x = AdaptiveAveragePooling2D(POOLED, name="avgpool")(x)
    outputs = common.head(
        x,
        fc_units=common.scaled(FC_UNITS, width),
        names=("fc6", "fc7", "fc8"),
        dropout=dropout,
        classes=classes,
        include_top=include_top,
        pooling=pooling,
        activation=classifier_activation,
        init_fn=lambda i: _initializers(init, seed, len(CONV_LAYERS) + 1 + i),
        dropout_first=True,
    )
    return keras.Model(inputs, outputs, name=name)


def _initializers(init, seed, index):
    """(kernel, bias) initialisers of layer number `index`."""
    layer_seed = None if seed is None else seed + index
    return (
        common.kernel_initializer(init, PAPER_STDDEV, layer_seed),
        common.bias_initializer(init, 0.0),
    )


def _conv_stage(x, layer, index, width, init, seed, input_shape):
    """One row: zero padding as PyTorch's, the convolution with ReLU, then its pool if any."""
    x = keras.layers.ZeroPadding2D(layer.padding, name=f"{layer.name}_pad")(x)
    common.check_window_fits(x, layer.kernel, layer.name, input_shape)
    kernel_init, bias_init = _initializers(init, seed, index)
    x = keras.layers.Conv2D(
        common.scaled(layer.filters, width),
        layer.kernel,
        strides=layer.stride,
        activation="relu",
        kernel_initializer=kernel_init,
        bias_initializer=bias_init,
        name=layer.name,
    )(x)
    if layer.pool:
        window, stride = POOL
        common.check_window_fits(x, window, f"pool{index}", input_shape)
        x = keras.layers.MaxPooling2D(window, strides=stride, name=f"pool{index}")(x)
    return x
