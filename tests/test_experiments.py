"""AlexNet's experiments as training flags (towers, LRN off, non-overlapping pooling)."""

import dataclasses
import io
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_alexnet import curves, extras, filters
from keras_alexnet.commands import plot
from keras_alexnet.layers import GroupedConv2D, LocalResponseNormalization
from keras_alexnet.metadata import Metadata
from keras_alexnet.models import build_model
from keras_alexnet.training import TrainConfig, TrainingError, train

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
    options = {k: changes.pop(k) for k in ("towers", "use_lrn", "pool") if k in changes}
    return TrainConfig(**{**base, **changes}, model_args=options)


def options(metadata):
    """The AlexNet options a run recorded: (towers, use_lrn, pool)."""
    return tuple(metadata.model_args[k] for k in ("towers", "use_lrn", "pool"))


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
    assert options(metadata) == (3, True, "overlapping")


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
    with pytest.raises(ValueError, match=r"towers \(--towers\) applies to alexnet only"):
        build_model("vgg_a", towers=2)
    with pytest.raises(ValueError, match=r"towers \(--towers\) applies to alexnet only"):
        build_model("vgg_a", towers=1)  # one rule, whatever the value
    with pytest.raises(TrainingError, match=r"use_lrn \(--no-lrn\) applies to alexnet only"):
        train(alexnet_config(tiny_data, tmp_path / "v", model="vgg_a", use_lrn=False), log=quiet)


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


def test_ablations_are_recorded_and_a_run_of_other_towers_is_refused(tiny_data, tmp_path, capsys):
    from keras_alexnet import cli
    from keras_alexnet.commands import train as command

    config = alexnet_config(tiny_data, tmp_path / "run", use_lrn=False, pool="non_overlapping")
    train(config, log=quiet)
    metadata = Metadata.load(tmp_path / "run" / "metadata.json")
    assert options(metadata) == (2, False, "non_overlapping")
    model = keras.saving.load_model(tmp_path / "run" / "best.keras")
    assert not any(isinstance(layer, LocalResponseNormalization) for layer in model.layers)
    assert model.get_layer("pool1").pool_size == (2, 2)
    refusals = [({"towers": 1}, "`towers` 2, not 1"),
                ({"use_lrn": True}, r"LRN \(`use_lrn`\) off, not on"),
                ({"pool": "overlapping"}, "`pool` non_overlapping, not overlapping")]  # fmt: skip
    for change, message in refusals:
        with pytest.raises(TrainingError, match=message):
            args = {**config.model_args, **change}
            train(dataclasses.replace(config, epochs=2, model_args=args), log=quiet)
    # The train command names each option by its flag.
    argv = ["--model", "alexnet", "--data", str(tiny_data), "--width", "0.0625", "--image-size",
            "67", "--resize", "76", "--batch-size", "8", "--init", "he", "--scale", "0.0078",
            "--output", config.output, "--cache", config.cache, "--epochs", "2"]  # fmt: skip
    refusals = [(["--towers", "1", "--no-lrn", "--pool", "non_overlapping"],
                 "a run with --towers 2, not 1: choose another --output (or the same --towers "
                 "to resume it)"),
                (["--pool", "non_overlapping"], "a run with LRN (--no-lrn) off, not on"),
                (["--no-lrn"], "a run with --pool non_overlapping, not overlapping")]  # fmt: skip
    for flags, message in refusals:
        with pytest.raises(SystemExit):
            cli.run(command.main, command.get_args_parser(), [*argv, *flags], name="train")
        line = capsys.readouterr().err
        assert line.startswith("train: error: ") and message in line and "`" not in line


def test_metadata_written_before_the_experiments_still_loads(tmp_path):
    old = {"model": "alexnet", "class_names": ["a", "b"], "input_size": 227, "resize": 256,
           "mean": [1, 2, 3], "scale": 1.0, "protocol": "ten_crop", "data": None,
           "data_dir": None, "version": "0.1.0"}  # fmt: skip
    (tmp_path / "metadata.json").write_text(json.dumps(old))
    metadata = Metadata.load(tmp_path / "metadata.json")
    assert metadata.architecture() == {}  # the published model
    assert Metadata.from_properties(metadata.to_properties()) == metadata


# matplotlib's first two line colours (its default cycle's C0 and C1).
FIRST, SECOND = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)


def pixels_of(png, colour):
    """How many pixels of an RGB(A) PNG are exactly `colour`."""
    rgb = np.asarray(Image.open(png).convert("RGB"))
    return int(np.all(rgb == colour, axis=-1).sum())


def history(run):
    """history.csv's columns as {name: [floats]}."""
    rows = (Path(run) / "history.csv").read_text().split()
    header, values = rows[0].split(","), [r.split(",") for r in rows[1:]]
    return {key: [float(v[i]) for v in values] for i, key in enumerate(header)}


