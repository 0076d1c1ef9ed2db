import numpy as np
import onnx
import onnxruntime as ort
import pytest

from keras_alexnet.models import build_model


def test_alexnet_exports_to_onnx_with_grouped_convs_and_lrn_per_tower(tmp_path):
    # Keras's own ONNX export of the paper's layers at 227x227; an eighth of the width
    # (12-32-48-48-32 filters, 512-unit FCs) keeps every layer's kind, grouping and
    # shape rule, at a tenth of the export's minute at full size.
    model = build_model("alexnet", classifier_activation=None, seed=0, width=0.125)
    x = np.random.default_rng(0).uniform(-128, 128, (4, 227, 227, 3)).astype("float32")
    expected = model.predict_on_batch(x)  # also marks the model as called for export
    path = tmp_path / "alexnet.onnx"
    model.export(str(path), format="onnx", verbose=False)

    graph = onnx.load(path).graph
    attrs = [
        {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for node in graph.node
        if node.op_type == "Conv"
    ]
    assert [a.get("group", 1) for a in attrs] == [1, 2, 1, 2, 2]  # conv1 ... conv5
    lrn = [
        {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for node in graph.node
        if node.op_type == "LRN"
    ]
    # Two LRNs (one per tower) after conv1 and conv2; ONNX's alpha is ours times size.
    assert len(lrn) == 4
    assert all(a["size"] == 5 and a["alpha"] == pytest.approx(5e-4) for a in lrn)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
