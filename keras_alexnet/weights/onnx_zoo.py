"""The ONNX model zoo's AlexNet (`bvlcalexnet-12.onnx`) and VGG (`vgg16-7.onnx`) files.

Read by graph structure, not by initializer names, so any faithful ONNX export of these
nets imports: the Conv nodes in graph order are conv1 .. conv5 (AlexNet) or
block{i}_conv{j} (VGG, a MaxPool closing each block); the Gemm nodes are the three FC
layers. Each Conv's strides, pads and group, each MaxPool's window, and AlexNet's LRN
constants are checked against the model we build; the input size comes from the graph
input. Conv weights are (out, in / group, kh, kw); a Gemm's B is (out, in) with transB = 1,
the first one's inputs the flattened (c, h, w) map. bvlcalexnet is Caffe's bvlc_alexnet
converted through Caffe2 (LRN across all maps, Caffe's constants, pool1 padded at its end
to round up as Caffe does at 224); the VGG files come from MXNet Gluon.
"""

import dataclasses

import numpy as np
import onnx
from onnx import helper, numpy_helper

from keras_alexnet.layers import CAFFE_LRN
from keras_alexnet.models.alexnet import CONV_LAYERS, POOLS
from keras_alexnet.weights.caffe import ALEXNET_LAYERS, alexnet_args
from keras_alexnet.weights.importer import WeightsError, dense_from_chw, vgg_args
from keras_alexnet.weights.presets import ONNX_ZOO_ALEXNET, ONNX_ZOO_VGG

FC_LAYERS = 3
WEIGHT_OPS = ("Conv", "Gemm", "LRN", "MaxPool")
PASS_THROUGH = ("Identity", "Cast")  # nodes between an initializer and a weight input, followed


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a family's zoo file maps onto our model: conv names, pooling, FC names, rounding."""

    conv_name: object  # (conv index, block, conv in block) -> our layer name
    expected_conv: object  # (conv index, kernel) -> (stride, pad, group)
    pool: tuple[int, int]  # MaxPool window, stride
    fc_names: tuple[str, ...]
    max_convs: int | None  # more Conv nodes than this: not the family's net
    caffe: bool  # Caffe's AlexNet: its LRN, and pools that may round up (ceil_mode)
    preset: object  # (weights, input size, ceil_mode) -> Preset


def _alexnet_conv(index, kernel):
    """(stride, pad, group) of AlexNet's conv number `index` (0-based), Caffe's padding."""
    layer = CONV_LAYERS[index]
    return layer.stride, 0 if index == 0 else (kernel - 1) // 2, 2 if layer.tower_local else 1


