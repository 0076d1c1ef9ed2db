"""VGG configurations A, A-LRN, B, C, D and E of the ICLR 2015 paper, built from a table."""

import keras

from keras_alexnet.layers import PAPER_LRN, LocalResponseNormalization
from keras_alexnet.models import common

# Simonyan & Zisserman, ICLR 2015, Table 1, one row per configuration, read left to right:
#   64        conv3-64 (3x3, stride 1, pad 1, ReLU)
#   (256, 1)  conv1-256 (1x1: config C's extra layers)
#   "LRN"     local response normalisation (A-LRN, after the first conv)
#   "M"       max-pool 2x2 / 2, which also closes a block for the layer names
# fmt: off
CONFIGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [
        64, 64, "M",
        128, 128, "M",
        256, 256, (256, 1), "M",
        512, 512, (512, 1), "M",
        512, 512, (512, 1), "M",
    ],
    "D": [
        64, 64, "M",
        128, 128, "M",
        256, 256, 256, "M",
        512, 512, 512, "M",
        512, 512, 512, "M",
    ],
    "E": [
        64, 64, "M",
        128, 128, "M",
        256, 256, 256, 256, "M",
        512, 512, 512, 512, "M",
        512, 512, 512, 512, "M",
    ],
}
# fmt: on
FC_UNITS = 4096
INPUT_SIZE = 224
# The paper gives no LRN constants for A-LRN beyond "the one of Krizhevsky et al.": AlexNet's,
# over all 64 channels (VGG has one tower).
LRN = PAPER_LRN
# Section 3.1: weights from a zero-mean normal with variance 10^-2, i.e. stddev 0.1.
PAPER_STDDEV = 0.1
# torchvision's batch-norm VGGs (vgg11_bn ... vgg19_bn): BatchNorm2d's eps, and its momentum
# 0.1 (the new batch's weight) as Keras's momentum (the running average's weight).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def vgg(
    config,
    *,
    classes=1000,
    input_shape=None,
    include_top=True,
    pooling=None,
    classifier_activation="softmax",
    dropout=0.5,
    init="paper",
    width=1.0,
    seed=None,
    mean=None,
    scale=1.0,
    batch_norm=False,
    name=None,
):
    """Build VGG configuration `config` (one of CONFIGS' keys) as in the paper's Table 1.

    Layer names follow Keras Applications (`block{i}_conv{j}`, `block{i}_pool`, `fc1`,
    `fc2`, `predictions`; its weight files expect BGR caffe-mode inputs, so loading them
    by name is not enough); A-LRN's LRN is `block1_lrn`. Initialisation "paper" is
    N(0, variance 1e-2) weights with zero biases (Section 3.1; it overflows in float32,
    which is why training defaults to "glorot", which the paper notes also works) or "he".

    Args:
        config: "A", "A-LRN", "B", "C", "D" or "E".
        classes: number of classes of the last FC layer.
        input_shape: (H, W, 3); default (224, 224, 3).
        include_top: whether to build the three FC layers.
        pooling: None, "avg" or "max" global pooling after block5_pool when headless.
        classifier_activation: the last layer's activation ("softmax", or None for logits).
        dropout: dropout rate of fc1 and fc2.
        init: "paper", "glorot" or "he".
        width: multiplier on every layer's width (1.0 is the paper; small for tests).
        seed: seed of the initialisers (None: random).
        mean: RGB mean (0-255 scale) to subtract in-graph; None: inputs are used as given.
        scale: multiplier applied after the mean subtraction (only with `mean`).
        batch_norm: torchvision's batch-norm variant (not in the paper): every conv is
            followed by BatchNormalization (`block{i}_bn{j}`, eps 1e-5) before its ReLU
            (`block{i}_relu{j}`).
        name: the model's name (default vgg_<config>, with batch_norm vgg_<config>_bn).
    """
    if config not in CONFIGS:
        raise ValueError(f"config must be one of {sorted(CONFIGS)}. Received: config={config!r}")
    common.check_common_args(classes, include_top, pooling, classifier_activation)
    input_shape = common.resolve_input_shape(input_shape, INPUT_SIZE)
    name = name or "vgg_" + config.lower().replace("-", "_") + ("_bn" if batch_norm else "")
    seeds = iter(range(1, 1000)) if seed is not None else None

    def init_pair(_=None):
        layer_seed = None if seeds is None else seed + next(seeds)
        return (
            common.kernel_initializer(init, PAPER_STDDEV, layer_seed),
            common.bias_initializer(init, 0.0),
        )

    inputs, x = common.stem(input_shape, mean, scale)
    x = _features(x, CONFIGS[config], width, init_pair, input_shape, batch_norm)
    outputs = common.head(
        x,
        fc_units=common.scaled(FC_UNITS, width),
        names=("fc1", "fc2", "predictions"),
        dropout=dropout,
        classes=classes,
        include_top=include_top,
        pooling=pooling,
        activation=classifier_activation,
        init_fn=init_pair,
    )
    return keras.Model(inputs, outputs, name=name)


def _features(x, cells, width, init_pair, input_shape, batch_norm=False):
    """The convolutional body of one Table 1 row; `init_pair()` gives each conv's initialisers."""
    block, conv_in_block = 1, 0
    for cell in cells:
        if cell == "M":
            common.check_window_fits(x, 2, f"block{block}_pool", input_shape)
            x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
            block, conv_in_block = block + 1, 0
        elif cell == "LRN":
            x = LocalResponseNormalization(**LRN, name=f"block{block}_lrn")(x)
        else:
            filters, kernel = cell if isinstance(cell, tuple) else (cell, 3)
            conv_in_block += 1
            kernel_init, bias_init = init_pair()
            x = keras.layers.Conv2D(
                common.scaled(filters, width),
                kernel,
                padding="same",
                activation=None if batch_norm else "relu",
                kernel_initializer=kernel_init,
                bias_initializer=bias_init,
                name=f"block{block}_conv{conv_in_block}",
            )(x)
            if batch_norm:
                x = _batch_norm_relu(x, f"block{block}", conv_in_block)
    return x


def _batch_norm_relu(x, block, index):
    """The BatchNorm2d + ReLU torchvision's VGGs put after each convolution."""
    x = keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{block}_bn{index}"
    )(x)
    return keras.layers.ReLU(name=f"{block}_relu{index}")(x)