def test_curves_png_is_redrawn_at_each_epoch_end(tiny_data, tmp_path):
    run = tmp_path / "run"
    png = run / "curves.png"
    seen = []

    def log(line):
        if line.startswith("Epoch 2/"):  # epoch 1 has ended: its curves are drawn
            seen.append((png.read_bytes(), curves.read_run(run).epochs))
        lines.append(line)

    lines = []
    train(alexnet_config(tiny_data, run, epochs=2), log=log)
    (after_one, epochs_then), after_two = seen[0], png.read_bytes()
    assert epochs_then == (1,) and curves.read_run(run).epochs == (1, 2)
    assert after_one != after_two
    width, height = (round(inches * curves.DPI) for inches in curves.FIGURE_SIZE)
    for data in (after_one, after_two):
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.size) == ("PNG", (width, height))
    # One run: five panels of the first colour, none of the second.
    assert pixels_of(png, FIRST) > 500 and pixels_of(png, SECOND) == 0
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".curves")) == []
    assert not any("cannot learn colour" in line for line in lines)  # tiny_data has colour


def test_without_the_plots_extra_training_says_so_once(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "plots", ("drawing curves", ("no_such_module_here",)))
    lines = []
    result = train(alexnet_config(tiny_data, tmp_path / "run", epochs=2), log=lines.append)
    assert result.epochs == 2 and not (tmp_path / "run" / "curves.png").exists()
    said = [line for line in lines if "'plots' extra" in line]
    assert said == ["No curves.png: drawing curves needs the 'plots' extra: "
                    "pip install 'keras_alexnet[plots]'"]  # fmt: skip


def test_plot_overlays_runs_with_their_settings(tiny_data, tmp_path):
    one = tmp_path / "towers1_nolrn"
    two = tmp_path / "paper"
    train(alexnet_config(tiny_data, one, towers=1, use_lrn=False), log=quiet)
    train(alexnet_config(tiny_data, two, pool="non_overlapping", epochs=2), log=quiet)
    output = tmp_path / "both.png"
    runs = plot.main(plot.get_args_parser().parse_args([str(one), str(two), "--output",
                                                        str(output)]))  # fmt: skip
    settings = f"width 1/16, lr 0.01, data {tiny_data.name}"
    assert [r.label for r in runs] == [
        f"towers1_nolrn (1 tower, no LRN, overlapping pool, {settings})",
        f"paper (2 towers, LRN, non-overlapping pool, {settings})",
    ]
    for run, path in zip(runs, (one, two), strict=True):
        recorded = history(path)
        assert list(run.epochs) == recorded["epoch"]
        for key in curves.SERIES:
            assert list(run.series[key]) == pytest.approx(recorded[key])
    # Both drawn: the 1-epoch run as markers (one per panel and the legend), the other as lines.
    assert pixels_of(output, FIRST) > 50 and pixels_of(output, SECOND) > 500
    with pytest.raises(FileNotFoundError, match="no history.csv"):
        curves.read_run(tmp_path)


@pytest.fixture(scope="module")
def grey_data(tiny_data, tmp_path_factory):
    """tiny_data with R = G = B at every pixel: no colour for conv1 to learn."""
    root = tmp_path_factory.mktemp("grey")
    for png in tiny_data.rglob("*.png"):
        target = root / png.relative_to(tiny_data)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(png).convert("L").convert("RGB").save(target)
    return root


def tensorboard_events(run):
    """{tag: [(step, tensor)]} of every summary in the run's TensorBoard files."""
    events = {}
    for path in sorted((Path(run) / "tensorboard").iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                events.setdefault(value.tag, []).append((event.step, tf.make_ndarray(value.tensor)))
    return events


def test_tensorboard_has_step_scalars_and_conv1_and_grey_data_is_named(grey_data, tmp_path):
    run = tmp_path / "run"
    lines = []
    config = alexnet_config(grey_data, run, steps_per_epoch=3, lr=0.005)
    train(config, log=lines.append)
    assert any(line.endswith("the data is grey, conv1 cannot learn colour from it")
               for line in lines)  # fmt: skip
    events = tensorboard_events(run)
    losses = events["step/loss"]
    assert [step for step, _ in losses] == [1, 2, 3]
    # The epoch's loss is the mean of its steps' losses.
    assert np.mean([float(v) for _, v in losses]) == pytest.approx(history(run)["loss"][0], 1e-5)
    assert [float(v) for _, v in events["step/lr"]] == pytest.approx([0.005] * 3)
    [(step, image)] = events["conv1"]
    assert step == 1
    width, height, encoded = image
    # One epoch: best.keras is that epoch's model; the summary is its conv1 as Figure 3.
    conv1 = filters.conv1_kernels(keras.saving.load_model(run / "best.keras"))
    expected = filters.conv1_picture(conv1.kernels, conv1.towers)
    picture = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
    assert (int(width), int(height)) == (expected.shape[1], expected.shape[0])
    np.testing.assert_array_equal(picture, expected)
    assert conv1.towers == 2 and conv1.kernels.shape == (11, 11, 3, 6)
