"""AlexNet's experiments as training flags (towers, LRN off, non-overlapping pooling)."""

import dataclasses
import json
from pathlib import Path

import keras
import pytest

from keras_alexnet.layers import GroupedConv2D, LocalResponseNormalization
from keras_alexnet.metadata import Metadata
from keras_alexnet.models import build_model
from keras_alexnet.train import TrainConfig, TrainingError, train

# 3/32 of the paper's widths: 9, 24, 36, 36, 24 filters, which three towers split evenly.
THIRDS = 3 / 32


def quiet(*_):
    """A log that drops its lines."""


def alexnet_config(data, output, **changes):
    """A tiny AlexNet run on `data` (67 crops, AlexNet's smallest input) through the API."""
    base = dict(model="alexnet", data=str(data), width=1 / 16, image_size=67, resize=(76, 76),
                batch_size=8, init="he", scale=0.0078, output=str(output),
                cache=str(Path(output).parent / "cache"), epochs=1,
                steps_per_epoch=2)  # fmt: skip
    return TrainConfig(**{**base, **changes})


def layer_table(model):
    """(name, class, output shape, parameters) of every layer."""
    return [
        (layer.name, type(layer).__name__, tuple(layer.output.shape), layer.count_params())
        for layer in model.layers
    ]


def test_three_towers_train_and_are_recorded(tiny_data, tmp_path):
    config = alexnet_config(tiny_data, tmp_path / "run", towers=3, width=THIRDS)
    result = train(config, log=quiet)
    assert result.epochs == 1
    model = keras.saving.load_model(result.best_model)
    grouped = {layer.name: layer.groups for layer in model.layers
               if isinstance(layer, GroupedConv2D)}  # fmt: skip
    assert grouped == {"conv2": 3, "conv4": 3, "conv5": 3}
    norms = [layer.groups for layer in model.layers
             if isinstance(layer, LocalResponseNormalization)]  # fmt: skip
    assert norms == [3, 3]
    metadata = Metadata.load(tmp_path / "run" / "metadata.json")
    assert (metadata.towers, metadata.lrn, metadata.pool) == (3, True, "overlapping")


def test_widths_towers_cannot_split_are_one_line_errors(tiny_data, tmp_path):
    # 256 * 1/16 = 16 filters in conv2, which 3 towers cannot share.
    with pytest.raises(ValueError, match=r"conv2 has 16 filters .* into 3 towers \(16 = 3 x 5"):
        build_model("alexnet", towers=3, width=1 / 16)
    with pytest.raises(ValueError, match=r"conv2 has 256 filters at width 1, .* 3 towers"):
        build_model("alexnet", towers=3)
    with pytest.raises(TrainingError, match="conv2 has 16 filters") as error:
        train(alexnet_config(tiny_data, tmp_path / "run", towers=3), log=quiet)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert build_model("alexnet", towers=4, width=1 / 8).count_params() > 0  # 12, 32, 48
    with pytest.raises(ValueError, match="towers applies to AlexNet only"):
        build_model("vgg_a", towers=2)
    with pytest.raises(TrainingError, match="AlexNet's experiments"):
        train(alexnet_config(tiny_data, tmp_path / "v", model="vgg_a", lrn=False), log=quiet)


@pytest.mark.parametrize(
    ("change", "layers"),
    [({"use_lrn": False}, {"norm1": None, "norm2": None}),
     ({"pool": "non_overlapping"},
      {f"pool{i}": ("MaxPooling2D", (2, 2), (2, 2)) for i in (1, 2, 5)})],
)  # fmt: skip
def test_ablations_change_exactly_their_layers(change, layers):
    # At 227 both pools give 27, 13 and 6 maps ((55 - 3) / 2 + 1 = 27 = (55 - 2) // 2 + 1),
    # and LRN has no weights: every other layer, and the parameter count, stay the same.
    paper, ablated = build_model("alexnet"), build_model("alexnet", **change)
    assert ablated.count_params() == paper.count_params() == 60_965_224
    expected = []
    for row in layer_table(paper):
        if row[0] not in layers:
            expected.append(row)
        elif layers[row[0]] is not None:
            assert (row[1], paper.get_layer(row[0]).pool_size) == ("MaxPooling2D", (3, 3))
            expected.append(row)
    assert layer_table(ablated) == expected
    for name, spec in layers.items():
        if spec is not None:
            layer = ablated.get_layer(name)
            assert (type(layer).__name__, layer.pool_size, layer.strides) == spec


def test_ablations_are_recorded_and_a_run_of_other_towers_is_refused(tiny_data, tmp_path):
    config = alexnet_config(tiny_data, tmp_path / "run", lrn=False, pool="non_overlapping")
    train(config, log=quiet)
    metadata = Metadata.load(tmp_path / "run" / "metadata.json")
    assert (metadata.towers, metadata.lrn, metadata.pool) == (2, False, "non_overlapping")
    model = keras.saving.load_model(tmp_path / "run" / "best.keras")
    assert not any(isinstance(layer, LocalResponseNormalization) for layer in model.layers)
    assert model.get_layer("pool1").pool_size == (2, 2)
    refusals = [({"towers": 1}, "--towers 2, not 1"),
                ({"lrn": True}, r"LRN \(--no-lrn\) off, not on"),
                ({"pool": "overlapping"}, "--pool non_overlapping, not overlapping")]  # fmt: skip
    for change, message in refusals:
        with pytest.raises(TrainingError, match=message):
            train(dataclasses.replace(config, epochs=2, **change), log=quiet)


def test_metadata_written_before_the_experiments_still_loads(tmp_path):
    old = {"model": "alexnet", "class_names": ["a", "b"], "input_size": 227, "resize": 256,
           "mean": [1, 2, 3], "scale": 1.0, "protocol": "ten_crop", "data": None,
           "data_dir": None, "version": "0.1.0"}  # fmt: skip
    (tmp_path / "metadata.json").write_text(json.dumps(old))
    metadata = Metadata.load(tmp_path / "metadata.json")
    assert (metadata.towers, metadata.lrn, metadata.pool) == (None, None, None)
    assert Metadata.from_properties(metadata.to_properties()) == metadata
