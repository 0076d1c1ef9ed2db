import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from keras_alexnet.onnx_graph import expand_lrn


def lrn_model(channels, size, alpha, beta, bias):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, channels, 5, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, channels, 5, 4])
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=alpha, beta=beta, bias=bias)
    graph = helper.make_graph([node], "lrn", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


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
