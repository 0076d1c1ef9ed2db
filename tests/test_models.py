import keras
import numpy as np
import pytest

from keras_alexnet.layers import GroupedConv2D, LocalResponseNormalization
from keras_alexnet.models import ALIASES, CAFFE_LRN, MODEL_NAMES, build_model, get_spec
from keras_alexnet.models.alexnet import CONV_LAYERS
from keras_alexnet.models.alexnet import FC_UNITS as ALEXNET_FC
from keras_alexnet.models.vgg import CONFIGS
from keras_alexnet.models.vgg import FC_UNITS as VGG_FC

# SPEC section 1 and 2: exact counts at 1000 classes (AlexNet 227, VGG 224 input).
PAPER_PARAMETERS = {
    "alexnet": 60_965_224,
    "vgg_a": 132_863_336,
    "vgg_a_lrn": 132_863_336,
    "vgg_b": 133_047_848,
    "vgg_c": 133_638_952,
    "vgg_d": 138_357_544,
    "vgg_e": 143_667_240,
}
# Weight layers per configuration (the paper's Table 1 header: 11, 11, 13, 16, 16, 19).
WEIGHT_LAYERS = {"vgg_a": 11, "vgg_a_lrn": 11, "vgg_b": 13, "vgg_c": 16, "vgg_d": 16, "vgg_e": 19,
                 "vgg11_bn": 11, "vgg13_bn": 13, "vgg16_bn": 16, "vgg19_bn": 19}  # fmt: skip


def smallest(name):
    """The smallest input that survives the model's downsampling (its family's, registry)."""
    side = get_spec(name).family_spec.smallest_input
    return (side, side, 3)


def tiny(name, **kwargs):
    return build_model(name, input_shape=smallest(name), width=1 / 16, classes=10, seed=0, **kwargs)


def scaled(n, width):
    """A layer width at `width`, as the builders round it."""
    return max(1, int(round(n * width)))


def alexnet_parameters(width=1.0, classes=1000, pooled=6):
    """AlexNet's count from its layer table: grouped layers see half the maps; fc6 reads pool5."""
    total, channels = 0, 3
    for layer in CONV_LAYERS:
        filters = scaled(layer.filters, width)
        inputs = channels // 2 if layer.tower_local else channels
        total += layer.kernel**2 * inputs * filters + filters
        channels = filters
    units = scaled(ALEXNET_FC, width)
    return total + fc_parameters(channels * pooled**2, units, classes)


def vgg_parameters(config, width=1.0, classes=1000, pooled=7):
    """A VGG's count from its Table 1 row: 3x3 (or C's 1x1) convs, then the three FC layers."""
    total, channels = 0, 3
    for cell in CONFIGS[config]:
        if cell in ("M", "LRN"):
            continue
        filters, kernel = cell if isinstance(cell, tuple) else (cell, 3)
        filters = scaled(filters, width)
        total += kernel**2 * channels * filters + filters
        channels = filters
    return total + fc_parameters(channels * pooled**2, scaled(VGG_FC, width), classes)


def fc_parameters(inputs, units, classes):
    """Weights and biases of two FC layers of `units` and the classifier."""
    return inputs * units + units + units * units + units + units * classes + classes


def table_parameters(name, **kwargs):
    """The count the layer tables give for a paper model."""
    config = get_spec(name).builder_args.get("config")
    return vgg_parameters(config, **kwargs) if config else alexnet_parameters(**kwargs)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMETERS))
def test_parameter_count_follows_the_layer_table_and_the_paper(name):
    assert table_parameters(name) == PAPER_PARAMETERS[name]  # the tables give SPEC's counts
    # and the builders follow the tables (at 1/8 width and 32 (VGG) or 67 (AlexNet) inputs,
    # where AlexNet's pool5 is 1x1 and VGG's 1x1: cheap to build, every layer still counted)
    model = build_model(name, input_shape=smallest(name), width=1 / 8, classes=10)
    assert model.count_params() == table_parameters(name, width=1 / 8, classes=10, pooled=1)


