"""Caffe's bvlc_alexnet weights (`bvlc_alexnet.caffemodel`), read without Caffe.

A .caffemodel is a protobuf `NetParameter` (caffe/src/caffe/proto/caffe.proto). This module
reads the protobuf wire format itself, for the few fields that hold weights:
NetParameter.layer = 100 (LayerParameter: name = 1, type = 2 string, blobs = 7) and the
deprecated NetParameter.layers = 2 (V1LayerParameter: name = 4, type = 5 enum, blobs = 6,
or a V0LayerParameter in its field 1: name = 1, type = 2 string, blobs = 50);
BlobProto: shape = 7 (BlobShape: dim = 1, packed int64), data = 5 (packed float), or the
legacy num / channels / height / width = 1 .. 4. Convolution weights are
(out, in / group, kh, kw); InnerProduct weights (out, in), fc6's inputs the flattened
(c, h, w) map. The net is Caffe's AlexNet: LRN across all maps with Caffe's constants,
pools that round up (`CAFFE_ALEXNET`); inputs BGR minus the mean (presets.CAFFE_ALEXNET).
"""

import numpy as np

from keras_alexnet.layers import CAFFE_LRN
from keras_alexnet.models.alexnet import CONV_LAYERS
from keras_alexnet.weights.importer import WeightsError, dense_from_chw
from keras_alexnet.weights.presets import CAFFE_ALEXNET

# Caffe's AlexNet in our builder's arguments: its LRN constants, across all maps, and its
# pooled sizes rounded up (Caffe's PoolingLayer; the same as ours at 227).
CAFFE_MODEL_ARGS = {"lrn": CAFFE_LRN, "lrn_per_tower": False, "ceil_mode": True}
ALEXNET_LAYERS = tuple(layer.name for layer in CONV_LAYERS) + ("fc6", "fc7", "fc8")
# Layer types that hold weights: LayerParameter's strings, V1's enum, V0's strings.
CONVOLUTION = {"Convolution", 4, "conv"}
INNER_PRODUCT = {"InnerProduct", 14, "innerproduct"}
# field numbers (name, type, blobs) of LayerParameter, V1LayerParameter, V0LayerParameter
LAYER_FIELDS = {100: (1, 2, 7), 2: (4, 5, 6), "v0": (1, 2, 50)}
V0_IN_V1 = 1  # V1LayerParameter.layer: the V0LayerParameter of an upgraded old net
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


def _varint(buf, pos):
    """Decode a base-128 varint at `pos`: (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise WeightsError("truncated protobuf: a varint runs past the end")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _fields(buf):
    """Yield a message's (field number, wire type, value): an int, or the bytes' memoryview."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
            continue
        if wire == LENGTH:
            size, pos = _varint(buf, pos)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
        else:
            raise WeightsError(f"not a protobuf message: wire type {wire} in field {number}")
        if pos + size > len(buf):
            raise WeightsError(f"truncated protobuf: field {number} runs past the end")
        yield number, wire, buf[pos : pos + size]
        pos += size


def _varints(wire, value):
    """A repeated integer field's values, packed (one bytes value) or not (one varint)."""
    if wire == VARINT:
        return [value]
    values, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        values.append(v)
    return values


def _blob(buf):
    """A BlobProto as a float32 array of its shape (BlobShape, else num/channels/h/w)."""
    shape, legacy, chunks = None, {}, []
    for number, wire, value in _fields(buf):
        if number == 7:
            shape = [d for n, w, v in _fields(value) if n == 1 for d in _varints(w, v)]
        elif number in (1, 2, 3, 4) and wire == VARINT:
            legacy[number] = value
        elif number == 5:
            chunks.append(np.frombuffer(value, "<f4"))
        elif number == 8:
            chunks.append(np.frombuffer(value, "<f8"))
    data = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if shape is None:
        shape = [legacy.get(n, 0) for n in (1, 2, 3, 4)]
    if int(np.prod(shape)) != data.size:
        raise WeightsError(f"a blob of shape {shape} holds {data.size} values")
    return data.reshape(shape)


