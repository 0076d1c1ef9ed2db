"""keras_alexnet.onnx.session: the one maker of onnxruntime sessions, and its providers."""

import onnxruntime as ort
import pytest
from helpers import reshape_model

from keras_alexnet import runtime
from keras_alexnet.onnx.session import (
    ProviderError,
    choose_providers,
    onnx_session,
    provider_choices,
)
from keras_alexnet.serving.model import OnnxModel

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@pytest.fixture
def offered(monkeypatch):
    """Pretend onnxruntime offers the providers the test sets."""

    def offer(*providers):
        monkeypatch.setattr(ort, "get_available_providers", lambda: list(providers))

    return offer


@pytest.mark.parametrize(
    "available,want",
    [
        ([CPU], [CPU]),
        (["AzureExecutionProvider", CPU], [CPU]),  # remote: never picked by itself
        ([TRT, CUDA, CPU], [CUDA, CPU]),  # TensorRT builds an engine per shape: named only
        ([CPU, CUDA], [CUDA, CPU]),  # preference, not onnxruntime's order
        (["ROCMExecutionProvider", CPU], ["ROCMExecutionProvider", CPU]),
        (["CoreMLExecutionProvider", CPU], [CPU]),
    ],
)
def test_auto_prefers_a_gpu_and_keeps_cpu_last(offered, available, want):
    offered(*available)
    assert choose_providers("auto") == want
    assert choose_providers(None) == want


def test_a_named_provider_is_used_in_full_or_short_form(offered):
    offered(TRT, CUDA, CPU)
    assert choose_providers("TensorrtExecutionProvider") == [TRT, CPU]
    assert choose_providers("cuda") == [CUDA, CPU]
    assert choose_providers("CPU") == [CPU]
    assert provider_choices() == ["auto", TRT, CUDA, CPU]


def test_an_unavailable_provider_is_a_one_line_error(offered, tmp_path):
    offered(CPU)
    message = "onnxruntime here has no execution provider 'cuda'; choose from auto, CPU"
    with pytest.raises(ProviderError, match=message) as info:
        choose_providers("cuda")
    assert "\n" not in str(info.value) and "onnxruntime-gpu" in str(info.value)
    # Refused before the model is read, by every loader.
    reshape_model(tmp_path / "m.onnx")
    with pytest.raises(ProviderError):
        onnx_session(tmp_path / "m.onnx", provider="cuda")
    with pytest.raises(ProviderError):
        OnnxModel(tmp_path / "m.onnx", provider="cuda")


def test_every_loader_makes_its_session_with_the_chosen_providers(offered, monkeypatch, tmp_path):
    offered(CUDA, CPU)
    real, made = ort.InferenceSession, []

    def record(path, options, providers):
        try:  # unset is onnxruntime's default: spinning
            spin = options.get_session_config_entry("session.intra_op.allow_spinning")
        except RuntimeError:
            spin = "1"
        made.append((providers, options.intra_op_num_threads, spin))
        return real(path, options, providers=[CPU])  # this machine has no CUDA

    monkeypatch.setattr(ort, "InferenceSession", record)
    reshape_model(tmp_path / "m.onnx")
    OnnxModel(tmp_path / "m.onnx", threads=2)
    onnx_session(tmp_path / "m.onnx", provider="cpu")
    with pytest.raises(runtime.ModelPathError, match="no keras_alexnet metadata"):
        runtime.load(tmp_path / "m.onnx", threads=3)
    # The server's threads sleep between operators (they share the cores with decoding).
    assert made == [([CUDA, CPU], 2, "0"), ([CPU], 0, "1"), ([CUDA, CPU], 3, "1")]


def test_unreadable_onnx_file_is_a_model_path_error(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(runtime.ModelPathError, match="bad.onnx is not a readable ONNX model"):
        onnx_session(tmp_path / "bad.onnx")
