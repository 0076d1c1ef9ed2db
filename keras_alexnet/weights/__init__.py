"""Published weights (Keras Applications, torchvision, Caffe, the ONNX model zoo) in our models.

    from keras_alexnet.weights import import_weights
    import_weights("vgg16_weights_tf_dim_ordering_tf_kernels.h5", "vgg16", "runs/vgg16-keras")

Each format's reader is a row of `importer.FORMATS`; each source's preprocessing a `Preset`
(`presets.py`) that says where the source documents it. The importers read files the user
has; a publisher's name instead of a path ("torchvision", "keras", "caffe", "imagenet")
takes that publisher's file from the cache, downloaded and verified once (`hub.py`).
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
