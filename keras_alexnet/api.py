"""`build_model` with weights: the models' builders and the weight importers, joined here.

Above both `keras_alexnet.models` (architectures) and `keras_alexnet.weights` (readers), so
neither imports the other.
"""

from keras_alexnet import models
from keras_alexnet.weights.importer import load


def build_model(name, *, weights=None, classes=None, **kwargs):
    """Build a model by name as a `keras.Model`, optionally with published or trained weights.

    `weights`: None (initialised as `init` says), the path of a published weight file
    (Keras Applications' .h5, torchvision's .pth / .safetensors, and the formats of
    `keras_alexnet.weights.importer.FORMATS`) or a publisher's name ("keras", "torchvision",
    "caffe", or "imagenet": the first that publishes this model; its file is downloaded once
    into the cache and verified, `keras_alexnet.weights.hub`), loaded with the source's
    preprocessing folded into the model, which still takes RGB pixels on the 0-255 scale.
    `classes` defaults to the file's classifier's outputs (1000 without weights); another
    `classes` keeps the classifier's initialisation; with `include_top=False` the FC layers
    are left out. The other arguments are `keras_alexnet.models.build_model`'s.
    """
    if weights is None:
        return models.build_model(name, classes=classes, **kwargs)

    return load(models.get_spec(name), weights, classes=classes, **kwargs)