def test_the_training_pages_alexnet_parameter_counts_hold_for_both_pools():
    import re
    from pathlib import Path

    text = " ".join((Path(__file__).parents[1] / "docs" / "training.md").read_text().split())
    claims = re.findall(r"at (?:the demo's )?(\d+) (?:the parameter count|it) stays ([\d,]+)", text)
    assert {int(size) for size, _ in claims} >= {227, 67}, claims
    for size, count in claims:
        size, count = int(size), int(count.replace(",", ""))
        # Independently: conv1 (11, stride 4, valid), then three pools; fc6 reads 256 maps.
        side = (size - 11) // 4 + 1
        for window, stride in ((3, 2), (2, 2)):
            n = side
            for _ in range(3):
                n = (n - window) // stride + 1
            assert count == PAPER_PARAMETERS["alexnet"] - 256 * 4096 * (36 - n * n), (size, window)
        for pool in ("overlapping", "non_overlapping"):
            model = build_model("alexnet", input_shape=(size, size, 3), pool=pool)
            assert model.count_params() == count, (size, pool)


@pytest.mark.parametrize(("alias", "name"), sorted(ALIASES.items()))
def test_aliases_name_the_same_configuration(alias, name):
    assert get_spec(alias) == get_spec(name)
    assert build_model(alias, input_shape=(32, 32, 3), width=1 / 16).name == name


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="vgg_a_lrn.*vgg16"):
        build_model("resnet50")


def test_alexnet_layer_shapes_follow_the_paper():
    model = build_model("alexnet")
    spatial = {name: model.get_layer(name).output.shape[1:3] for name in ("conv1", "conv2")}
    spatial |= {f"conv{i}": model.get_layer(f"conv{i}").output.shape[1:3] for i in (3, 4, 5)}
    assert [s[0] for s in spatial.values()] == [55, 27, 13, 13, 13]
    assert model.get_layer("pool5").output.shape[1:] == (6, 6, 256)
    assert [model.get_layer(f"fc{i}").units for i in (6, 7, 8)] == [4096, 4096, 1000]


def test_alexnet_towers_group_conv2_conv4_conv5_only():
    model = build_model("alexnet", input_shape=(67, 67, 3))
    depth = {f"conv{i}": model.get_layer(f"conv{i}").kernel.shape[2] for i in range(1, 6)}
    assert depth == {"conv1": 3, "conv2": 48, "conv3": 256, "conv4": 192, "conv5": 192}
    assert all(isinstance(model.get_layer(n), GroupedConv2D) for n in ("conv2", "conv4", "conv5"))
    assert [model.get_layer(n).groups for n in ("norm1", "norm2")] == [2, 2]


def test_one_tower_alexnet_is_ungrouped_and_bigger():
    model = build_model("alexnet", towers=1)
    assert model.get_layer("conv2").kernel.shape[2] == 96
    assert model.get_layer("norm1").groups == 1
    # conv2, conv4, conv5 see twice the input maps: their kernels double (biases do not).
    grouped = 5 * 5 * 48 * 256 + 3 * 3 * 192 * 384 + 3 * 3 * 192 * 256
    assert model.count_params() == PAPER_PARAMETERS["alexnet"] + grouped


def test_lrn_constants_are_arguments():
    model = build_model("alexnet", input_shape=(67, 67, 3), width=1 / 16, lrn=CAFFE_LRN,
                        lrn_per_tower=False)  # fmt: skip
    norm = model.get_layer("norm1")
    assert (norm.depth_radius, norm.bias, norm.alpha, norm.beta, norm.groups) == (
        2, 1.0, 2e-5, 0.75, 1,
    )  # fmt: skip
    assert build_model("alexnet", input_shape=(67, 67, 3)).get_layer("norm2").bias == 2.0


@pytest.mark.parametrize("name", sorted(WEIGHT_LAYERS))
def test_vgg_configurations_follow_table_1(name):
    model = tiny(name)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert len(convs) + len(dense) == WEIGHT_LAYERS[name]
    one_by_one = [layer.name for layer in convs if layer.kernel_size == (1, 1)]
    assert one_by_one == (
        ["block3_conv3", "block4_conv3", "block5_conv3"] if name == "vgg_c" else []
    )
    lrn = [layer.name for layer in model.layers if isinstance(layer, LocalResponseNormalization)]
    assert lrn == (["block1_lrn"] if name == "vgg_a_lrn" else [])
    assert [layer.name for layer in dense] == ["fc1", "fc2", "predictions"]
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 5


