import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from keras_alexnet.onnx.graph import channels_last_lrn, expand_lrn, fold_input_normalization


def lrn_model(channels, size, alpha, beta, bias):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, channels, 5, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, channels, 5, 4])
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=alpha, beta=beta, bias=bias)
    graph = helper.make_graph([node], "lrn", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model, x, name="x"):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {name: x})[0]


def onnx_lrn_by_hand(x, size, alpha, beta, bias):
    """ONNX's LRN definition (alpha divided by size), written channel by channel in NumPy."""
    c = x.shape[1]
    y = np.empty_like(x, dtype=np.float64)
    for i in range(c):
        lo, hi = max(0, i - (size - 1) // 2), min(c - 1, i + size // 2)
        s = np.sum(x[:, lo : hi + 1].astype(np.float64) ** 2, axis=1)
        y[:, i] = x[:, i] / (bias + alpha / size * s) ** beta
    return y


@pytest.mark.parametrize(("beta", "bias"), [(0.75, 2.0), (0.5, 1.0)])
def test_expanded_lrn_equals_onnxruntime_lrn_and_the_formula(beta, bias):
    model = lrn_model(7, 5, 5e-4 * 40, beta, bias)  # large alpha: the sum matters
    expanded = expand_lrn(model)
    onnx.checker.check_model(expanded, full_check=True)
    assert "LRN" not in {n.op_type for n in expanded.graph.node}
    x = np.random.default_rng(0).uniform(-30, 30, (2, 7, 5, 4)).astype("float32")
    expected = onnx_lrn_by_hand(x, 5, 5e-4 * 40, beta, bias)
    np.testing.assert_allclose(run(model, x), expected, rtol=1e-5)
    np.testing.assert_allclose(run(expanded, x), expected, rtol=1e-5)


def tower_lrn_model(channels, towers, size, alpha):
    """tf2onnx's per-tower LRN: NCHW -> NHWC, Split channels, per tower NCHW + LRN, Concat."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, channels, 5, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, channels, 5, 4])
    parts = [f"part{i}" for i in range(towers)]
    nodes = [
        helper.make_node("Transpose", ["x"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Split", ["nhwc"], parts, axis=-1, num_outputs=towers),
    ]
    for part in parts:
        nodes += [
            helper.make_node("Transpose", [part], [f"{part}_nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("LRN", [f"{part}_nchw"], [f"{part}_lrn"], size=size, alpha=alpha),
        ]
    nodes.append(helper.make_node("Concat", [f"{p}_lrn" for p in parts], ["y"], axis=1))
    graph = helper.make_graph(nodes, "towers", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_per_tower_lrn_becomes_one_grouped_band_conv_with_the_same_result():
    model = tower_lrn_model(12, 2, 5, 5e-4 * 40)
    expanded = expand_lrn(model)
    onnx.checker.check_model(expanded, full_check=True)
    ops = [n.op_type for n in expanded.graph.node]
    assert "LRN" not in ops and "Split" not in ops and "Transpose" not in ops
    (conv,) = [n for n in expanded.graph.node if n.op_type == "Conv"]
    assert {a.name: a.i for a in conv.attribute}["group"] == 2  # one group per tower
    x = np.random.default_rng(1).uniform(-30, 30, (2, 12, 5, 4)).astype("float32")
    # Each tower normalised on its own: channel 5 never sees channel 6, unlike one LRN.
    expected = np.concatenate(
        [onnx_lrn_by_hand(half, 5, 5e-4 * 40, 0.75, 1.0) for half in np.split(x, 2, axis=1)],
        axis=1,
    )
    assert not np.allclose(expected, onnx_lrn_by_hand(x, 5, 5e-4 * 40, 0.75, 1.0), rtol=1e-5)
    np.testing.assert_allclose(run(model, x), expected, rtol=1e-5)
    np.testing.assert_allclose(run(expanded, x), expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("towers", "channels", "size", "beta", "bias"),
    [(2, 12, 5, 0.75, 1.0), (2, 6, 5, 0.75, 1.0), (1, 7, 4, 0.5, 2.0)],
    ids=["two-towers", "towers-narrower-than-the-window", "even-window"],
)
def test_channels_last_lrn_keeps_what_the_expanded_lrn_computes(towers, channels, size, beta, bias):
    # The int8 path's LRN: NHWC, the window sum a 1-D AveragePool over each tower's channels
    # (tf2onnx's tower pattern takes LRN's defaults, beta 0.75 and bias 1). With 3 channels
    # a tower, fewer than the window's 5, the edges clip every window (a narrow --width).
    if towers == 2:
        model = tower_lrn_model(channels, 2, size, 5e-4 * 40)
    else:
        model = lrn_model(channels, size, 5e-4 * 40, beta, bias)
    rewritten = channels_last_lrn(expand_lrn(model))
    onnx.checker.check_model(rewritten, full_check=True)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "AveragePool" in ops and "Conv" not in ops  # no band convolution left
    assert ops[0] == ops[-1] == "Transpose"  # NCHW in and out, NHWC between
    names = [t.name for t in rewritten.graph.initializer]
    assert len(names) == len(set(names)) and not any(n.endswith("/band") for n in names)
    x = np.random.default_rng(3).uniform(-30, 30, (2, channels, 5, 4)).astype("float32")
    expected = np.concatenate(
        [onnx_lrn_by_hand(t, size, 5e-4 * 40, beta, bias) for t in np.split(x, towers, axis=1)],
        axis=1,
    )
    np.testing.assert_allclose(run(rewritten, x), expected, rtol=1e-5)


def normalized_conv_model(pads):
    """images NHWC -> Sub(mean) -> Mul(scale) -> Transpose to NCHW -> Conv(pads) -> y."""
    rng = np.random.default_rng(2)
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, 9, 9, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, None, None])
    inits = [
        numpy_helper.from_array(np.array([120.0, 110.0, 100.0], np.float32), "mean"),
        numpy_helper.from_array(np.array([0.5, 0.25, 2.0], np.float32), "scale"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(0, 1, 4).astype(np.float32), "B"),
    ]
    nodes = [
        helper.make_node("Sub", ["images", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "scale"], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "W", "B"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[pads] * 4),
    ]  # fmt: skip
    graph = helper.make_graph(nodes, "normalized", [images], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def conv_by_hand(x_nchw, w, b, stride):
    """A valid strided convolution in NumPy (float64)."""
    n, _, h, wd = x_nchw.shape
    k = w.shape[-1]
    out = np.empty((n, w.shape[0], (h - k) // stride + 1, (wd - k) // stride + 1))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            patch = x_nchw[:, :, i * stride : i * stride + k, j * stride : j * stride + k]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w) + b
    return out


def test_input_normalization_folds_into_an_unpadded_first_conv():
    model = normalized_conv_model(pads=0)
    folded = fold_input_normalization(model)
    onnx.checker.check_model(folded, full_check=True)
    assert [n.op_type for n in folded.graph.node] == ["Transpose", "Conv"]
    assert {"mean", "scale"}.isdisjoint(i.name for i in folded.graph.initializer)
    x = np.random.default_rng(3).uniform(0, 255, (2, 9, 9, 3)).astype("float32")
    w, b = (numpy_helper.to_array(i) for i in model.graph.initializer[2:])
    centred = (x.astype(np.float64) - [120, 110, 100]) * [0.5, 0.25, 2.0]
    expected = conv_by_hand(centred.transpose(0, 3, 1, 2), w, b, 2)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(run(model, x, "images"), expected, atol=1e-5 * scale)
    np.testing.assert_allclose(run(folded, x, "images"), expected, atol=1e-5 * scale)


def test_input_normalization_is_kept_before_a_padded_conv():
    # Padded zeros would meet the mean inside the conv: folding would change the borders.
    model = normalized_conv_model(pads=1)
    folded = fold_input_normalization(model)
    assert [n.op_type for n in folded.graph.node] == ["Sub", "Mul", "Transpose", "Conv"]


def pooled_int8_model():
    """x -> MaxPool -> QuantizeLinear -> QLinearConv 1x1 -> MaxPool (uint8) -> Dequantize."""
    rng = np.random.default_rng(4)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 9, 9])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8, 1, 1])
    u8, i8 = np.uint8, np.int8
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(128, u8), "z"),
        numpy_helper.from_array(rng.integers(-60, 60, (8, 8, 1, 1)).astype(i8), "w"),
        numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
        numpy_helper.from_array(np.array(0, i8), "wz"),
        numpy_helper.from_array(np.array(0.2, np.float32), "ys"),
        numpy_helper.from_array(np.array(100, u8), "yz"),
    ]
    pool = {"kernel_shape": [3, 3], "strides": [2, 2]}
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p1"], **pool),
        helper.make_node("QuantizeLinear", ["p1", "s", "z"], ["q1"]),
        helper.make_node("QLinearConv", ["q1", "s", "z", "w", "ws", "wz", "ys", "yz"], ["c"]),
        helper.make_node("MaxPool", ["c"], ["p2"], **pool),
        helper.make_node("DequantizeLinear", ["p2", "ys", "yz"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "int8", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_int8_max_pools_run_nhwc_on_8_bit_data_with_identical_results():
    from keras_alexnet.onnx.graph import nhwc_int8_maxpool

    model = pooled_int8_model()
    rewritten = nhwc_int8_maxpool(model)
    onnx.checker.check_model(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "MaxPool" not in ops and ops.count("NhwcMaxPool") == 2
    # The float pool is now fed by the quantisation it used to feed.
    first = ops.index("NhwcMaxPool")
    assert ops.index("QuantizeLinear") < first
    x = np.random.default_rng(5).normal(0, 3, (2, 8, 9, 9)).astype("float32")
    # Independent: quantise, pool, convolve and pool again in NumPy.
    q = np.clip(np.round(x / 0.05) + 128, 0, 255)

    def pool(a):
        return np.stack([
            np.stack([a[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(2, 3))
                      for j in range((a.shape[3] - 3) // 2 + 1)], axis=-1)
            for i in range((a.shape[2] - 3) // 2 + 1)
        ], axis=-2)  # fmt: skip

    w = numpy_helper.to_array(model.graph.initializer[2])[:, :, 0, 0].astype(np.float64)
    acc = np.einsum("nchw,oc->nohw", pool(q) - 128, w) * 0.05 * 0.01
    conv = np.clip(np.round(acc / 0.2) + 100, 0, 255)
    expected = (pool(conv) - 100) * 0.2
    np.testing.assert_array_equal(run(model, x), run(rewritten, x))
    np.testing.assert_allclose(run(rewritten, x), expected, atol=0.2 + 1e-6)
