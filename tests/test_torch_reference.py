"""Our Keras AlexNet against an independent PyTorch implementation (skipped without torch)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch_reference = pytest.importorskip("torch_reference")

from keras_alexnet.models import build_model  # noqa: E402


def test_keras_alexnet_equals_pytorch_grouped_alexnet_with_the_same_weights():
    keras_model = build_model(
        "alexnet", input_shape=(99, 99, 3), width=1 / 8, classes=10,
        classifier_activation=None, seed=0, init="he",
    )  # fmt: skip
    torch_model = torch_reference.AlexNet(classes=10, width=1 / 8, input_size=99).eval()
    torch_reference.load_keras_weights(torch_model, keras_model)
    x = np.random.default_rng(0).uniform(-100, 100, (3, 99, 99, 3)).astype("float32")
    expected = keras_model.predict_on_batch(x)
    with torch.inference_mode():
        got = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