def test_paper_initialisation():
    alex = build_model("alexnet", input_shape=(67, 67, 3), seed=0)
    biases = {layer.name: np.unique(layer.bias.numpy()) for layer in alex.layers
              if hasattr(layer, "kernel")}  # fmt: skip
    assert {name: b.tolist() for name, b in biases.items()} == {
        "conv1": [0.0], "conv2": [1.0], "conv3": [0.0], "conv4": [1.0], "conv5": [1.0],
        "fc6": [1.0], "fc7": [1.0], "fc8": [0.0],
    }  # fmt: skip
    assert np.std(alex.get_layer("fc7").kernel.numpy()) == pytest.approx(0.01, rel=0.01)
    vgg = build_model("vgg_a", input_shape=(32, 32, 3), seed=0)
    # VGG Section 3.1: zero-mean normal with variance 1e-2, zero biases.
    assert np.std(vgg.get_layer("block5_conv2").kernel.numpy()) == pytest.approx(0.1, rel=0.01)
    assert not np.any(vgg.get_layer("fc1").bias.numpy())


@pytest.mark.parametrize("init", ["glorot", "he"])
def test_glorot_and_he_switch_sets_zero_biases(init):
    model = build_model("alexnet", input_shape=(67, 67, 3), init=init, seed=0)
    assert not np.any(model.get_layer("conv2").bias.numpy())
    fan_in = 5 * 5 * 48
    expected = np.sqrt(2 / fan_in) if init == "he" else np.sqrt(2 / (fan_in + 5 * 5 * 256))
    assert np.std(model.get_layer("conv2").kernel.numpy()) == pytest.approx(expected, rel=0.05)


def test_seed_makes_initialisation_reproducible():
    a, b = (tiny("vgg_c").get_weights() for _ in range(2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_tiny_models_classify(name):
    model = tiny(name)
    x = np.random.default_rng(0).uniform(0, 1, (2, *model.input_shape[1:])).astype("float32")
    probs = model.predict_on_batch(x)
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_logits_headless_and_pooling():
    logits = tiny("vgg_b", classifier_activation=None)
    assert logits.get_layer("predictions").activation is keras.activations.linear
    headless = build_model("alexnet", include_top=False, width=1 / 16)
    assert headless.output_shape == (None, 6, 6, 16)
    pooled = build_model("vgg_d", include_top=False, pooling="avg", input_shape=(64, 64, 3))
    assert pooled.output_shape == (None, 512)
    with pytest.raises(ValueError, match="Received: pooling='avg'"):
        build_model("vgg_d", pooling="avg")


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="too small"):
        build_model("alexnet", input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"\(height, width, 3\)"):
        build_model("vgg_a", input_shape=(32, 32))
    with pytest.raises(ValueError, match="Received: init='xavier'"):
        build_model("vgg_a", init="xavier")
    with pytest.raises(ValueError, match="classes"):
        build_model("alexnet", classes=0)


def test_alexnet_round_trips_through_a_keras_file(tmp_path):
    model = tiny("alexnet")
    x = np.random.default_rng(1).uniform(0, 255, (3, 67, 67, 3)).astype("float32")
    model.save(tmp_path / "alexnet.keras")
    restored = keras.saving.load_model(tmp_path / "alexnet.keras")
    np.testing.assert_array_equal(model.predict_on_batch(x), restored.predict_on_batch(x))
    assert [layer.name for layer in restored.layers] == [layer.name for layer in model.layers]


def test_mean_subtraction_in_graph_matches_subtracting_by_hand():
    mean = (120.0, 110.0, 100.0)
    with_mean = tiny("vgg_a", mean=mean, scale=0.5, classifier_activation=None)
    without = tiny("vgg_a", classifier_activation=None)
    assert with_mean.count_params() == without.count_params()
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        with_mean.predict_on_batch(x),
        without.predict_on_batch((x - np.array(mean, "float32")) * 0.5),
        rtol=1e-5,
        atol=1e-6,
    )
