"""Keras Applications' VGG16 / VGG19 weight files (`vgg16_weights_tf_dim_ordering_tf_kernels.h5`).

The legacy Keras HDF5 layout: the root (or its `model_weights` group, in a whole-model
file) lists its layers in the attribute `layer_names`; each layer is a group whose
attribute `weight_names` lists its arrays in order (kernel, bias). HDF5 limits an
attribute's size, so Keras splits a long list into `layer_names0`, `layer_names1`, ...
The layer names (`block{i}_conv{j}`, `fc1`, `fc2`, `predictions`) and layouts (kernels
(kh, kw, in, out), fc1's rows in (h, w, c) order) are already ours; the inputs are BGR
with the caffe-mode mean (presets.KERAS_CAFFE).
"""

import h5py

from keras_alexnet.weights.importer import WeightsError
from keras_alexnet.weights.presets import KERAS_CAFFE


def _attribute_list(group, name):
    """A string-list attribute, joined from Keras's `name0`, `name1`, ... chunks if split."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks, index = [], 0
        while f"{name}{index}" in group.attrs:
            chunks.append(group.attrs[f"{name}{index}"])
            index += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for c in chunks for v in c]


def read_h5_weights(path):
    """{layer name: [arrays in weight_names order]} of a legacy Keras HDF5 file's layers."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise WeightsError(f"{path} is not a readable HDF5 file: {e}") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        layer_names = _attribute_list(root, "layer_names")
        if not layer_names:
            raise WeightsError(
                f"{path} is not in the legacy Keras HDF5 layout (no 'layer_names' attribute); "
                "a Keras 3 .weights.h5 file loads with model.load_weights"
            )
        weights = {}
        for name in layer_names:
            group = root[name]
            arrays = [group[w][()] for w in _attribute_list(group, "weight_names")]
            if arrays:
                weights[name] = arrays
    return weights


def read_keras_h5(path, spec):
    """Read Keras Applications' VGG weights: (weights by layer name, the caffe-mode Preset)."""
    if spec.family != "vgg":
        raise WeightsError(
            f"Keras Applications' .h5 weights are VGG16 / VGG19 (vgg16, vgg19); "
            f"Received: model={spec.name!r}"
        )
    return read_h5_weights(path), KERAS_CAFFE