LAYOUTS = {
    "alexnet": Layout(
        conv_name=lambda index, block, in_block: ALEXNET_LAYERS[index],
        expected_conv=_alexnet_conv,
        pool=POOLS["overlapping"],
        fc_names=ALEXNET_LAYERS[len(CONV_LAYERS) :],
        max_convs=len(CONV_LAYERS),
        caffe=True,
        preset=lambda first, size, ceil_mode: ONNX_ZOO_ALEXNET.replace(
            input_size=size,
            resize=size,
            model_args={**alexnet_args(first), "ceil_mode": ceil_mode},
        ),
    ),  # fmt: skip
    "vgg": Layout(
        conv_name=lambda index, block, in_block: f"block{block}_conv{in_block}",
        expected_conv=lambda index, kernel: (1, (kernel - 1) // 2, 1),
        pool=(2, 2),
        fc_names=("fc1", "fc2", "predictions"),
        max_convs=None,
        caffe=False,
        preset=lambda first, size, ceil_mode: ONNX_ZOO_VGG.replace(
            input_size=size, model_args=vgg_args(first)
        ),
    ),
}


def _attributes(node):
    """A node's attributes as Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class Constants(dict):
    """Constant arrays by name, and the node computing each other name (for the message).

    The arrays: initializers, Constant nodes' outputs and Identity / Cast chains from them.
    """

    def __init__(self, arrays, producers, path):
        super().__init__(arrays)
        self.producers, self.path = producers, path

    def input(self, node, index):
        """The constant array `node` takes as its input number `index`; WeightsError if none."""
        name = node.input[index]
        if name in self:
            return self[name]
        producer = self.producers.get(name)
        source = (
            f"node {producer.name or name} ({producer.op_type})" if producer else "a graph input"
        )
        raise WeightsError(
            f"{self.path}: {node.op_type} {node.name or node.output[0]}'s weight {name!r} comes "
            f"from {source}, not an initializer: only constant weights are read"
        )


def _constants(graph, path):
    """The graph's constant arrays (see Constants); nodes run in graph order, as ONNX sorts."""
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {}
    for node in graph.node:
        attributes = _attributes(node)
        if node.op_type == "Constant" and "value" in attributes:
            arrays[node.output[0]] = numpy_helper.to_array(attributes["value"])
        elif node.op_type in PASS_THROUGH and node.input and node.input[0] in arrays:
            value = arrays[node.input[0]]
            if node.op_type == "Cast":
                value = value.astype(helper.tensor_dtype_to_np_dtype(attributes["to"]))
            arrays[node.output[0]] = value
        else:
            producers.update({name: node for name in node.output})
    return Constants(arrays, producers, path)


def _input_size(graph, constants, path):
    """The square side of the graph's NCHW image input."""
    inputs = [i for i in graph.input if i.name not in constants]
    dims = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
    if len(dims) != 4 or dims[1] not in (3, None) or dims[2] != dims[3] or dims[2] is None:
        raise WeightsError(
            f"{path}: the graph input is not a square NCHW RGB image of fixed size ({dims})"
        )
    return dims[2]


def _pads(node, attributes, rank=2):
    """(begin, end) padding of a Conv or MaxPool; explicit pads only."""
    if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise WeightsError(f"node {node.name or node.op_type}: auto_pad is not supported")
    pads = list(attributes.get("pads", [0] * 2 * rank))
    return pads[:rank], pads[rank:]


def _conv(node, spec, index, constants, size):
    """A Conv node's [kernel, bias] in our layout, its map size after it, checked against ours."""
    attributes = _attributes(node)
    weight = constants.input(node, 1)
    out, _, kh, kw = weight.shape
    bias = constants.input(node, 2) if len(node.input) > 2 else np.zeros(out, np.float32)
    stride, pad, group = LAYOUTS[spec.family].expected_conv(index, kh)
    begin, end = _pads(node, attributes)
    got = (tuple(attributes.get("strides", (1, 1))), begin + end, attributes.get("group", 1))
    if kh != kw or got != ((stride, stride), [pad] * 4, group):
        raise WeightsError(
            f"Conv {index + 1} ({node.name}): strides, pads, group {got}; {spec.name}'s are "
            f"{((stride, stride), [pad] * 4, group)}"
        )
    return [weight.transpose(2, 3, 1, 0), bias], (size + 2 * pad - kh) // stride + 1


def _pool(node, spec, size):
    """A MaxPool's output size and whether it rounds (floor, ceil) as the file's does."""
    attributes = _attributes(node)
    window, stride = LAYOUTS[spec.family].pool
    begin, end = _pads(node, attributes)
    got = (tuple(attributes.get("kernel_shape", ())), tuple(attributes.get("strides", (1, 1))))
    if got != ((window,) * 2, (stride,) * 2) or any(begin) or len(set(end)) > 1:
        raise WeightsError(
            f"MaxPool {node.name}: window {got[0]}, strides {got[1]}, pads {begin + end}; "
            f"{spec.name} pools {window}/{stride} without padding at the start"
        )
    ceil = attributes.get("ceil_mode", 0)
    out = (
        -(-(size + end[0] - window) // stride) + 1
        if ceil
        else (size + end[0] - window) // stride + 1
    )
    return out, (out == (size - window) // stride + 1, out == -(-(size - window) // stride) + 1)


def _check_lrn(node, spec, path):
    """An LRN must be Caffe's AlexNet's (the model the import builds): WeightsError otherwise."""
    a = _attributes(node)
    size, alpha, beta, bias = (
        a.get("size"),
        a.get("alpha", 1e-4),
        a.get("beta", 0.75),
        a.get("bias", 1.0),
    )
    ours = (
        2 * CAFFE_LRN["depth_radius"] + 1,
        CAFFE_LRN["alpha"],
        CAFFE_LRN["beta"],
        CAFFE_LRN["bias"],
    )
    got = (size, alpha / size if size else None, beta, bias)
    if (
        not LAYOUTS[spec.family].caffe
        or got[0] != ours[0]
        or not np.allclose(got[1:], ours[1:], rtol=1e-5)
    ):
        raise WeightsError(
            f"{path}: LRN {node.name} (size {size}, alpha {alpha:g}, beta {beta:g}, bias "
            f"{bias:g}) is not Caffe's AlexNet's (size 5, alpha 1e-4, beta 0.75, bias 1), "
            f"which {spec.name} imports as"
        )


def _gemm(node, constants):
    """A Gemm's (out, in) weight and bias with its alpha and beta folded in."""
    a = _attributes(node)
    if a.get("transA", 0):
        raise WeightsError(f"Gemm {node.name}: transA = 1 is not a fully connected layer")
    weight = constants.input(node, 1)
    weight = weight if a.get("transB", 0) else weight.T
    bias = constants.input(node, 2) if len(node.input) > 2 else np.zeros(len(weight))
    return [a.get("alpha", 1.0) * weight, a.get("beta", 1.0) * np.broadcast_to(bias, len(weight))]


def _features(graph, spec, constants, size, path):
    """Walk the Conv / LRN / MaxPool nodes: ({our conv: [kernel, bias]}, ceil_mode)."""
    layout = LAYOUTS[spec.family]
    weights, rounding, block, in_block = {}, [], 1, 0
    convs = 0
    for node in graph.node:
        if node.op_type == "Conv":
            in_block += 1
            if layout.max_convs is not None and convs >= layout.max_convs:
                raise WeightsError(
                    f"{path}: more than {layout.max_convs} Conv nodes: not {spec.family}"
                )
            name = layout.conv_name(convs, block, in_block)
            weights[name], size = _conv(node, spec, convs, constants, size)
            convs += 1
        elif node.op_type == "MaxPool":
            size, fits = _pool(node, spec, size)
            rounding.append(fits)
            block, in_block = block + 1, 0
        elif node.op_type == "LRN":
            _check_lrn(node, spec, path)
    floor, ceil = (all(r[i] for r in rounding) for i in (0, 1))
    if not floor and not (ceil and layout.caffe):
        raise WeightsError(f"{path}: its MaxPools round sizes neither as ours nor as Caffe's")
    return weights, not floor


def read_onnx_zoo(path, spec):
    """Read an ONNX model zoo AlexNet or VGG file by its graph: (weights by layer, Preset)."""
    try:
        graph = onnx.load(str(path)).graph
    except Exception as e:  # onnx raises DecodeError, ValidationError, OSError, ...
        raise WeightsError(f"{path} is not a readable ONNX file: {e}") from None
    constants = _constants(graph, path)
    size = _input_size(graph, constants, path)
    weights, ceil_mode = _features(graph, spec, constants, size, path)
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    if len(gemms) != FC_LAYERS:
        raise WeightsError(
            f"{path}: {len(gemms)} Gemm nodes, not {spec.name}'s {FC_LAYERS} FC layers"
        )
    layout = LAYOUTS[spec.family]
    channels = list(weights.values())[-1][0].shape[-1]
    for i, (name, node) in enumerate(zip(layout.fc_names, gemms, strict=True)):
        weight, bias = _gemm(node, constants)
        kernel = dense_from_chw(weight, channels, f"Gemm {node.name}") if i == 0 else weight.T
        weights[name] = [kernel, bias]
    first = list(weights.values())[0][0].shape[-1]
    return weights, layout.preset(first, size, ceil_mode)
