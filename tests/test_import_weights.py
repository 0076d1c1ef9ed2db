"""Published weights imported, checked against the sources' own code on the same pixels.

Nothing is downloaded: each test writes the source's file with random weights in the
source's own layout (Keras's legacy HDF5 writer; a torchvision-layout VGG in PyTorch),
imports it, and compares our model on RGB 0-255 pixels with the source's model on its own
preprocessing of the same pixels (keras.applications' preprocess_input; torchvision's
/255, mean, std).
"""

import importlib.util
import sys

import h5py
import keras
import numpy as np
import onnx
import pytest
from helpers import TOLERANCE, crops_of, photo_like
from keras.src.legacy.saving import legacy_h5_format

from keras_alexnet import build_model
from keras_alexnet.commands import import_weights as import_weights_command
from keras_alexnet.export import export_onnx, relative_error
from keras_alexnet.layers import InputNormalization
from keras_alexnet.metadata import Metadata
from keras_alexnet.models import get_spec
from keras_alexnet.runtime import load
from keras_alexnet.weights import (
    PRESETS,
    WeightsError,
    build,
    imagenet_class_names,
    import_weights,
    read,
)

torch = pytest.importorskip("torch")  # in the dev extra: CI runs these
safetensors_torch = pytest.importorskip("safetensors.torch")
from torch_reference import torch_vgg, torchvision_forward  # noqa: E402


def randomise(model, seed):
    """Random kernels and biases in every layer (biases too, so a lost bias shows)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            fan_in = np.prod(kernel.shape[:-1])
            layer.set_weights([
                rng.normal(0, np.sqrt(2 / fan_in), kernel.shape).astype(np.float32),
                rng.normal(0, 0.1, bias.shape).astype(np.float32),
            ])  # fmt: skip


def temper_head(model, inputs, spread=2.0):
    """Scale the last layer so its logits on `inputs` have std `spread`: a softmax that is
    neither flat nor one-hot, where a difference between two models shows in the scores."""
    head = model.layers[-1]
    features = keras.Model(model.input, head.input).predict_on_batch(inputs)
    kernel, bias = head.get_weights()
    factor = spread / np.std(features @ kernel + bias)
    head.set_weights([kernel * factor, bias * factor])


def save_legacy_h5(model, path):
    """Write `model`'s weights as Keras Applications' files are: the legacy HDF5 layout."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


# --- Keras Applications ---------------------------------------------------------------


