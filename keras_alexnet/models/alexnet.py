"""AlexNet as the NIPS 2012 paper built it: two towers, grouped convolutions, per-tower LRN."""

import typing

import keras

from keras_alexnet.layers import CAFFE_LRN, PAPER_LRN, GroupedConv2D, LocalResponseNormalization
from keras_alexnet.models import common
from keras_alexnet.registry import POOLS


class ConvLayer(typing.NamedTuple):
    """One row of AlexNet's convolutional stack (Figure 2, Sections 3.3-3.5 and 5)."""

    name: str
    filters: int  # both towers together
    kernel: int
    stride: int
    tower_local: bool  # sees only its own tower's maps (a grouped convolution)
    paper_bias: float  # Section 5: biases 1 in conv2, conv4 and conv5, else 0
    lrn: bool  # followed by local response normalisation
    pool: bool  # followed by max-pooling (the paper's overlapping 3/2)


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
__all__ = [
    "CAFFE_LRN", "CONV_LAYERS", "PAPER_LRN", "POOLS", "ConvLayer", "alexnet", "check_args",
    "conv_filters",
]  # fmt: skip


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
    use_lrn=True,
    pool="overlapping",
    ceil_mode=False,
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
    parameters at 1000 classes and a 227x227 input. towers=1 gives one ungrouped tower,
    towers=N splits them N ways. The paper's ablations (Sections 3.3, 3.4) are arguments:
    use_lrn=False drops norm1 and norm2, pool="non_overlapping" pools 2/2 instead of 3/2;
    neither changes the parameter count at 227 (both pools give 27, 13 and 6 there).

    Args:
        classes: number of classes of fc8.
        input_shape: (H, W, 3); default (227, 227, 3).
        include_top: whether to build fc6-fc8.
        pooling: None, "avg" or "max" global pooling after pool5 when include_top=False.
        classifier_activation: fc8's activation ("softmax", or None for logits).
        towers: number of towers (groups of conv2/conv4/conv5 and of LRN); every conv
            layer's width must split evenly into them.
        lrn: dict of LRN constants in tf.nn.local_response_normalization's terms
            (depth_radius, bias, alpha, beta); default PAPER_LRN (k=2, n=5, alpha=1e-4,
            beta=0.75); CAFFE_LRN for Caffe's bvlc_alexnet weights.
        lrn_per_tower: normalise within each tower (paper) or across all maps (Caffe).
        use_lrn: False leaves out LRN (Section 3.3's ablation: 1.4 / 1.2 points of top-1 /
            top-5 error in the paper).
        pool: "overlapping" (3/2, the paper) or "non_overlapping" (2/2; Section 3.4's
            ablation: 0.4 / 0.3 points).
        ceil_mode: round pooled sizes up as Caffe does (its last window may overhang the
            map); at 227 every pool fits evenly and it changes nothing.
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
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {sorted(POOLS)}. Received: pool={pool!r}")
    filters = conv_filters(width, towers)
    input_shape = common.resolve_input_shape(input_shape, INPUT_SIZE)
    inputs, x = common.stem(input_shape, mean, scale)
    stage = {
        "towers": towers,
        "lrn": {**lrn, "groups": towers if lrn_per_tower else 1} if use_lrn else None,
        "pool": POOLS[pool],
        "ceil_mode": ceil_mode,
        "init": init,
        "seed": seed,
        "input_shape": input_shape,
    }
    for i, (layer, n) in enumerate(zip(CONV_LAYERS, filters, strict=True), start=1):
        x = _conv_stage(x, layer, i, n, **stage)
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


def conv_filters(width, towers):
    """Each conv layer's filter count at `width`; ValueError if one does not split into towers."""
    counts = [common.scaled(layer.filters, width) for layer in CONV_LAYERS]
    for layer, n in zip(CONV_LAYERS, counts, strict=True):
        if n % towers:
            raise ValueError(
                f"{layer.name} has {n} filters at width {width:g}, which do not split evenly "
                f"into {towers} towers ({n} = {towers} x {n // towers} + {n % towers}); choose "
                f"a towers count or width that divides every conv layer's width. Received: "
                f"towers={towers}, width={width}"
            )
    return counts


def check_args(args, width=1.0):
    """The registry's check of a run's options: ValueError if the towers do not split a layer."""
    conv_filters(width, args["towers"])


def _ceil_padding(x, window, stride, index):
    """Zeros at the maps' end so that a valid pool rounds its size up, as Caffe's pools do.

    Caffe pools to ceil((n - window) / stride) + 1, its last window overhanging the map.
    Zeros there change no maximum: the pooled maps are ReLU outputs (LRN keeps the sign),
    >= 0, and with stride <= window every window still holds one of them.
    """
    pads = [(window - n) % stride for n in x.shape[1:3]]
    if not any(pads):
        return x
    return keras.layers.ZeroPadding2D(((0, pads[0]), (0, pads[1])), name=f"pool{index}_pad")(x)


def _conv_stage(x, layer, index, filters, *, towers, lrn, pool, ceil_mode, init, seed, input_shape):
    """One ConvLayer row: the (grouped) convolution with ReLU, then its LRN (if any) and pool."""
    kwargs = {
        "strides": layer.stride,
        "padding": "valid" if index == 1 else "same",
        "activation": "relu",
        "kernel_initializer": common.kernel_initializer(init, PAPER_STDDEV, _seed(seed, index)),
        "bias_initializer": common.bias_initializer(init, layer.paper_bias),
        "name": layer.name,
    }
    if index == 1:
        common.check_window_fits(x, layer.kernel, layer.name, input_shape)
    if layer.tower_local and towers > 1:
        x = GroupedConv2D(filters, layer.kernel, groups=towers, **kwargs)(x)
    else:
        x = keras.layers.Conv2D(filters, layer.kernel, **kwargs)(x)
    if layer.lrn and lrn is not None:
        x = LocalResponseNormalization(**lrn, name=f"norm{index}")(x)
    if layer.pool:
        window, stride = pool
        common.check_window_fits(x, window, f"pool{index}", input_shape)
        if ceil_mode:
            x = _ceil_padding(x, window, stride, index)
        x = keras.layers.MaxPooling2D(window, strides=stride, name=f"pool{index}")(x)
    return x
