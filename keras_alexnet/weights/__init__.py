"""Published weights (Keras Applications, torchvision, Caffe, the ONNX model zoo) in our models.

    from keras_alexnet.weights import import_weights
    import_weights("vgg16_weights_tf_dim_ordering_tf_kernels.h5", "vgg16", "runs/vgg16-keras")

Each format's reader is a row of `importer.FORMATS`; each source's preprocessing a `Preset`
(`presets.py`) that says where the source documents it. Nothing is downloaded: the
importers read files the user already has.
"""

from keras_alexnet.weights.importer import (
    FORMATS,
    Format,
    WeightsError,
    build,
    detect_format,
    imagenet_class_names,
    import_weights,
    read,
    set_weights,
)
from keras_alexnet.weights.presets import PRESETS, Preset

__all__ = [
    "FORMATS",
    "PRESETS",
    "Format",
    "Preset",
    "WeightsError",
    "build",
    "detect_format",
    "imagenet_class_names",
    "import_weights",
    "read",
    "set_weights",
]
