"""ONNX graph rewrites that keep what the model computes and make onnxruntime faster.

onnxruntime's CPU `LRN` kernel is single-threaded and calls `pow` per element, a large
share of AlexNet's inference time (profile in benchmarks/RESULTS.md). `expand_lrn`
replaces every `LRN` node by the same formula in ops that onnxruntime vectorises and
threads:

    d = bias + (alpha / size) * Conv1x1(x * x, band)    # band[o, i] = 1 if i is in o's window
    y = x / sqrt(d * sqrt(d))                             # = x * d^-0.75, when beta = 0.75
    y = x * pow(d, -beta)                                 # any other beta

The windowed sum over channels becomes a 1x1 convolution with a banded 0/1 kernel
(zero-padded at the edges, as LRN is), which onnxruntime runs through its GEMM kernels.
AlexNet normalises within each tower; tf2onnx writes that as Transpose -> Split -> one
Transpose + LRN per tower -> Concat, which keeps onnxruntime from running the block in
its blocked (NCHWc) layout. A grouped band convolution (one group per tower) computes the
same per-tower sums in one pass over all channels, so the whole pattern becomes one
expanded LRN.

For int8, `channels_last_lrn` rewrites each expanded LRN to run in NHWC, where
onnxruntime keeps its int8 convolutions: the windowed sum becomes a 1-D AveragePool over
each tower's channels (rows of `size` channels, zero-padded, divided by `size`), and the
Transposes at its ends cancel against onnxruntime's own around the NHWC QLinearConvs
(profile in benchmarks/RESULTS.md, "int8 inference").

`fold_input_normalization` folds the in-graph mean subtraction (and scale) into the
first convolution when that convolution pads nothing (AlexNet's conv1): conv(s(x - m))
= conv'(x) with W' = W s and b' = b - sum W' m, exactly, since no padded zero meets the
subtracted mean.
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


def _copy(model):
    """A deep copy of an ONNX ModelProto."""
    return onnx.ModelProto.FromString(model.SerializeToString())


class _Graph:
    """Producer/consumer maps and initializers of an ONNX graph, for pattern matching."""

    def __init__(self, graph):
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        for value in graph.output:
            self.consumers.setdefault(value.name, []).append(None)
        self.initializers = {t.name: t for t in graph.initializer}

    def only_consumer(self, name):
        """The single node reading tensor `name`, or None when there are several or none."""
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 else None

    def constant(self, name):
        """The NumPy value of initializer `name`, or None when it is not one."""
        tensor = self.initializers.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)


def _lrn_nodes(prefix, x, y, channels, attrs, groups=1):
    """Nodes and initializers computing ONNX LRN (`attrs`) of NCHW `x` into `y`, per group."""
    size = int(attrs["size"])
    alpha = float(attrs.get("alpha", 1e-4))
    beta = float(attrs.get("beta", 0.75))
    bias = float(attrs.get("bias", 1.0))
    width = channels // groups  # channels per group: the band is the same in every group
    offset = np.arange(width)[None, :] - np.arange(width)[:, None]  # input i - output o
    in_window = (offset >= -((size - 1) // 2)) & (offset <= size // 2)
    band = np.tile(in_window.astype(np.float32) * np.float32(alpha / size), (groups, 1))
    initializers = [
        numpy_helper.from_array(band[:, :, None, None], f"{prefix}/band"),
        numpy_helper.from_array(np.full(channels, bias, np.float32), f"{prefix}/bias"),
    ]
    nodes = [
        helper.make_node("Mul", [x, x], [f"{prefix}/square"]),
        helper.make_node(
            "Conv",
            [f"{prefix}/square", f"{prefix}/band", f"{prefix}/bias"],
            [f"{prefix}/d"],
            kernel_shape=[1, 1],
            group=groups,
        ),
    ]
    normalize, inits = _normalize(prefix, x, f"{prefix}/d", y, beta)
    return nodes + normalize, initializers + inits


def _normalize(prefix, x, d, y, beta):
    """Nodes computing y = x * d^-beta (two square roots when beta = 0.75), and initializers."""
    if beta == 0.75:
        return [
            helper.make_node("Sqrt", [d], [f"{prefix}/sqrt_d"]),
            helper.make_node("Mul", [d, f"{prefix}/sqrt_d"], [f"{prefix}/d15"]),
            helper.make_node("Sqrt", [f"{prefix}/d15"], [f"{prefix}/d075"]),
            helper.make_node("Div", [x, f"{prefix}/d075"], [y]),
        ], []
    neg_beta = numpy_helper.from_array(np.array(-beta, np.float32), f"{prefix}/neg_beta")
    return [
        helper.make_node("Pow", [d, f"{prefix}/neg_beta"], [f"{prefix}/f"]),
        helper.make_node("Mul", [x, f"{prefix}/f"], [y]),
    ], [neg_beta]


def _expanded_lrn_parameters(g, square):
    """The parameters of the expanded LRN (as `_lrn_nodes` wrote it) that squares in `square`.

    (prefix, x, y, channels per group, window, alpha / size, beta, bias), or None. The
    window is (channels before, channels after) each output's own, read off the band as
    it is: where a group has fewer channels than LRN's size, the edges clip every window
    and the band, not the size, says what is summed.
    """
    prefix = square.output[0].removesuffix("/square")
    conv = g.only_consumer(square.output[0])
    if conv is None or conv.op_type != "Conv" or square.input[0] != square.input[1]:
        return None
    band, bias = g.constant(conv.input[1]), g.constant(conv.input[2])
    last = [n for name in (f"{prefix}/d075", f"{prefix}/f") for n in g.consumers.get(name, [])]
    if band is None or bias is None or len(last) != 1 or last[0] is None:
        return None
    width = band.shape[1]
    first_group = band[:width, :, 0, 0]  # [output o, input i]; every group's is the same
    outputs, inputs = np.nonzero(first_group)
    values = first_group[outputs, inputs]
    if not len(values) or np.any(values != values[0]):
        return None
    window = (int(np.max(outputs - inputs)), int(np.max(inputs - outputs)))
    beta = 0.75 if last[0].op_type == "Div" else -float(g.constant(f"{prefix}/neg_beta"))
    x, y = square.input[0], last[0].output[0]
    return prefix, x, y, width, window, float(values[0]), beta, float(bias[0])


def _channels_last_lrn_nodes(prefix, x, y, width, window, per_channel, beta, bias):
    """Nodes and initializers of LRN on NCHW `x` computed in NHWC, per group of `width`.

    The window sum is an AveragePool over rows of `width` channels (zero-padded by
    `window`), so it is scaled back by the pool's size times `per_channel` (alpha / size).
    """
    p = prefix
    before, after = window
    kernel = before + after + 1
    initializers = [
        numpy_helper.from_array(np.array([-1, 1, width], np.int64), f"{p}/rows"),
        numpy_helper.from_array(np.array(per_channel * kernel, np.float32), f"{p}/alpha"),
        numpy_helper.from_array(np.array(bias, np.float32), f"{p}/bias"),
    ]
    nodes = [
        helper.make_node("Transpose", [x], [f"{p}/nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Shape", [f"{p}/nhwc"], [f"{p}/shape"]),
        helper.make_node("Mul", [f"{p}/nhwc", f"{p}/nhwc"], [f"{p}/square"]),
        helper.make_node("Reshape", [f"{p}/square", f"{p}/rows"], [f"{p}/square_rows"]),
        helper.make_node(
            "AveragePool",
            [f"{p}/square_rows"],
            [f"{p}/mean_rows"],
            kernel_shape=[kernel],
            pads=[before, after],
            count_include_pad=1,
        ),  # fmt: skip
        helper.make_node("Reshape", [f"{p}/mean_rows", f"{p}/shape"], [f"{p}/mean"]),
        helper.make_node("Mul", [f"{p}/mean", f"{p}/alpha"], [f"{p}/scaled"]),
        helper.make_node("Add", [f"{p}/scaled", f"{p}/bias"], [f"{p}/d"]),
    ]
    normalize, inits = _normalize(p, f"{p}/nhwc", f"{p}/d", f"{p}/y_nhwc", beta)
    nodes += [*normalize, helper.make_node("Transpose", [f"{p}/y_nhwc"], [y], perm=[0, 3, 1, 2])]
    return nodes, initializers + inits


def channels_last_lrn(model):
    """Return a copy of `model` with each expanded LRN (`expand_lrn`'s) computed in NHWC."""
    model = _copy(model)
    graph = model.graph
    g = _Graph(graph)
    nodes, initializers, replaced, prefixes = [], [], set(), []
    for node in graph.node:
        if node.op_type != "Mul" or not node.output[0].endswith("/expanded/square"):
            continue
        found = _expanded_lrn_parameters(g, node)
        if found is None:
            continue
        prefix = found[0]
        replaced.update(
            id(n) for n in graph.node if any(o.startswith(f"{prefix}/") for o in n.output)
        )
        replaced.add(id(g.producer[found[2]]))
        prefixes.append(f"{prefix}/")
        new, inits = _channels_last_lrn_nodes(*found)
        nodes += new
        initializers += inits
    kept = [t for t in graph.initializer if not t.name.startswith(tuple(prefixes))]
    del graph.initializer[:]
    graph.initializer.extend(kept + initializers)
    nodes += [n for n in graph.node if id(n) not in replaced]
    del graph.node[:]
    graph.node.extend(_topological(nodes, graph))
    return model


def _is_transpose(node, perm):
    """Whether `node` is a Transpose with permutation `perm`."""
    return (
        node is not None and node.op_type == "Transpose" and _attributes(node).get("perm") == perm
    )


def _tower_lrn(g, concat):
    """Match Transpose -> Split(channels) -> Transpose + LRN per tower -> Concat(axis 1).

    Returns (NCHW input, LRN attributes, towers, nodes to remove), or None.
    """
    if concat.op_type != "Concat" or _attributes(concat).get("axis") not in (1, -3):
        return None
    lrns = [g.producer.get(name) for name in concat.input]
    if len(lrns) < 2 or any(n is None or n.op_type != "LRN" for n in lrns):
        return None
    attrs = _attributes(lrns[0])
    if any(_attributes(n) != attrs for n in lrns) or any(
        g.only_consumer(n.output[0]) is not concat for n in lrns
    ):
        return None
    to_nchw = [g.producer.get(n.input[0]) for n in lrns]
    if not all(_is_transpose(t, [0, 3, 1, 2]) and g.only_consumer(t.output[0]) for t in to_nchw):
        return None
    split = g.producer.get(to_nchw[0].input[0])
    if (
        split is None
        or split.op_type != "Split"
        or _attributes(split).get("axis") not in (3, -1)
        or list(split.output) != [t.input[0] for t in to_nchw]
        or any(g.only_consumer(name) is None for name in split.output)
    ):
        return None
    sizes = _attributes(split).get("split")
    if sizes is None and len(split.input) > 1:
        sizes = g.constant(split.input[1])
        if sizes is None:
            return None
    if sizes is not None and len(set(np.asarray(sizes).tolist())) != 1:
        return None  # unequal towers
    to_nhwc = g.producer.get(split.input[0])
    if not _is_transpose(to_nhwc, [0, 2, 3, 1]):
        return None
    remove = [concat, *lrns, *to_nchw, split]
    if g.only_consumer(to_nhwc.output[0]) is split:
        remove.append(to_nhwc)
    return to_nhwc.input[0], attrs, len(lrns), remove


def expand_lrn(model):
    """Return a copy of `model` with every LRN (per tower too) as a Conv and elementwise ops."""
    model = _copy(model)
    graph = model.graph
    channels = _channels(model)
    g = _Graph(graph)
    replaced, new_nodes, initializers = set(), {}, []
    for node in graph.node:
        match = _tower_lrn(g, node)
        if match is None:
            continue
        x, attrs, towers, remove = match
        if x not in channels or channels[x] % towers:
            continue
        prefix = (node.name or node.output[0]) + "/expanded"
        nodes, inits = _lrn_nodes(prefix, x, node.output[0], channels[x], attrs, towers)
        replaced.update(id(n) for n in remove)
        new_nodes[id(node)] = nodes
        initializers += inits
    nodes = []
    for node in graph.node:
        if id(node) in new_nodes:
            nodes += new_nodes[id(node)]
        elif id(node) in replaced:
            continue
        elif node.op_type == "LRN":
            x, y = node.input[0], node.output[0]
            if x not in channels:
                raise ValueError(f"LRN node {node.name!r}: channel count of {x!r} is unknown")
            prefix = (node.name or y) + "/expanded"
            expanded, inits = _lrn_nodes(prefix, x, y, channels[x], _attributes(node))
            nodes += expanded
            initializers += inits
        else:
            nodes.append(node)
    graph.initializer.extend(initializers)
    del graph.node[:]
    graph.node.extend(_topological(nodes, graph))
    return model


def _topological(nodes, graph):
    """`nodes` in an order where every node follows the producers of its inputs."""
    available = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    available.add("")
    pending, ordered = list(nodes), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            names = sorted({i for n in pending for i in n.input} - available)[:3]
            raise ValueError(f"the rewritten graph has unproduced inputs: {names}")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    return ordered


def _normalized_input_conv(g, value):
    """Match graph input -> Sub(mean) [-> Mul(scale)] -> Transpose(NHWC to NCHW) -> unpadded Conv.

    Returns (nodes to remove, transpose, conv, kernel, per-channel mean, per-channel scale)
    with mean and scale as float64 vectors, or None when `value` starts no such pattern.
    """
    sub = g.only_consumer(value.name)
    if sub is None or sub.op_type != "Sub" or sub.input[0] != value.name:
        return None
    mean = g.constant(sub.input[1])
    node, scale = g.only_consumer(sub.output[0]), None
    if node is not None and node.op_type == "Mul":
        scale = g.constant(node.input[1])
        if scale is None:
            return None
        remove = [sub, node]
        node = g.only_consumer(node.output[0])
    else:
        remove = [sub]
    transpose = node
    conv = g.only_consumer(transpose.output[0]) if _is_transpose(transpose, [0, 3, 1, 2]) else None
    if mean is None or conv is None or conv.op_type != "Conv":
        return None
    attrs = _attributes(conv)
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID") or any(attrs.get("pads", [])):
        return None
    kernel = g.constant(conv.input[1])
    if kernel is None or (len(conv.input) > 2 and g.constant(conv.input[2]) is None):
        return None
    cin = kernel.shape[1] * attrs.get("group", 1)
    try:
        mean = np.broadcast_to(mean, (cin,)).astype(np.float64)
        scale = np.ones(cin) if scale is None else np.broadcast_to(scale, (cin,)).astype(np.float64)
    except ValueError:
        return None
    if attrs.get("group", 1) != 1:
        return None
    return remove, transpose, conv, kernel, mean, scale


def fold_input_normalization(model):
    """Return a copy of `model` with input Sub(mean) [-> Mul(scale)] folded into an unpadded conv.

    Matches graph input -> Sub(constant per-channel mean, NHWC) -> optional Mul(constant
    per-channel scale) -> Transpose(NHWC to NCHW) -> Conv with no padding; anything else
    (e.g. VGG's padded conv1_1, where padded zeros would meet the mean) is left as it is.
    """
    model = _copy(model)
    graph = model.graph
    g = _Graph(graph)
    for value in graph.input:
        match = _normalized_input_conv(g, value)
        if match is None:
            continue
        remove, transpose, conv, kernel, mean, scale = match
        folded = kernel.astype(np.float64) * scale[None, :, None, None]
        bias = g.constant(conv.input[2]).astype(np.float64) if len(conv.input) > 2 else 0.0
        bias = bias - np.einsum("oihw,i->o", folded, mean)
        name = conv.name or conv.output[0]
        graph.initializer.extend([
            numpy_helper.from_array(folded.astype(np.float32), f"{name}/folded_W"),
            numpy_helper.from_array(bias.astype(np.float32), f"{name}/folded_B"),
        ])  # fmt: skip
        conv.input[:] = [conv.input[0], f"{name}/folded_W", f"{name}/folded_B"]
        transpose.input[0] = value.name
        kept = [n for n in graph.node if all(n is not r for r in remove)]
        del graph.node[:]
        graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def input_conv_kernel(model, scale=None):
    """(first Conv's kernel as before the fold, OIHW float64; largest Conv group count).

    The group count is AlexNet's towers. Undoes `fold_input_normalization`: when no Sub or
    Mul precedes that Conv, the kernel holds kernel * `scale` (per input channel for a
    per-channel scale) and is divided back. ValueError for a model without a float first
    Conv on 3 channels (an int8 export).
    """
    nodes = list(model.graph.node)
    convs = [i for i, node in enumerate(nodes) if node.op_type == "Conv"]
    weights = {t.name: t for t in model.graph.initializer}
    if not convs or nodes[convs[0]].input[1] not in weights:
        raise ValueError(
            "no Conv with a stored float kernel (an int8 export?): pass the fp32 .onnx, the "
            ".keras file or the run directory"
        )
    kernel = numpy_helper.to_array(weights[nodes[convs[0]].input[1]]).astype(np.float64)
    if kernel.shape[1] != 3:
        raise ValueError(f"its first Conv takes {kernel.shape[1]} channels, not 3 (RGB)")
    folded = not any(node.op_type in ("Sub", "Mul") for node in nodes[: convs[0]])
    if scale is not None and folded:
        per_channel = np.asarray(scale, np.float64).reshape(1, -1, 1, 1)
        if np.all(per_channel != 0):
            kernel = kernel / per_channel
    groups = [_attributes(nodes[i]).get("group", 1) for i in convs]
    return kernel, max(groups, default=1)


POOL_ATTRIBUTES = ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides")
# Ops whose first output is a quantized (8-bit) tensor in onnxruntime's QOperator format.
QUANTIZED_OUTPUTS = ("QuantizeLinear", "QLinearConv", "QLinearMatMul", "QLinearAdd",
                     "QLinearConcat", "QLinearMul", "QLinearAveragePool")  # fmt: skip


def nhwc_int8_maxpool(model):
    """Return a copy of a QOperator int8 `model` with its max pools on 8-bit data, NHWC.

    onnxruntime's NCHW MaxPool on uint8 is slow and its NHWC kernel (com.microsoft
    NhwcMaxPool) fast (benchmarks/RESULTS.md, "Where the time goes"). Each MaxPool on 8-bit
    data becomes Transpose -> NhwcMaxPool -> Transpose (onnxruntime cancels the transposes
    against its NHWC QLinearConv); a float MaxPool whose only reader is a QuantizeLinear is
    quantized first instead (max commutes with the monotonic quantisation, so the result is
    identical).
    """
    model = _copy(model)
    graph = model.graph
    g = _Graph(graph)
    dropped, nodes = set(), []
    for node in graph.node:
        if id(node) in dropped:
            continue
        if node.op_type != "MaxPool" or len(node.output) != 1:
            nodes.append(node)
            continue
        producer = g.producer.get(node.input[0])
        reader = g.only_consumer(node.output[0])
        if producer is not None and producer.op_type in QUANTIZED_OUTPUTS:
            x, y = node.input[0], node.output[0]
        elif reader is not None and reader.op_type == "QuantizeLinear":
            dropped.add(id(reader))
            x, y = f"{node.output[0]}/quantized_input", reader.output[0]
            nodes.append(
                helper.make_node("QuantizeLinear", [node.input[0], *reader.input[1:]], [x])
            )
        else:
            nodes.append(node)
            continue
        attrs = {k: v for k, v in _attributes(node).items() if k in POOL_ATTRIBUTES}
        nodes += [
            helper.make_node("Transpose", [x], [f"{y}/nhwc_in"], perm=[0, 2, 3, 1]),
            helper.make_node(
                "NhwcMaxPool", [f"{y}/nhwc_in"], [f"{y}/nhwc_out"], domain="com.microsoft", **attrs
            ),  # fmt: skip
            helper.make_node("Transpose", [f"{y}/nhwc_out"], [y], perm=[0, 3, 1, 2]),
        ]
    del graph.node[:]
    graph.node.extend(_topological(nodes, graph))
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model
