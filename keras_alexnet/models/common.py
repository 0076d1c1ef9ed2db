"""Pieces the AlexNet and VGG builders share: initialisers, input checks, the head."""

import keras

from keras_alexnet.artifacts import INPUT_NAME
from keras_alexnet.layers import InputNormalization

INITIALIZERS = ("paper", "glorot", "he")


def kernel_initializer(init, paper_stddev, seed=None):
    """Return the kernel initialiser: the paper's Gaussian, Glorot-uniform or He-normal."""
    if init == "paper":
        return keras.initializers.RandomNormal(mean=0.0, stddev=paper_stddev, seed=seed)
    if init == "glorot":
        return keras.initializers.GlorotUniform(seed=seed)
    if init == "he":
        return keras.initializers.HeNormal(seed=seed)
    raise ValueError(f"init must be one of {INITIALIZERS}. Received: init={init!r}")


def bias_initializer(init, paper_value):
    """Return the bias initialiser: the paper's constant, or zeros for Glorot/He."""
    value = paper_value if init == "paper" else 0.0
    return keras.initializers.Constant(value) if value else keras.initializers.Zeros()


def check_common_args(classes, include_top, pooling, classifier_activation):
    """Validate the Keras-Applications-style arguments shared by every builder."""
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"classes must be a positive int. Received: classes={classes!r}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if include_top and pooling is not None:
        raise ValueError(
            f"pooling applies only with include_top=False. Received: pooling={pooling!r}"
        )
    keras.activations.get(classifier_activation)


def resolve_input_shape(input_shape, default_size):
    """Return a (H, W, 3) input shape, defaulting to the paper's square crop."""
    if input_shape is None:
        return (default_size, default_size, 3)
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(
            f"input_shape must be (height, width, 3) for RGB images. Received: input_shape={shape}"
        )
    return shape


def stem(input_shape, mean, scale):
    """Return the model's input and, when `mean` is given, its in-graph mean subtraction.

    With `mean` the model takes RGB pixels on the 0-255 scale and subtracts the training
    set's mean itself (layer `normalize`), so the mean is saved with the model and exports.
    """
    inputs = keras.Input(shape=input_shape, name=INPUT_NAME)
    if mean is None:
        return inputs, inputs
    return inputs, InputNormalization(mean=mean, scale=scale, name="normalize")(inputs)


def check_window_fits(x, window, where, input_shape):
    """Raise a clear ValueError when a valid-padded window no longer fits the feature map."""
    h, w = x.shape[1:3]
    if (h is not None and h < window) or (w is not None and w < window):
        raise ValueError(
            f"input_shape {tuple(input_shape)} is too small: {where} needs at least "
            f"{window}x{window} maps and gets {h}x{w}."
        )


def head(
    x, *, fc_units, names, dropout, classes, include_top, pooling, activation, init_fn,
    dropout_first=False,
):  # fmt: skip
    """Attach the paper's classifier (FC-ReLU-dropout twice, then FC) or headless pooling.

    `names` gives the three FC layers' names; `init_fn(i)` returns the (kernel, bias)
    initialisers of FC layer i (0-based). `dropout_first` drops the inputs of the first two
    FC layers instead of their outputs (torchvision's AlexNet).
    """
    if not include_top:
        if pooling == "avg":
            return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if pooling == "max":
            return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        return x
    x = keras.layers.Flatten(name="flatten")(x)
    for i, (units, name) in enumerate(zip((fc_units, fc_units), names[:2], strict=True)):
        kernel_init, bias_init = init_fn(i)
        if dropout_first:
            x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
        x = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=kernel_init,
            bias_initializer=bias_init,
            name=name,
        )(x)
        if not dropout_first:
            x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    kernel_init, bias_init = init_fn(2)
    return keras.layers.Dense(
        classes,
        activation=activation,
        kernel_initializer=kernel_init,
        bias_initializer=bias_init,
        # Scores in float32 under mixed precision, as the Keras mixed-precision guide advises.
        dtype="float32",
        name=names[2],
    )(x)


def scaled(channels, width, multiple=1):
    """Scale a channel count by `width`, keeping it a positive multiple of `multiple`."""
    return max(multiple, int(round(channels * width / multiple)) * multiple)
