"""torchvision's AlexNet and batch-norm VGGs: our builders against PyTorch forwards of theirs.

Each reference is torchvision's module list written out in torch.nn (torchvision itself is
not installed), with random weights and, for batch norm, random running statistics; its
state dict is saved as torchvision saves its files (`torch.save`, `.safetensors`), imported,
and our model on RGB 0-255 pixels is compared with the reference on torchvision's
preprocessing of the same pixels.
"""

import collections

import keras
import numpy as np
import onnx
import pytest
from helpers import TOLERANCE, crops_of, infer_body, photo_like, post_json, running_server

from keras_alexnet import build_model, registry, runtime
from keras_alexnet.artifacts import INPUT_NAME
from keras_alexnet.export import export_onnx, export_savedmodel, relative_error
from keras_alexnet.metadata import Metadata
from keras_alexnet.models import alexnet_tv as alexnet_tv_module
from keras_alexnet.models.vgg import CONFIGS
from keras_alexnet.onnx.session import onnx_session
from keras_alexnet.weights import PRESETS, WeightsError, build, read

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
from torch_reference import TorchVGG, torch_vgg, torchvision_forward  # noqa: E402

MEAN, SCALE = (120.0, 115.0, 100.0), 1 / 58.0
# torchvision's published num_params (its weight enums), trainable parameters
TORCHVISION_PARAMETERS = {"alexnet_tv": 61_100_840, "vgg11_bn": 132_868_840,
                          "vgg19_bn": 143_678_248}  # fmt: skip


