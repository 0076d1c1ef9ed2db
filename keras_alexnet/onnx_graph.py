"""ONNX graph rewrites that keep what the model computes and make onnxruntime faster.

onnxruntime's CPU `LRN` kernel is single-threaded and calls `pow` per element: on a
2-core machine it took 45 % of AlexNet's inference time (SPEC section 3; profile in
benchmarks/RESULTS.md). `expand_lrn` replaces every `LRN` node by the same formula in
ops that onnxruntime vectorises and threads:

    d = bias + (alpha / size) * Conv1x1(x * x, band)    # band[o, i] = 1 if |o - i| <= size // 2
    y = x / sqrt(d * sqrt(d))                             # = x * d^-0.75, when beta = 0.75
    y = x * pow(d, -beta)                                 # any other beta

The windowed sum over channels becomes a 1x1 convolution with a banded 0/1 kernel
(zero-padded at the edges, as LRN is), which onnxruntime runs through its GEMM kernels.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _attributes(node):
    """Return an ONNX node's attributes as a dict."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _channels(model):
    """Map each tensor name to its channel count (axis 1) where shape inference knows it."""
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    channels = {}
    for value in values:
        dims = value.type.tensor_type.shape.dim
        if len(dims) >= 2 and dims[1].HasField("dim_value"):
            channels[value.name] = dims[1].dim_value
    return channels


def expand_lrn(model):
    """Return a copy of `model` with every `LRN` node written as Conv + elementwise ops."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    channels = _channels(model)
    nodes, initializers = [], []
    for node in graph.node:
        if node.op_type != "LRN":
            nodes.append(node)
            continue
        attrs = _attributes(node)
        size = int(attrs["size"])
        alpha = float(attrs.get("alpha", 1e-4))
        beta = float(attrs.get("beta", 0.75))
        bias = float(attrs.get("bias", 1.0))
        x, y = node.input[0], node.output[0]
        if x not in channels:
            raise ValueError(f"LRN node {node.name!r}: channel count of {x!r} is unknown")
        c = channels[x]
        prefix = (node.name or y) + "/expanded"
        offsets = np.abs(np.arange(c)[:, None] - np.arange(c)[None, :])
        band = (offsets <= size // 2).astype(np.float32) * np.float32(alpha / size)
        initializers += [
            numpy_helper.from_array(band[:, :, None, None], f"{prefix}/band"),
            numpy_helper.from_array(np.full(c, bias, np.float32), f"{prefix}/bias"),
        ]
        nodes += [
            helper.make_node("Mul", [x, x], [f"{prefix}/square"]),
            helper.make_node(
                "Conv",
                [f"{prefix}/square", f"{prefix}/band", f"{prefix}/bias"],
                [f"{prefix}/d"],
                kernel_shape=[1, 1],
            ),
        ]
        if beta == 0.75:
            nodes += [
                helper.make_node("Sqrt", [f"{prefix}/d"], [f"{prefix}/sqrt_d"]),
                helper.make_node("Mul", [f"{prefix}/d", f"{prefix}/sqrt_d"], [f"{prefix}/d15"]),
                helper.make_node("Sqrt", [f"{prefix}/d15"], [f"{prefix}/d075"]),
                helper.make_node("Div", [x, f"{prefix}/d075"], [y]),
            ]
        else:
            initializers.append(
                numpy_helper.from_array(np.array(-beta, np.float32), f"{prefix}/neg_beta")
            )
            nodes += [
                helper.make_node("Pow", [f"{prefix}/d", f"{prefix}/neg_beta"], [f"{prefix}/f"]),
                helper.make_node("Mul", [x, f"{prefix}/f"], [y]),
            ]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    return model