@pytest.mark.slow
def test_keras_vgg16_h5_imports_into_a_run_directory_equal_to_keras_applications(tmp_path):
    reference = keras.applications.VGG16(weights=None)
    randomise(reference, seed=1)
    images = photo_like(2, 224, 224)
    preprocessed = keras.applications.vgg16.preprocess_input(images.copy())
    temper_head(reference, preprocessed)
    save_legacy_h5(reference, tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    run = import_weights(
        tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "vgg16", tmp_path / "run"
    )
    ours = keras.saving.load_model(run / "best.keras")
    expected = reference.predict_on_batch(preprocessed)
    got = ours.predict_on_batch(images)
    assert expected.max() > 0.05  # not a flat softmax: the comparison can tell models apart
    assert relative_error(got, expected) < TOLERANCE
    metadata = Metadata.load(run / "metadata.json")
    assert metadata.class_names == imagenet_class_names()
    assert (metadata.model, metadata.input_size, metadata.resize) == ("vgg16", 224, 256)  # as asked
    assert metadata.mean == (123.68, 116.779, 103.939) and metadata.scale == 1.0
    assert metadata.data == "imagenet2012"


def test_keras_vgg19_notop_h5_equals_keras_applications_and_bgr_is_folded(tmp_path):
    shape = (48, 64, 3)
    reference = keras.applications.VGG19(weights=None, include_top=False, input_shape=shape)
    randomise(reference, seed=2)
    save_legacy_h5(reference, tmp_path / "vgg19_notop.h5")
    images = photo_like(3, *shape[:2], seed=3)
    expected = reference.predict_on_batch(keras.applications.vgg19.preprocess_input(images.copy()))
    ours = build_model("vgg19", weights=tmp_path / "vgg19_notop.h5", include_top=False,
                       input_shape=shape)  # fmt: skip
    assert relative_error(ours.predict_on_batch(images), expected) < TOLERANCE
    # The same weights without the BGR fold are far off: the comparison sees channel order.
    weights, preset = read(tmp_path / "vgg19_notop.h5", get_spec("vgg19"))
    unfolded = build(get_spec("vgg19"), weights, preset.replace(bgr=False), include_top=False,
                     input_shape=shape)  # fmt: skip
    assert relative_error(unfolded.predict_on_batch(images), expected) > 1e-2


def test_transfer_keeps_the_features_and_reinitialises_a_head_of_other_classes(tmp_path):
    reference = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    randomise(reference, seed=4)
    save_legacy_h5(reference, tmp_path / "notop.h5")
    model = build_model("vgg16", weights=tmp_path / "notop.h5", include_top=False,
                        input_shape=(32, 32, 3), pooling="avg")  # fmt: skip
    assert model.output_shape == (None, 512)
    for layer in reference.layers:
        if layer.weights:
            for a, b in zip(layer.get_weights()[1:], model.get_layer(layer.name).get_weights()[1:],
                            strict=True):  # fmt: skip
                np.testing.assert_array_equal(a, b)


def test_a_vgg16_file_is_refused_for_vgg19_in_one_line(tmp_path):
    reference = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    save_legacy_h5(reference, tmp_path / "vgg16_notop.h5")
    with pytest.raises(WeightsError, match="block3_conv4"):
        build_model("vgg19", weights=tmp_path / "vgg16_notop.h5", include_top=False,
                    input_shape=(32, 32, 3))  # fmt: skip


# --- torchvision ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_vgg_state_dict_equals_its_pytorch_forward(tmp_path, suffix):
    width = 1 / 8
    reference = torch_vgg("vgg16", width, seed=5)
    path = tmp_path / f"vgg16{suffix}"
    if suffix == ".pth":
        torch.save(reference.state_dict(), path)
    else:
        safetensors_torch.save_file(reference.state_dict(), path)
    spec = get_spec("vgg16")
    weights, preset = read(path, spec)
    assert preset == PRESETS["torchvision"].replace(model_args={"width": width})  # from conv1
    ours = build(spec, weights, preset)
    crops = crops_of(photo_like(2, 240, 320, seed=6), preset)
    expected = torchvision_forward(reference, crops)
    assert expected.max() > 0.05
    assert relative_error(ours.predict_on_batch(crops), expected) < TOLERANCE
    norm = next(layer for layer in ours.layers if isinstance(layer, InputNormalization))
    assert len(norm.scale) == 3  # torchvision's std is per channel


def test_torchvision_fc1_rows_are_permuted_from_chw_to_hwc(tmp_path):
    reference = torch_vgg("vgg11", 1 / 16, seed=7)
    safetensors_torch.save_file(reference.state_dict(), tmp_path / "vgg11.safetensors")
    weights, _ = read(tmp_path / "vgg11.safetensors", get_spec("vgg11"))
    chw = reference.classifier[0].weight.detach().numpy()  # (out, c * 7 * 7)
    c = chw.shape[1] // 49
    h, w, ch = 3, 5, c - 1
    np.testing.assert_array_equal(
        weights["fc1"][0][(h * 7 + w) * c + ch], chw[:, ch * 49 + h * 7 + w]
    )
    assert list(weights)[:3] == ["block1_conv1", "block2_conv1", "block3_conv1"]


def test_import_weights_command_writes_a_run_directory_the_runtime_loads(tmp_path):
    # 1000 ImageNet classes at 1/16 width: the command reads the width from the file.
    reference = torch_vgg("vgg11", 1 / 16, seed=8)
    safetensors_torch.save_file(reference.state_dict(), tmp_path / "vgg11.safetensors")
    parser = import_weights_command.get_args_parser()
    argv = [str(tmp_path / "vgg11.safetensors"), "--model", "vgg11", "--output",
            str(tmp_path / "run"), "--resize", "288"]  # fmt: skip
    import_weights_command.main(parser.parse_args(argv))
    runtime = load(tmp_path / "run")
    crops = crops_of(photo_like(2, 256, 300, seed=9), PRESETS["torchvision"])
    expected = torchvision_forward(reference, crops)
    assert relative_error(runtime.predict(crops), expected) < TOLERANCE
    metadata = runtime.metadata
    assert metadata.scale == PRESETS["torchvision"].scale and metadata.resize == 288
    assert metadata.class_names[:2] == ("tench", "goldfish") and len(metadata.class_names) == 1000
    assert metadata.model == "vgg11"  # as asked, not the registry's vgg_a


# --- the framework --------------------------------------------------------------------


def test_imagenet_class_names_are_the_1000_in_wordnet_id_order():
    names = imagenet_class_names()
    assert len(names) == len(set(names)) == 1000
    assert (names[0], names[1], names[-1]) == ("tench", "goldfish", "toilet tissue")


def test_per_channel_scale_normalises_each_channel_and_round_trips_its_config():
    layer = InputNormalization(mean=(10.0, 20.0, 30.0), scale=(0.5, 0.25, 2.0))
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    expected = (x - np.array([10, 20, 30])) * np.array([0.5, 0.25, 2.0])
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-6)
    again = InputNormalization.from_config(layer.get_config())
    assert again.scale == (0.5, 0.25, 2.0)
    assert InputNormalization.from_config({"mean": [0, 0, 0], "scale": 0.5}).scale == 0.5
    with pytest.raises(ValueError, match="one value per channel"):
        InputNormalization(scale=(1.0, 2.0))