def _layer(buf, fields):
    """(name, type, [blobs]) of a LayerParameter, V1LayerParameter or V0LayerParameter."""
    name_field, type_field, blobs_field = fields
    name, kind, blobs = "", None, []
    for number, wire, value in _fields(buf):
        if number == name_field and wire == LENGTH:
            name = bytes(value).decode("utf8", "replace")
        elif number == type_field:
            kind = value if wire == VARINT else bytes(value).decode("utf8", "replace")
        elif number == blobs_field:
            blobs.append(_blob(value))
        elif fields == LAYER_FIELDS[2] and number == V0_IN_V1:
            return _layer(value, LAYER_FIELDS["v0"])
    return name, kind, blobs


def read_net_layers(path):
    """The layers of a .caffemodel that hold weights: [(name, "conv" | "fc", [blobs])]."""
    with open(path, "rb") as f:
        buf = memoryview(f.read())
    layers = []
    try:
        for number, wire, value in _fields(buf):
            if number in (100, 2) and wire == LENGTH:
                name, kind, blobs = _layer(value, LAYER_FIELDS[number])
                if blobs and kind in CONVOLUTION | INNER_PRODUCT:
                    layers.append((name, "conv" if kind in CONVOLUTION else "fc", blobs))
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    if not layers:
        raise WeightsError(f"{path}: no Convolution or InnerProduct layer with weights")
    return layers


def alexnet_args(conv1_filters):
    """Caffe's AlexNet as builder arguments, with the width conv1's filter count implies."""
    width = conv1_filters / CONV_LAYERS[0].filters
    return {**CAFFE_MODEL_ARGS, **({} if width == 1 else {"width": width})}


def _check_blobs(path, name, kind, weight, bias):
    """Refuse a layer whose weight and bias blobs cannot be a layer of `kind`, in one line."""
    what = "Convolution" if kind == "conv" else "InnerProduct"
    for blob, role in ((weight, "weight"), (bias, "bias")):
        if blob.size == 0:
            raise WeightsError(f"{path}: layer {name}'s {role} blob is empty (shape {blob.shape})")
    if kind == "conv" and weight.ndim != 4:
        raise WeightsError(
            f"{path}: layer {name}'s weight blob has shape {weight.shape}, not a {what}'s "
            "(out, in / group, kh, kw)"
        )
    # A legacy blob pads an InnerProduct's (out, in) weight to (1, 1, out, in).
    outputs = weight.shape[0] if kind == "conv" else weight.reshape(-1, weight.shape[-1]).shape[0]
    if outputs != bias.size:
        raise WeightsError(
            f"{path}: layer {name}'s weight blob of shape {weight.shape} does not fit its "
            f"{bias.size} biases (one per output of the {what})"
        )


def _convert(layers, path):
    """Caffe's conv1 .. fc8 blobs as our {layer: [kernel, bias]}."""
    kinds = [kind for _, kind, _ in layers]
    if kinds != ["conv"] * len(CONV_LAYERS) + ["fc"] * 3:
        found = ", ".join(f"{name} ({kind})" for name, kind, _ in layers)
        raise WeightsError(
            f"{path}: not Caffe's AlexNet (5 convolutions, then 3 inner products); it has {found}"
        )
    weights = {}
    for ours, (name, kind, blobs) in zip(ALEXNET_LAYERS, layers, strict=True):
        if len(blobs) != 2:
            raise WeightsError(f"{path}: layer {name} has {len(blobs)} blobs, not weight and bias")
        weight, bias = blobs[0], blobs[1].reshape(-1)
        _check_blobs(path, name, kind, weight, bias)
        if kind == "conv":
            kernel = weight.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
        elif ours == "fc6":
            channels = weights[ALEXNET_LAYERS[len(CONV_LAYERS) - 1]][0].shape[-1]
            kernel = dense_from_chw(weight.reshape(bias.size, -1), channels, name)
        else:
            kernel = weight.reshape(bias.size, -1).T  # (out, in) -> (in, out)
        weights[ours] = [kernel, bias]
    return weights


def read_caffemodel(path, spec):
    """Read Caffe's bvlc_alexnet .caffemodel: (weights by layer name, the Caffe Preset)."""
    weights = _convert(read_net_layers(path), path)
    conv1_filters = weights["conv1"][0].shape[-1]
    return weights, CAFFE_ALEXNET.replace(model_args=alexnet_args(conv1_filters))
