"""AlexNet as the NIPS 2012 paper built it: two towers, grouped convolutions, per-tower LRN."""

import typing

import keras

from keras_alexnet.layers import CAFFE_LRN, PAPER_LRN, GroupedConv2D, LocalResponseNormalization
from keras_alexnet.models import common


class ConvLayer(typing.NamedTuple):
    """One row of AlexNet's convolutional stack (Figure 2, Sections 3.3-3.5 and 5)."""

    name: str
    filters: int  # both towers together
    kernel: int
    stride: int
    tower_local: bool  # sees only its own tower's maps (a grouped convolution)
    paper_bias: float  # Section 5: biases 1 in conv2, conv4 and conv5, else 0
    lrn: bool  # followed by local response normalisation
    pool: bool  # followed by the overlapping max-pool 3/2


# conv2, conv4 and conv5 see only their own tower's maps; conv3 and the FC layers connect
# across towers (Section 3.5).
CONV_LAYERS = (
    ConvLayer("conv1", filters=96, kernel=11, stride=4, tower_local=False, paper_bias=0.0,
              lrn=True, pool=True),
    ConvLayer("conv2", filters=256, kernel=5, stride=1, tower_local=True, paper_bias=1.0,
              lrn=True, pool=True),
    ConvLayer("conv3", filters=384, kernel=3, stride=1, tower_local=False, paper_bias=0.0,
              lrn=False, pool=False),
    ConvLayer("conv4", filters=384, kernel=3, stride=1, tower_local=True, paper_bias=1.0,
              lrn=False, pool=False),
    ConvLayer("conv5", filters=256, kernel=3, stride=1, tower_local=True, paper_bias=1.0,
              lrn=False, pool=True),
)  # fmt: skip
FC_UNITS = 4096
FC_PAPER_BIASES = (1.0, 1.0, 0.0)  # fc6, fc7 = 1; fc8 = 0
PAPER_STDDEV = 0.01  # Section 5: every weight from N(0, 0.01)
INPUT_SIZE = 227  # (227 - 11) / 4 + 1 = 55, the paper's 55x55 conv1 maps; 224 gives 54.
__all__ = ["CAFFE_LRN", "CONV_LAYERS", "PAPER_LRN", "ConvLayer", "alexnet"]


def alexnet(
    *,
    classes=1000,
    input_shape=None,
    include_top=True,
    pooling=None,
    classifier_activation="softmax",
    towers=2,
    lrn=None,
    lrn_per_tower=True,
    dropout=0.5,
    init="paper",
    width=1.0,
    seed=None,
    mean=None,
    scale=1.0,
    name="alexnet",
):
    """Build the paper's AlexNet (not torchvision's one-weird-trick 64-192-384-256-256 net).

    Krizhevsky, Sutskever, Hinton, NIPS 2012, Figure 2: conv1 96 11x11/4, conv2 256 5x5,
    conv3 384 3x3, conv4 384 3x3, conv5 256 3x3, fc6 4096, fc7 4096, fc8 `classes`; ReLU
    after every layer, LRN after conv1 and conv2, overlapping max-pool 3/2 after conv1,
    conv2, conv5, dropout 0.5 on fc6 and fc7. With towers=2 (the paper's two GPUs) conv2,
    conv4 and conv5 are grouped convolutions and LRN runs within each tower; 60,965,224
    parameters at 1000 classes and a 227x227 input. towers=1 gives one ungrouped tower.

    Args:
        classes: number of classes of fc8.
        input_shape: (H, W, 3); default (227, 227, 3).
        include_top: whether to build fc6-fc8.
        pooling: None, "avg" or "max" global pooling after pool5 when include_top=False.
        classifier_activation: fc8's activation ("softmax", or None for logits).
        towers: number of towers (groups of conv2/conv4/conv5 and of LRN).
        lrn: dict of LRN constants in tf.nn.local_response_normalization's terms
            (depth_radius, bias, alpha, beta); default PAPER_LRN (k=2, n=5, alpha=1e-4,
            beta=0.75); CAFFE_LRN for Caffe's bvlc_alexnet weights.
        lrn_per_tower: normalise within each tower (paper) or across all maps (Caffe).
        dropout: dropout rate of fc6 and fc7.
        init: "paper" (weights N(0, 0.01), biases 1 in conv2/4/5, fc6, fc7), "glorot" or
            "he" (biases 0).
        width: multiplier on every layer's width (1.0 is the paper; small for tests).
        seed: seed of the initialisers (None: random).
        mean: RGB mean (0-255 scale) to subtract in-graph; None: inputs are used as given.
        scale: multiplier applied after the mean subtraction (only with `mean`).
        name: the model's name.
    """
    common.check_common_args(classes, include_top, pooling, classifier_activation)
    towers = int(towers)
    if towers < 1:
        raise ValueError(f"towers must be >= 1. Received: towers={towers}")
    lrn = dict(PAPER_LRN if lrn is None else lrn)
    unknown = set(lrn) - set(PAPER_LRN)
    if unknown:
        raise ValueError(f"lrn takes keys {sorted(PAPER_LRN)}. Received: lrn={lrn}")
    input_shape = common.resolve_input_shape(input_shape, INPUT_SIZE)
    inputs, x = common.stem(input_shape, mean, scale)
    lrn_groups = towers if lrn_per_tower else 1
    for i, layer in enumerate(CONV_LAYERS, start=1):
        x = _conv_stage(x, layer, i, towers, lrn, lrn_groups, init, width, seed, input_shape)
    outputs = common.head(
        x,
        fc_units=common.scaled(FC_UNITS, width),
        names=("fc6", "fc7", "fc8"),
        dropout=dropout,
        classes=classes,
        include_top=include_top,
        pooling=pooling,
        activation=classifier_activation,
        init_fn=lambda i: (
            common.kernel_initializer(init, PAPER_STDDEV, _seed(seed, 6 + i)),
            common.bias_initializer(init, FC_PAPER_BIASES[i]),
        ),
    )
    return keras.Model(inputs, outputs, name=name)


def _seed(seed, index):
    """The initialiser seed of layer `index` (None: random)."""
    return None if seed is None else seed + index


def _conv_stage(x, layer, index, towers, lrn, lrn_groups, init, width, seed, input_shape):
    """One ConvLayer row: the (grouped) convolution with ReLU, then its LRN and pool."""
    kwargs = {
        "strides": layer.stride,
        "padding": "valid" if index == 1 else "same",
        "activation": "relu",
        "kernel_initializer": common.kernel_initializer(init, PAPER_STDDEV, _seed(seed, index)),
        "bias_initializer": common.bias_initializer(init, layer.paper_bias),
        "name": layer.name,
    }
    filters = common.scaled(layer.filters, width, towers)
    if index == 1:
        common.check_window_fits(x, layer.kernel, layer.name, input_shape)
    if layer.tower_local and towers > 1:
        x = GroupedConv2D(filters, layer.kernel, groups=towers, **kwargs)(x)
    else:
        x = keras.layers.Conv2D(filters, layer.kernel, **kwargs)(x)
    if layer.lrn:
        x = LocalResponseNormalization(**lrn, groups=lrn_groups, name=f"norm{index}")(x)
    if layer.pool:
        common.check_window_fits(x, 3, f"pool{index}", input_shape)
        x = keras.layers.MaxPooling2D(pool_size=3, strides=2, name=f"pool{index}")(x)
    return x
