"""Keras -> ONNX: the fully-convolutional twin as an ONNX model with named I/O and metadata.

tf2onnx (through Keras's `export(format="onnx")`) converts the convolutional body; the
fully-connected head is appended from NumPy (`_append_head`), then the graph rewrites of
`keras_alexnet.onnx.graph` run. The result takes "images" (float32 RGB 0-255, NHWC, any
batch, height and width) and returns "probabilities" [N, classes], with the Metadata in
its metadata properties.
"""

import warnings
from pathlib import Path

import numpy as np

from keras_alexnet import _quiet
from keras_alexnet.artifacts import INPUT_NAME, OUTPUT_NAME, ExportError
from keras_alexnet.onnx.proto import opset_version, rename, set_properties

GRAPPLER_INFO = ("] Number of eligible GPUs", "] Starting new session")
# ONNX ops of the activations a converted FC layer may have (None: no op).
HEAD_ACTIVATIONS = {"relu": "Relu", "softmax": "Softmax", "linear": None}
FEATURES_NAME = "features"
# Slice's "to the end" (ONNX has no open-ended slice).
_END = np.iinfo(np.int64).max


def _head(model, twin):
    """Split the twin into (body model, head layers) for a memory-light ONNX conversion.

    tf2onnx needs many times the weights' size in RAM at its peak: it runs on the
    convolutional body only, and the FC convolutions (most of VGG's weights) are appended
    as ONNX nodes from NumPy. Returns (twin, []) when the head has an activation this does
    not cover.
    """
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    activations = [getattr(layer.activation, "__name__", None) for layer in dense]
    if not dense or any(a not in HEAD_ACTIVATIONS for a in activations):
        return twin, []
    convs = [twin.get_layer(layer.name) for layer in dense]
    body = keras.Model(twin.input, convs[0].input, name=f"{model.name}_body")
    return body, list(zip(convs, activations, strict=True))


class _Nodes:
    """ONNX nodes and initializers being appended to a graph."""

    def __init__(self):
        self.nodes, self.weights = [], []

    def constant(self, name, array):
        """Add initializer `name` holding `array`; return its name."""
        from onnx import numpy_helper

        self.weights.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def add(self, op, inputs, output, **attrs):
        """Add node `op` named after its one output; return the output's name."""
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _im2col(nodes, x, name, kh, kw):
    """Gather every (kh, kw) window of NHWC `x` onto the channel axis: [N, H', W', kh*kw*C].

    One Slice per offset, concatenated in the (h, w, c) order of Keras's Flatten.
    """
    patches = []
    for dy in range(kh):
        for dx in range(kw):
            y = f"{name}/patch_{dy}_{dx}"
            starts = nodes.constant(f"{y}/starts", np.array([dy, dx], np.int64))
            ends = [dy - kh + 1 or _END, dx - kw + 1 or _END]
            ends = nodes.constant(f"{y}/ends", np.array(ends, np.int64))
            axes = nodes.constant(f"{y}/axes", np.array([1, 2], np.int64))
            patches.append(nodes.add("Slice", [x, starts, ends, axes], y))
    return nodes.add("Concat", patches, f"{name}/patches", axis=3)


def _fc(nodes, x, conv, activation):
    """One FC layer (a `conv` of the twin) as MatMul [+ Add] [+ activation] over positions."""
    kernel, *bias = conv.get_weights()
    kh, kw, _, units = kernel.shape
    name = conv.name
    if (kh, kw) != (1, 1):
        x = _im2col(nodes, x, name, kh, kw)
    weights = nodes.constant(f"{name}/W", kernel.reshape(-1, units))
    x = nodes.add("MatMul", [x, weights], f"{name}/matmul")
    if bias:
        x = nodes.add("Add", [x, nodes.constant(f"{name}/B", bias[0])], f"{name}/add")
    if HEAD_ACTIVATIONS[activation]:
        attrs = {"axis": -1} if activation == "softmax" else {}
        x = nodes.add(HEAD_ACTIVATIONS[activation], [x], f"{name}/{activation}", **attrs)
    return x


def _append_head(proto, head, classes):
    """Append the FC layers, their activations and the spatial mean to an ONNX body.

    The body ends in NHWC features [N, H, W, C]. The first FC layer's (h, w) window is
    gathered onto the channel axis (`_im2col`), so every FC layer is one MatMul against
    its Dense kernel over all images and positions at once: onnxruntime's Conv would run
    fc6 as one matrix-vector product per image, reading the whole fc6 kernel once per
    image. Then the softmax over classes at every position and the spatial average.
    """
    from onnx import TensorProto, helper

    graph = proto.graph
    x = graph.output[0].name
    del graph.output[:]
    nodes = _Nodes()
    for conv, activation in head:
        x = _fc(nodes, x, conv, activation)
    if opset_version(proto) >= 18:
        axes = nodes.constant("head/axes", np.array([1, 2], np.int64))
        mean = helper.make_node("ReduceMean", [x, axes], [OUTPUT_NAME], keepdims=0)
    else:
        mean = helper.make_node("ReduceMean", [x], [OUTPUT_NAME], axes=[1, 2], keepdims=0)
    graph.initializer.extend(nodes.weights)
    graph.node.extend([*nodes.nodes, mean])
    graph.output.append(
        helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", classes])
    )


def _convert_body(body, opset, path):
    """Run tf2onnx (Keras's ONNX export) on `body` into `path`; return the loaded proto."""
    import onnx
    import tensorflow as tf

    signature = [tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT_NAME)]
    # tf2onnx runs grappler, which logs two INFO lines per call straight to fd 2, and
    # Keras's tf2onnx shim warns about np.object on import: noise in front of our report.
    with _quiet.filtered_stderr(GRAPPLER_INFO), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)
        body.export(
            str(path), format="onnx", input_signature=signature, opset_version=opset, verbose=False
        )
    return onnx.load(str(path))


def to_onnx(model, twin, metadata, opset, expand_lrn, work_dir):
    """Convert the twin to an ONNX ModelProto with named I/O, dynamic axes and metadata."""
    from keras_alexnet.onnx import graph as rewrites

    body, head = _head(model, twin)
    proto = _convert_body(body, opset, Path(work_dir) / "raw.onnx")
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ExportError(f"expected one input and one output, got {len(graph.input)}, "
                          f"{len(graph.output)}")  # fmt: skip
    rename(graph, graph.input[0].name, INPUT_NAME)
    rename(graph, graph.output[0].name, FEATURES_NAME if head else OUTPUT_NAME)
    dim = graph.input[0].type.tensor_type.shape.dim
    for axis, param in zip(range(3), ("batch", "height", "width"), strict=True):
        dim[axis].dim_param = param
    if head:
        _append_head(proto, head, len(metadata.class_names))
    else:
        graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    if expand_lrn:
        proto = rewrites.expand_lrn(proto)
    proto = rewrites.fold_input_normalization(proto)
    proto.graph.name = metadata.model
    proto.doc_string = (
        f"keras_alexnet {metadata.model}: float32 RGB 0-255 [N, H, W, 3] -> class probabilities; "
        f"H = W = {metadata.input_size} for a crop, larger for dense evaluation"
    )
    set_properties(proto, metadata.to_properties())
    return proto
