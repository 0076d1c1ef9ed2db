import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from keras_alexnet.onnx_graph import expand_lrn, fold_input_normalization


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
