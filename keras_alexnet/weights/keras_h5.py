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
import numpy as np

from keras_alexnet.weights.importer import WeightsError, vgg_args
from keras_alexnet.weights.presets import KERAS_CAFFE


def _attribute_list(group, name, path):
    """A string-list attribute, joined from Keras's `name0`, `name1`, ... chunks if split."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks, index = [], 0
        while f"{name}{index}" in group.attrs:
            chunks.append(group.attrs[f"{name}{index}"])
            index += 1
    for chunk in chunks:
        names = isinstance(chunk, np.ndarray) and chunk.ndim == 1
        if not names or (chunk.size and chunk.dtype.kind not in "SUO"):  # [] is float64
            raise WeightsError(
                f"{path}: attribute {name!r} of {group.name} is not a list of names (it holds "
                f"{type(chunk).__name__} {np.asarray(chunk).dtype}): not a Keras HDF5 file"
            )
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for c in chunks for v in c]


def _member(group, name, listed_in, path):
    """`group[name]`, which `listed_in` names; WeightsError when the file lacks it."""
    try:
        return group[name]
    except KeyError:
        raise WeightsError(
            f"{path}: {group.name}'s {listed_in} lists {name!r} but the file has no such "
            "entry: the file is damaged or was edited"
        ) from None


def read_h5_weights(path):
    """{layer name: [arrays in weight_names order]} of a legacy Keras HDF5 file's layers."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise WeightsError(f"{path} is not a readable HDF5 file: {e}") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        layer_names = _attribute_list(root, "layer_names", path)
        if not layer_names:
            raise WeightsError(
                f"{path} is not in the legacy Keras HDF5 layout (no 'layer_names' attribute); "
                "a Keras 3 .weights.h5 file loads with model.load_weights"
            )
        weights = {}
        for name in layer_names:
            group = _member(root, name, "layer_names", path)
            arrays = [
                _member(group, w, "weight_names", path)[()]
                for w in _attribute_list(group, "weight_names", path)
            ]
            if arrays:
                weights[name] = arrays
    return weights


def read_keras_h5(path, spec):
    """Read Keras Applications' VGG weights: (weights by layer name, the caffe-mode Preset)."""
    weights = read_h5_weights(path)
    first = next(iter(weights.values()))[0] if weights else None
    width = vgg_args(first.shape[-1]) if first is not None and first.ndim == 4 else {}
    return weights, KERAS_CAFFE.replace(model_args=width)