class TorchAlexNet(torch.nn.Module):
    """torchvision.models.alexnet written out (torchvision/models/alexnet.py)."""

    def __init__(self, width=1.0, classes=1000):
        super().__init__()
        c = [int(n * width) for n in (64, 192, 384, 256, 256)]
        fc = int(4096 * width)
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(3, c[0], kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c[0], c[1], kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c[1], c[2], kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[3], c[4], kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(c[4] * 6 * 6, fc), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Linear(fc, classes),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def torch_vgg_bn(cfg, width=1.0, classes=1000):
    """torchvision's vgg*_bn written out (models/vgg.py make_layers(cfg, batch_norm=True))."""
    return TorchVGG(cfg, width, int(4096 * width), classes, batch_norm=True)


def randomised(model, seed):
    """`model` in eval mode with random He weights, biases and batch-norm statistics."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
                module.weight.normal_(0, (2 / module.weight[0].numel()) ** 0.5)
                module.bias.normal_(0, 0.1)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(1000)
    return model.eval()


def save(model, path):
    """The state dict as torchvision publishes it: torch.save, or safetensors."""
    if path.suffix == ".pth":
        torch.save(model.state_dict(), path)
    else:
        safetensors_torch.save_file(model.state_dict(), path)
    return path


def imported_agrees(reference, path, name, size=224, seed=1):
    """Import `path` into `name` at `size`; our softmax against the reference's on crops."""
    spec = registry.get_spec(name)
    weights, preset = read(path, spec)
    preset = preset.replace(input_size=size, resize=size + 32)
    ours = build(spec, weights, preset)
    crops = crops_of(photo_like(3, size + 40, size + 70, seed=seed), preset)
    expected = torchvision_forward(reference, crops)
    got = ours.predict_on_batch(crops)
    assert expected.max() > 0.05  # the reference is not flat: top-1 means something
    assert relative_error(got, expected) < TOLERANCE
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    return ours


@pytest.mark.parametrize(("suffix", "size"), [(".pth", 224), (".safetensors", 256)])
def test_torchvision_alexnet_imports_into_alexnet_tv_and_equals_its_forward(tmp_path, suffix, size):
    reference = randomised(TorchAlexNet(width=1 / 8), seed=3)
    path = save(reference, tmp_path / f"alexnet{suffix}")
    ours = imported_agrees(reference, path, "alexnet_tv", size=size)
    assert ours.get_layer("avgpool").output.shape[1:3] == (6, 6)
    # at 256 pool5 is 7x7: the adaptive bins overlap, as PyTorch's do
    assert ours.get_layer("pool5").output.shape[1] == (6 if size == 224 else 7)


BN_CASES = [(".pth", "vgg11_bn", "A"), (".safetensors", "vgg13_bn", "B")]


@pytest.mark.parametrize(("suffix", "name", "config"), BN_CASES)
def test_torchvision_batch_norm_vgg_equals_its_forward(tmp_path, suffix, name, config):
    reference = randomised(torch_vgg_bn(CONFIGS[config], width=1 / 8), seed=4)
    path = save(reference, tmp_path / f"{name}{suffix}")
    weights, preset = read(path, registry.get_spec(name))
    assert preset == PRESETS["torchvision"].replace(model_args={"width": 1 / 8})
    moving = weights["block1_bn1"][2]
    np.testing.assert_array_equal(moving, reference.features[1].running_mean.numpy())
    imported_agrees(reference, path, name)


def test_a_file_imported_into_the_other_variant_names_the_one_that_takes_it(tmp_path):
    bn = save(randomised(torch_vgg_bn(CONFIGS["A"], width=1 / 16), 0), tmp_path / "a_bn.pth")
    plain = save(torch_vgg("vgg11", 1 / 16, seed=0), tmp_path / "a.safetensors")
    tv = save(randomised(TorchAlexNet(width=1 / 16), 0), tmp_path / "alexnet.pth")
    cases = [
        (bn, "vgg11", r"holds torchvision's batch-norm VGG: import it into vgg11_bn, not vgg_a"),
        (plain, "vgg11_bn", r"holds torchvision's VGG without batch norm: import it into vgg11,"),
        (tv, "vgg16_bn", r"holds torchvision's AlexNet .*: import it into alexnet_tv"),
        (bn, "alexnet_tv", r"batch-norm VGG: import it into vgg11_bn, not alexnet_tv"),
        (tv, "alexnet", r"one-weird-trick net \(alexnet_tv\), not the paper's, which import "
                        r"into .*alexnet_tv"),
    ]  # fmt: skip
    for path, name, message in cases:
        with pytest.raises(WeightsError, match=message):
            read(path, registry.get_spec(name))


def conv_parameters(layers, channels=3):
    """Weights and biases of a stack of (filters, kernel) convolutions on `channels` inputs."""
    total = 0
    for filters, kernel in layers:
        total += kernel * kernel * channels * filters + filters
        channels = filters
    return total, channels


def fc_parameters(inputs, units, classes):
    """Weights and biases of the three FC layers."""
    return inputs * units + units + units * units + units + units * classes + classes


def test_parameter_counts_follow_the_layer_tables_and_equal_pytorchs():
    convs = [(layer.filters, layer.kernel) for layer in alexnet_tv_module.CONV_LAYERS]
    body, channels = conv_parameters(convs)
    pooled = alexnet_tv_module.POOLED
    expected = body + fc_parameters(channels * pooled**2, alexnet_tv_module.FC_UNITS, 1000)
    assert expected == TORCHVISION_PARAMETERS["alexnet_tv"]
    assert build_model("alexnet_tv").count_params() == expected
    assert sum(p.numel() for p in TorchAlexNet().parameters()) == expected
    for name, config in (("vgg11_bn", "A"), ("vgg19_bn", "E")):
        cells = [c for c in CONFIGS[config] if c != "M"]
        body, channels = conv_parameters([(c, 3) for c in cells])
        norms = sum(cells)  # gamma and beta trained, moving mean and variance not
        trained = body + 2 * norms + fc_parameters(channels * 7 * 7, 4096, 1000)
        assert trained == TORCHVISION_PARAMETERS[name]
        torch_model = torch_vgg_bn(CONFIGS[config])
        assert sum(p.numel() for p in torch_model.parameters()) == trained
        model = build_model(name)
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trained
        assert model.count_params() == trained + 2 * norms


def run_directory(model, path, size):
    """`model` saved as a run directory of five classes at crop `size`."""
    path.mkdir()
    model.save(path / "best.keras")
    Metadata(model=model.name, class_names=tuple("abcde"), input_size=size, resize=size + 16,
             mean=MEAN, scale=SCALE).save(path / "metadata.json")  # fmt: skip
    return path


def with_running_statistics(model, seed=0):
    """`model` with batch-norm statistics and scales such as training leaves."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.get_weights()[0].shape
            gamma, beta = rng.uniform(0.8, 1.2, shape), rng.normal(0, 0.1, shape)
            mean, variance = rng.normal(0, 0.2, shape), rng.uniform(0.8, 1.5, shape)
            layer.set_weights([gamma, beta, mean, variance])
    return model


def test_a_batch_norm_vgg_exports_with_its_normalisation_folded_into_the_convs(tmp_path):
    size = 64
    model = build_model("vgg11_bn", width=1 / 8, input_shape=(size, size, 3), classes=5,
                        mean=MEAN, scale=SCALE, seed=0)  # fmt: skip
    run = run_directory(with_running_statistics(model), tmp_path / "run", size)
    result = export_onnx(run, tmp_path / "vgg11_bn.onnx", log=lambda *_: None)
    assert result["max_relative_error"] < 1e-5  # export verified it against Keras
    ops = collections.Counter(n.op_type for n in onnx.load(result["path"]).graph.node)
    assert ops["Conv"] == 8 and "BatchNormalization" not in ops
    assert ops["Mul"] + ops["Add"] <= 1 + 3  # the input scale, the three FC biases
    saved = export_savedmodel(run, tmp_path / "saved", log=lambda *_: None)
    crops = photo_like(3, size, size, seed=2)
    expected = runtime.load(run).predict(crops)
    for path in (result["path"], saved["path"]):
        assert relative_error(runtime.load(path).predict(crops), expected) < 1e-5
    with running_server(result["path"], log_dir=tmp_path) as url:  # served as exported
        answer = post_json(f"{url}/v2/models/vgg11_bn/infer", infer_body(crops.astype("float32")))
    assert answer.status_code == 200, answer.text
    served = np.reshape(answer.json()["outputs"][0]["data"], expected.shape)
    assert relative_error(served, expected) < 1e-5


def test_alexnet_tv_in_onnx_takes_any_size_as_torchvision_does(tmp_path):
    size, larger = 80, 112
    model = build_model("alexnet_tv", width=1 / 8, input_shape=(size, size, 3), classes=5,
                        mean=MEAN, scale=SCALE, seed=0)  # fmt: skip
    run = run_directory(model, tmp_path / "run", size)
    onnx_path = export_onnx(run, tmp_path / "alexnet_tv.onnx", log=lambda *_: None)["path"]
    at_larger = build_model("alexnet_tv", width=1 / 8, input_shape=(larger, larger, 3),
                            classes=5, mean=MEAN, scale=SCALE)  # fmt: skip
    at_larger.set_weights(model.get_weights())  # the adaptive pool: the same weights fit
    images = photo_like(2, larger, larger, seed=3)
    session = onnx_session(onnx_path)
    got = session.run(None, {INPUT_NAME: images})[0]
    assert relative_error(got, at_larger.predict_on_batch(images)) < 1e-5