def test_a_pth_file_is_read_without_pytorch(tmp_path, monkeypatch):
    reference = torch_vgg("vgg11", 1 / 16, seed=16)
    torch.save(reference.state_dict(), tmp_path / "vgg11.pth")
    safetensors_torch.save_file(reference.state_dict(), tmp_path / "vgg11.safetensors")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None if n == "torch" else real(n))
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    spec = get_spec("vgg11")
    weights, _ = read(tmp_path / "vgg11.pth", spec)
    expected, _ = read(tmp_path / "vgg11.safetensors", spec)
    assert list(weights) == list(expected)
    for layer in expected:
        for a, b in zip(weights[layer], expected[layer], strict=True):
            np.testing.assert_array_equal(a, b)


def test_unknown_formats_and_existing_outputs_are_refused_in_one_line(tmp_path, capsys):
    from keras_alexnet import cli

    (tmp_path / "w.bin").write_bytes(b"")
    with pytest.raises(WeightsError, match="unknown weight file format"):
        read(tmp_path / "w.bin", get_spec("vgg16"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.keras").write_bytes(b"")
    with pytest.raises(WeightsError, match="not an empty directory") as error:
        import_weights(tmp_path / "w.h5", "vgg16", tmp_path / "run")
    # The Python API names its argument, the command its flag.
    assert str(error.value).endswith("choose another `output`")
    with pytest.raises(SystemExit):
        argv = [str(tmp_path / "w.h5"), "--model", "vgg16", "--output", str(tmp_path / "run")]
        cli.run(import_weights_command.main, import_weights_command.get_args_parser(), argv)
    assert capsys.readouterr().err.endswith("not an empty directory: choose another --output\n")
    (tmp_path / "x.safetensors").write_bytes(b"")
    with pytest.raises(WeightsError, match="one-weird-trick"):
        read(tmp_path / "x.safetensors", get_spec("alexnet"))


@pytest.mark.parametrize("name", ["alexnet", "vgg11"])
def test_a_per_channel_scale_exports_to_onnx_and_folds_into_alexnet_conv1(tmp_path, name):
    scale = PRESETS["torchvision"].scale
    model = build_model(name, width=1 / 16, classes=10, seed=0, init="he",
                        mean=PRESETS["torchvision"].mean, scale=scale)  # fmt: skip
    size = model.input_shape[1]
    model.save(tmp_path / "best.keras")
    Metadata(model=get_spec(name).name, class_names=tuple("abcdefghij"), input_size=size,
             resize=size + 16, mean=PRESETS["torchvision"].mean, scale=scale).save(
        tmp_path / "metadata.json")  # fmt: skip
    result = export_onnx(tmp_path, tmp_path / "m.onnx", log=lambda *_: None)
    assert result["max_relative_error"] < TOLERANCE  # export verifies against Keras
    runtime = load(tmp_path / "m.onnx")
    assert runtime.metadata.scale == scale
    x = photo_like(2, size, size, seed=10)
    assert relative_error(runtime.predict(x), model.predict_on_batch(x)) < TOLERANCE
    ops = [n.op_type for n in onnx.load(tmp_path / "m.onnx").graph.node]
    assert ("Mul" not in ops[: ops.index("Conv")]) == (name == "alexnet")  # VGG's conv1 pads


# --- files of other class counts, checkpoints, damaged files --------------------------


class Unsafe:
    """A class PyTorch's safe loader does not rebuild: a pickle holding it could run code."""


def ten_class_file(tmp_path, suffix):
    """A VGG16 at width 1/8 with a 10-way head written as `suffix`, and its softmax scores on
    photo-like 224 crops computed by the source's own model."""
    crops = photo_like(2, 224, 224, seed=12)
    if suffix == ".h5":
        reference = build_model("vgg16", width=0.125, classes=10, seed=0, init="he")
        randomise(reference, seed=13)
        save_legacy_h5(reference, tmp_path / "vgg16.h5")
        bgr = crops[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
        return tmp_path / "vgg16.h5", reference.predict_on_batch(bgr)
    reference = torch_vgg("vgg16", 0.125, seed=14, classes=10)
    path = tmp_path / f"vgg16{suffix}"
    if suffix == ".pth":
        torch.save(reference.state_dict(), path)
    else:
        safetensors_torch.save_file(reference.state_dict(), path)
    return path, torchvision_forward(reference, crops)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".h5"])
def test_a_10_class_file_imports_with_its_10_classes_never_a_random_imagenet_head(tmp_path, suffix):
    path, expected = ten_class_file(tmp_path, suffix)
    run = import_weights(path, "vgg16", tmp_path / "run")
    runtime = load(run)
    assert runtime.metadata.class_names == tuple(str(i) for i in range(10))
    # The file's own head: the scores are the source's, not a fresh initialisation's.
    got = runtime.predict(photo_like(2, 224, 224, seed=12))
    assert got.shape == (2, 10) and relative_error(got, expected) < TOLERANCE
    # The Python API too: build_model with the file keeps its head.
    model = build_model("vgg16", weights=path)
    got = model.predict_on_batch(photo_like(2, 224, 224, seed=12))
    assert got.shape == (2, 10) and relative_error(got, expected) < TOLERANCE


def test_import_weights_classes_file_names_the_files_classes_or_is_refused(tmp_path):
    path, _ = ten_class_file(tmp_path, ".safetensors")
    names = [f"part {i}" for i in range(10)]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    parser = import_weights_command.get_args_parser()
    argv = [str(path), "--model", "vgg16", "--output", str(tmp_path / "run"),
            "--classes", str(tmp_path / "names.txt")]  # fmt: skip
    import_weights_command.main(parser.parse_args(argv))
    assert Metadata.load(tmp_path / "run" / "metadata.json").class_names == tuple(names)
    (tmp_path / "nine.txt").write_text("\n".join(names[:9]))
    with pytest.raises(WeightsError, match="has 9 class names; the weights' classifier has 10"):
        import_weights(path, "vgg16", tmp_path / "other", class_names=tmp_path / "nine.txt")
    assert not list((tmp_path / "other").glob("*"))  # nothing written that refuses a retry


def test_a_training_checkpoint_pth_imports_its_state_dict(tmp_path):
    import argparse

    reference = torch_vgg("vgg11", 1 / 16, seed=15)
    state = reference.state_dict()
    torch.save(state, tmp_path / "plain.pth")
    parallel = {f"module.{k}": v for k, v in state.items()}  # DataParallel / DDP
    checkpoints = {
        "lightning.pth": {"state_dict": state, "epoch": 3},
        "references.pth": {
            "model": parallel,
            "optimizer": {"lr": 0.01},
            "epoch": 3,
            "args": argparse.Namespace(lr=0.01),
        },  # fmt: skip
    }
    spec = get_spec("vgg11")
    plain, _ = read(tmp_path / "plain.pth", spec)
    for name, checkpoint in checkpoints.items():
        torch.save(checkpoint, tmp_path / name)
        weights, _ = read(tmp_path / name, spec)
        assert list(weights) == list(plain), name
        for layer in plain:
            for a, b in zip(weights[layer], plain[layer], strict=True):
                np.testing.assert_array_equal(a, b)
    torch.save({**state, "epoch": 3}, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match="entry 'epoch' is a int, not a tensor") as error:
        read(tmp_path / "odd.pth", spec)
    assert "\n" not in str(error.value)


def test_an_unsafe_pth_is_refused_without_pytorchs_advice_or_warnings(tmp_path, recwarn):
    torch.save({"features.0.weight": torch.zeros(1), "hook": Unsafe()}, tmp_path / "vgg.pth")
    with pytest.raises(WeightsError) as error:
        read(tmp_path / "vgg.pth", get_spec("vgg11"))
    message = str(error.value)
    assert "\n" not in message and "Unsafe" in message and "refused" in message
    assert "weights_only" not in message and "trust" not in message
    assert not [w for w in recwarn if "torch" in str(w.filename)]


def test_a_resnet_state_dict_says_what_it_is_not_and_which_layouts_are_read(tmp_path):
    rng = np.random.default_rng(0)
    keys = ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
            "layer1.0.conv1.weight", "layer1.0.bn1.weight", "fc.weight", "fc.bias"]  # fmt: skip
    state = {k: torch.from_numpy(rng.normal(size=4).astype(np.float32)) for k in keys}
    safetensors_torch.save_file(state, tmp_path / "resnet18.safetensors")
    with pytest.raises(WeightsError) as error:
        read(tmp_path / "resnet18.safetensors", get_spec("vgg16"))
    message = str(error.value)
    assert "not a torchvision AlexNet or VGG state dict" in message and "ResNet" in message
    assert "batch-norm VGG" not in message and "features.N" in message


