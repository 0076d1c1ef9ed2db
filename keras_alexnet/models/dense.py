"""Fully-convolutional twins of trained models, for the VGG paper's dense evaluation.

VGG, Section 3.2: "the fully-connected layers are first converted to convolutional layers
(the first FC layer to a 7x7 conv. layer, the last two FC layers to 1x1 conv. layers). The
resulting fully-convolutional net is then applied to the whole (uncropped) image. The
result is a class score map ... spatially averaged (sum-pooled)". AlexNet's fc6 sees a
6x6 map, so it becomes a 6x6 convolution. Keras flattens NHWC, so a Dense kernel of shape
(h * w * c, units) is exactly a (h, w, c, units) convolution kernel, reshaped.
"""

import keras

from keras_alexnet.artifacts import INPUT_NAME


def _is_chain(model):
    """Whether every layer of a functional model takes the previous layer's output only."""
    layers = model.layers
    if not layers or not isinstance(layers[0], keras.layers.InputLayer):
        return False
    for previous, layer in zip(layers, layers[1:], strict=False):
        inputs = keras.tree.flatten(layer.input)
        if len(inputs) != 1 or inputs[0] is not keras.tree.flatten(previous.output)[0]:
            return False
    return True


def fully_convolutional(model, *, average=True):
    """Return a twin of `model` taking images of any size, its FC layers as convolutions.

    The twin shares every convolutional layer (and its weights) with `model`; the Flatten
    + Dense head becomes a (h, w) valid convolution (fc6: 6x6 AlexNet, 7x7 VGG) and 1x1
    convolutions with the Dense weights reshaped, each with its Dense layer's activation
    (so a softmax head gives class posteriors at every position). Dropout is left out
    (inference only). With `average` the score map is averaged spatially to [B, classes];
    otherwise the map [B, h', w', classes] is returned. On an input of exactly the model's
    size the map is 1x1 and the twin computes what `model` computes.
    """
    if not _is_chain(model):
        raise ValueError(
            f"fully_convolutional needs a model built as one chain of layers (build_model's "
            f"models are). Received: model={model.name!r}"
        )
    channels = model.input_shape[-1]
    inputs = keras.Input(shape=(None, None, channels), name=INPUT_NAME)
    x = inputs
    flat_shape = None  # (h, w, c) that Flatten saw: the first Dense layer's window
    converted = []
    for layer in model.layers[1:]:
        if isinstance(layer, keras.layers.Flatten):
            flat_shape = tuple(layer.input.shape[1:])
            if len(flat_shape) != 3 or None in flat_shape:
                raise ValueError(f"{layer.name}: needs a known (h, w, c) input, got {flat_shape}")
            continue
        if isinstance(layer, keras.layers.Dropout):
            continue
        if isinstance(layer, keras.layers.Dense):
            kernel, *bias = layer.get_weights()
            window = flat_shape[:2] if flat_shape is not None else (1, 1)
            conv = keras.layers.Conv2D(
                layer.units,
                window,
                padding="valid",
                activation=layer.activation,
                use_bias=layer.use_bias,
                dtype=layer.dtype_policy,
                name=layer.name,
            )
            x = conv(x)
            conv.set_weights([kernel.reshape(conv.kernel.shape), *bias])
            converted.append(layer.name)
            flat_shape = None
            continue
        if isinstance(layer, keras.layers.InputLayer):
            continue
        x = layer(x)
    if converted and average:
        x = keras.layers.GlobalAveragePooling2D(name="score_average", dtype="float32")(x)
    return keras.Model(inputs, x, name=f"{model.name}_dense")
