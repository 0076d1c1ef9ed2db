"""Model families as data: the registry, model_args, the light commands, old run directories."""

import dataclasses
import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import keras_alexnet
from keras_alexnet import cli, registry
from keras_alexnet.commands import COMMANDS
from keras_alexnet.commands import summary as summary_command
from keras_alexnet.commands import train as train_command
from keras_alexnet.metadata import Metadata
from keras_alexnet.models import build_model
from keras_alexnet.train_config import TrainConfig, TrainingError, check_config

OLD_RUNS = Path(__file__).parent / "data" / "runs_v0.1.0"  # written by 0.1.0 (README there)
OLD_ALEXNET = {"towers": 1, "use_lrn": False, "pool": "non_overlapping"}


def quiet(*_):
    """A log that drops its lines."""


def test_every_commands_parser_and_the_package_load_without_keras_or_tensorflow():
    code = (
        "import sys, importlib, keras_alexnet\n"
        "from keras_alexnet.commands import COMMANDS\n"
        "keras_alexnet.list_models(); keras_alexnet.get_spec('vgg16')\n"
        "for name in COMMANDS:\n"
        "    importlib.import_module(f'keras_alexnet.commands.{name}').get_args_parser()\n"
        "heavy = sorted(m for m in ('keras', 'tensorflow', 'torch', 'jax') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_models_package_does_not_import_the_weight_importer():
    code = (
        "import sys, keras_alexnet.models\n"
        "print(sorted(m for m in sys.modules if m.startswith('keras_alexnet.weights')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_top_level_api_names_the_modules_functions():
    from keras_alexnet import api, evaluation, runtime, train_config, training

    assert keras_alexnet.build_model is api.build_model
    assert keras_alexnet.load is runtime.load
    assert keras_alexnet.evaluate is evaluation.evaluate
    assert keras_alexnet.train is training.train
    assert keras_alexnet.TrainConfig is train_config.TrainConfig
    assert keras_alexnet.Metadata is Metadata
    assert keras_alexnet.list_models() == list(registry.MODELS)
    assert set(keras_alexnet.API) <= set(dir(keras_alexnet))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        keras_alexnet.nope  # noqa: B018


@pytest.mark.parametrize("family", list(registry.FAMILIES.values()), ids=lambda f: f.name)
def test_a_familys_options_are_its_builders_arguments_with_their_defaults(family):
    signature = inspect.signature(family.load_builder()).parameters
    for option in family.options:
        assert option.name in signature, option.name
        assert signature[option.name].default == option.default, option.name


@pytest.mark.parametrize("name", registry.MODEL_NAMES)
def test_every_row_builds_its_family_at_the_rows_input(name):
    spec = registry.get_spec(name)
    small = spec.family_spec.smallest_input
    model = build_model(name, width=1 / 16, input_shape=(small, small, 3), classes=3)
    assert model.name == name and model.output.shape == (None, 3)
    assert build_model(name, width=1 / 16).input.shape == (
        None,
        spec.input_size,
        spec.input_size,
        3,
    )


def test_an_option_of_another_family_is_refused_in_one_line_everywhere(capsys):
    for value in (1, 2):  # towers 1 for a VGG was accepted by build_model, refused by summary
        with pytest.raises(ValueError, match=r"^towers \(--towers\) applies to alexnet only"):
            build_model("vgg16", towers=value)
    config = TrainConfig(model="vgg_a", model_args={"pool": "non_overlapping"})
    with pytest.raises(TrainingError, match=r"^pool \(--pool\) applies to alexnet only"):
        check_config(config.resolved(registry.get_spec("vgg_a")))
    for argv in (["--model", "vgg16", "--towers", "1"], ["--model", "vgg_b", "--no-lrn"]):
        with pytest.raises(SystemExit) as exit_:
            cli.run(summary_command.main, summary_command.get_args_parser(), argv, name="summary")
        assert exit_.value.code == 1
        line = capsys.readouterr().err
        assert line.count("\n") == 1 and "applies to alexnet only, not to vgg models" in line


def test_an_option_value_is_checked_by_the_registry():
    alexnet = registry.FAMILIES["alexnet"]
    assert alexnet.resolve({"towers": None, "pool": "non_overlapping"}) == {
        "towers": 2, "use_lrn": True, "pool": "non_overlapping",
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"pool \(--pool\) must be one of overlapping, non_o"):
        alexnet.resolve({"pool": "max"})
    with pytest.raises(ValueError, match=r"towers \(--towers\) must be an integer >= 1"):
        alexnet.resolve({"towers": 0})
    with pytest.raises(ValueError, match="conv2 has 256 filters at width 1, .* 3 towers"):
        alexnet.check_args(alexnet.resolve({"towers": 3}))


def test_the_train_commands_flags_come_from_the_options():
    parser = train_command.get_args_parser()
    args = vars(parser.parse_args(["--towers", "1", "--no-lrn", "--pool", "non_overlapping"]))
    assert cli.pop_model_options(args) == OLD_ALEXNET
    assert not set(OLD_ALEXNET) & set(args)  # the rest is TrainConfig's fields
    TrainConfig(**args)
    assert cli.pop_model_options(vars(parser.parse_args([]))) == {}
    text = parser.format_help()
    for option in registry.all_options():
        assert option.flag in text
    assert "Section 3.3" in text and "Section 3.4" in text


def test_metadata_of_0_1_0_folds_its_alexnet_fields_into_model_args():
    written = json.loads((OLD_RUNS / "alexnet_experiments" / "metadata.json").read_text())
    assert written["towers"] == 1 and written["model_args"] == {"width": 0.0625}
    metadata = Metadata.from_json(written)
    assert metadata.architecture() == {**OLD_ALEXNET, "width": 0.0625}
    assert Metadata.from_json(metadata.to_json()) == metadata
    assert "towers" not in metadata.to_json()
    vgg = Metadata.load(OLD_RUNS / "vgg_a" / "metadata.json")
    assert vgg.architecture() == {"width": 0.0625}


def old_run(name, tmp_path):
    """A copy of a run directory written by 0.1.0."""
    return Path(shutil.copytree(OLD_RUNS / name, tmp_path / name))


def resume(run, **changes):
    """TrainConfig resuming a 0.1.0 run one epoch further on the demo set."""
    base = dict(width=0.0625, epochs=2, steps_per_epoch=2, val_steps=1, output=str(run))
    return TrainConfig(**{**base, **changes})


def test_a_run_directory_of_0_1_0_loads_and_resumes(tmp_path):
    from keras_alexnet import runtime
    from keras_alexnet.layers import LocalResponseNormalization
    from keras_alexnet.training import train

    run = old_run("alexnet_experiments", tmp_path)
    loaded = runtime.load(run)
    assert loaded.metadata.architecture() == {**OLD_ALEXNET, "width": 0.0625}
    with pytest.raises(TrainingError, match=f"^{run} is a run with `towers` 1, not 2"):
        train(resume(run, model="alexnet"), log=quiet)
    with pytest.raises(TrainingError, match=r"LRN \(`use_lrn`\) off, not on"):
        train(resume(run, model="alexnet", model_args={"towers": 1}), log=quiet)
    result = train(resume(run, model="alexnet", model_args=OLD_ALEXNET), log=quiet)
    assert (result.epochs, result.already_finished) == (2, False)
    assert Metadata.load(run / "metadata.json").architecture() == loaded.metadata.architecture()
    model = runtime.load_keras_model(run)[0]
    assert not [layer for layer in model.layers if isinstance(layer, LocalResponseNormalization)]
    assert model.get_layer("pool1").pool_size == (2, 2)
    vgg = old_run("vgg_a", tmp_path)
    assert train(resume(vgg, model="vgg_a"), log=quiet).epochs == 2


def test_a_config_round_trips_through_command_json_fields():
    spec = registry.get_spec("alexnet")
    config = TrainConfig(model_args={"towers": 4}).resolved(spec)
    assert config.model_args == {"towers": 4, "use_lrn": True, "pool": "overlapping"}
    as_json = json.loads(json.dumps(dataclasses.asdict(config)))
    assert TrainConfig(**{**as_json, "resize": tuple(as_json["resize"])}) == config
    assert set(COMMANDS) >= {"train", "summary", "prepare", "import_weights"}