def test_a_damaged_legacy_h5_is_refused_in_one_line(tmp_path):
    reference = build_model("vgg11", width=1 / 16, classes=4, input_shape=(32, 32, 3))
    save_legacy_h5(reference, tmp_path / "missing.h5")
    with h5py.File(tmp_path / "missing.h5", "a") as f:
        del f["block2_conv1"]  # still listed in layer_names
    with pytest.raises(WeightsError, match="lists 'block2_conv1' but the file has no such"):
        read(tmp_path / "missing.h5", get_spec("vgg11"))
    save_legacy_h5(reference, tmp_path / "typed.h5")
    with h5py.File(tmp_path / "typed.h5", "a") as f:
        f.attrs["layer_names"] = 7
    with pytest.raises(WeightsError, match="'layer_names' of / is not a list of names"):
        read(tmp_path / "typed.h5", get_spec("vgg11"))


def test_init_from_builds_at_net_as_width_and_records_it(tiny_data, tmp_path):
    from keras_alexnet.training import TrainConfig, train

    base = dict(data=str(tiny_data), image_size=32, resize=(36, 36), batch_size=8,
                init="he", scale=0.0078, epochs=1, steps_per_epoch=1, val_steps=1,
                cache=str(tmp_path / "cache"))  # fmt: skip
    train(TrainConfig(model="vgg_a", width=1 / 16, output=str(tmp_path / "a"), **base),
          log=lambda *a: None)  # fmt: skip
    assert Metadata.load(tmp_path / "a" / "metadata.json").model_args == {"width": 1 / 16}
    # No --width: net D is built at net A's width, so A's layers fit (VGG Section 3.1).
    config = TrainConfig(model="vgg_d", init_from=str(tmp_path / "a"), output=str(tmp_path / "d"),
                         **base)  # fmt: skip
    lines = []
    train(config, log=lines.append)
    assert any(line.startswith("Initialised block1_conv1") for line in lines)
    model = keras.saving.load_model(tmp_path / "d" / "best.keras")
    assert model.get_layer("block1_conv1").kernel.shape[-1] == 4  # 64 / 16
    assert Metadata.load(tmp_path / "d" / "metadata.json").model_args == {"width": 1 / 16}
