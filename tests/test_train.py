"""Training: the update rule, the command's one-line checks, fine-tuning, recipes, reports."""

import contextlib
import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, TRAIN_FLAGS, history_epochs, run_train

from keras_alexnet import layers  # noqa: F401  (registers the custom layers for load_model)
from keras_alexnet.finetune import init_from_net_a
from keras_alexnet.metadata import Metadata
from keras_alexnet.optim import coupled_weight_decay, make_train_step
from keras_alexnet.rundir import RunLock
from keras_alexnet.training import TrainConfig, TrainingError, train


def test_sgd_step_is_the_papers_update_rule():
    # AlexNet Section 5: v <- 0.9 v - 0.0005 lr w - lr grad; w <- w + v.
    lr, wd, mu = 0.1, 0.0005, 0.9
    w = keras.Variable(np.array([[1.0, -2.0], [0.5, 3.0]], "float32"), name="kernel")
    b = keras.Variable(np.array([0.3, -0.1], "float32"), name="bias")
    optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=mu)
    grads = [np.array([[0.2, 0.1], [-0.3, 0.4]], "float32"), np.array([1.0, -1.0], "float32")]
    w_ref, b_ref = np.array(w.numpy()), np.array(b.numpy())
    v_w, v_b = np.zeros_like(w_ref), np.zeros_like(b_ref)
    for _ in range(3):
        decayed = coupled_weight_decay([tf.constant(g) for g in grads], [w, b], wd)
        optimizer.apply_gradients(zip(decayed, [w, b], strict=True))
        v_w = mu * v_w - wd * lr * w_ref - lr * grads[0]
        w_ref = w_ref + v_w
        v_b = mu * v_b - lr * grads[1]  # biases are not decayed
        b_ref = b_ref + v_b
    np.testing.assert_allclose(w.numpy(), w_ref, rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), b_ref, rtol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("loss_scaling", [False, True])
def test_train_step_is_cross_entropy_on_logits_with_the_papers_update(loss_scaling, jit_compile):
    # The whole replica step against NumPy: softmax cross-entropy gradient of a linear
    # layer, the L2 term coupled into the momentum, and (mixed precision) loss scaling.
    lr, wd, mu, batch = 0.1, 0.01, 0.9, 4
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 3)).astype("float32")
    y = np.array([0, 2, 1, 2], "int32")
    w, b = rng.normal(size=(3, 3)).astype("float32"), rng.normal(size=3).astype("float32")
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(3, kernel_initializer=keras.initializers.Constant(w),
                               bias_initializer=keras.initializers.Constant(b))  # fmt: skip
    model = keras.Model(inputs, dense(inputs))
    optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=mu)
    if loss_scaling:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=1024.0)
    optimizer.build(model.trainable_variables)
    step = make_train_step(
        tf.distribute.get_strategy(), model, optimizer, batch, wd, loss_scaling, jit_compile
    )
    v_w, v_b = np.zeros_like(w), np.zeros_like(b)
    for _ in range(3):
        logits = x @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        expected_loss = -np.log(p[np.arange(batch), y]).sum()
        delta = (p - np.eye(3)[y]) / batch
        loss_sum, hits = step(tf.constant(x), tf.constant(y))
        np.testing.assert_allclose(float(loss_sum), expected_loss, rtol=1e-5)
        assert float(hits) == float((logits.argmax(1) == y).sum())
        v_w = mu * v_w - wd * lr * w - lr * (x.T @ delta)
        v_b = mu * v_b - lr * delta.sum(0)  # biases are not decayed
        w, b = w + v_w, b + v_b
    np.testing.assert_allclose(dense.kernel.numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.bias.numpy(), b, rtol=1e-5, atol=1e-6)


def test_an_xla_compiled_alexnet_step_equals_the_graph_step():
    # Grouped convolutions and LRN within towers, compiled by XLA. (Not dropout: the same
    # seeds draw other masks under XLA, so its masks differ from the graph's.)
    from keras_alexnet.models import build_model

    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (4, 67, 67, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 3, 4).astype("int32"))
    weights = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(0)
        model = build_model(
            "alexnet", input_shape=(67, 67, 3), width=0.125, classes=3, seed=0, init="he",
            classifier_activation=None, scale=1 / 127.5, dropout=0.0,
        )  # fmt: skip
        start = [w.copy() for w in model.get_weights()]
        optimizer = keras.optimizers.SGD(0.001, momentum=0.9)
        optimizer.build(model.trainable_variables)
        step = make_train_step(
            tf.distribute.get_strategy(), model, optimizer, 4, 5e-4, jit_compile=jit_compile
        )
        losses = [float(step(x, y)[0]) for _ in range(2)]
        weights.append((losses, model.get_weights()))
    (graph_losses, graph), (xla_losses, xla) = weights
    np.testing.assert_allclose(xla_losses, graph_losses, rtol=1e-4)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(graph, start, strict=True))
    gap = max(float(np.abs(a - b).max()) for a, b in zip(graph, xla, strict=True))
    assert moved > 1e-3 and gap < 1e-3 * moved


def test_bad_arguments_are_one_line_errors(tmp_path):
    out = run_train(["--model", "vgg_a", "--image-size", "300"], cache=tmp_path / "c")
    assert out.returncode != 0 and "larger than the resize size" in out.stderr
    assert "Traceback" not in out.stderr
    odd = run_train([*TRAIN_FLAGS[:-8], "--batch-size", "7", "--strategy", "mirrored",
                     "--output", str(tmp_path / "r")], cache=tmp_path / "c")  # fmt: skip
    assert odd.returncode != 0 and "does not split evenly over 2 replicas" in odd.stderr
    assert "Traceback" not in odd.stderr


def test_the_python_api_names_the_config_field_and_the_command_its_flag(
    tiny_data, tmp_path, capsys
):
    from keras_alexnet import cli
    from keras_alexnet.commands import train as command

    run = tmp_path / "run"
    with pytest.raises(TrainingError) as error:
        train(tiny_config(tiny_data, run, batch_size=64), log=lambda *a: None)
    assert str(error.value).endswith("make no batch of 64; lower `batch_size`")
    assert "--" not in str(error.value)
    argv = [*TRAIN_FLAGS, "--batch-size", "64", "--data", str(tiny_data), "--output", str(run)]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(command.main, command.get_args_parser(), argv, name="train")
    assert exit_info.value.code == 1
    line = capsys.readouterr().err
    assert line.startswith("train: error: ") and line.endswith("lower --batch-size\n")
    assert not run.exists()


def tiny_config(data, output, **changes):
    """A tiny VGG A run on `data` through the Python API."""
    base = dict(model="vgg_a", data=str(data), width=0.0625, image_size=32, resize=(36, 36),
                batch_size=8, init="he", scale=0.0078, output=str(output),
                cache=str(Path(output).parent / "cache"), epochs=1)  # fmt: skip
    return TrainConfig(**{**base, **changes})


def test_a_finished_run_says_so_and_a_larger_epochs_continues_it(tiny_data, tmp_path, capsys):
    from keras_alexnet import cli
    from keras_alexnet.commands import train as command

    config = tiny_config(tiny_data, tmp_path / "run")
    first = train(config, log=lambda *a: None)
    assert first.epochs == 1 and not first.already_finished
    assert first.best_model == tmp_path / "run" / "best.keras" and first.best_model.exists()
    lines = []
    again = train(config, log=lines.append)
    assert again.already_finished and again.epochs == 1 and again.best_model == first.best_model
    assert again.val_top1 == pytest.approx(first.val_top1, abs=1e-6)
    finished = (
        f"{tmp_path / 'run'} has already finished 1 epoch; its best model is {first.best_model}"
    )
    assert lines == [f"{finished}. Pass a larger `epochs` to continue it."]
    # The command's log names the flag instead.
    argv = [*TRAIN_FLAGS, "--data", str(tiny_data), "--epochs", "1", "--output",
            str(tmp_path / "run"), "--cache", config.cache]  # fmt: skip
    capsys.readouterr()
    cli.run(command.main, command.get_args_parser(), argv, name="train")
    assert f"{finished}. Pass a larger --epochs to continue it.\n" in capsys.readouterr().out
    more = train(dataclasses.replace(config, epochs=2), log=lambda *a: None)
    assert more.epochs == 2 and not more.already_finished
    assert history_epochs(tmp_path / "run") == [1, 2]
    # Trained with reflections (the default for real data): the paper's protocol.
    assert Metadata.load(tmp_path / "run" / "metadata.json").protocol == "dense"


def test_bf16_on_a_cpu_without_native_bf16_says_it_is_emulated(tiny_data, tmp_path, monkeypatch):
    from keras_alexnet import hardware

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    lines = []
    config = tiny_config(tiny_data, tmp_path / "run", precision="mixed_bfloat16",
                         steps_per_epoch=1, val_steps=1)  # fmt: skip
    assert train(config, log=lines.append).epochs == 1
    assert hardware.bf16_warning("mixed_bfloat16", False, {"avx2"}) in lines
    assert keras.mixed_precision.global_policy().name == "float32"  # the caller's, restored


@pytest.mark.parametrize(
    ("change", "message"),
    [({"model": "vgg_b"}, "`model` vgg_a, not vgg_b"),
     ({"width": 0.125}, "`width` 0.0625, not 0.125"),
     ({"precision": "mixed_bfloat16"}, "`precision` float32, not mixed_bfloat16")],
)  # fmt: skip
def test_a_run_directory_of_another_config_is_one_line(tiny_data, tmp_path, change, message):
    config = tiny_config(tiny_data, tmp_path / "run")
    train(config, log=lambda *a: None)
    with pytest.raises(TrainingError, match=message) as error:
        train(dataclasses.replace(config, epochs=2, **change), log=lambda *a: None)
    assert "\n" not in str(error.value)


def test_a_second_training_into_the_same_run_directory_is_refused(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "run")
    with RunLock(tmp_path / "run"):  # another training holds the directory
        with pytest.raises(TrainingError, match="in use by another training"):
            train(config, log=lambda *a: None)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert train(config, log=lambda *a: None).epochs == 1  # free again


@pytest.mark.parametrize("source", ["folders", "prepared"])
def test_an_epoch_resumed_mid_way_reports_the_whole_epoch(tiny_data, tmp_path, monkeypatch, source):
    data = tiny_data
    if source == "prepared":  # at the training scale: the crops are decoded directly
        from keras_alexnet.data.prepared import prepare

        data = tmp_path / "prepared"
        prepare(tiny_data, data, model="vgg_a", size=36, log=lambda *a: None)
    config = tiny_config(data, tmp_path / "whole", deterministic=True, checkpoint_every=1)
    train(config, log=lambda *a: None)
    saves = []
    original = tf.train.CheckpointManager.save

    def save_then_die(self, *args, **kwargs):  # killed right after the step-2 checkpoint
        path = original(self, *args, **kwargs)
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt
        return path

    cut = dataclasses.replace(config, output=str(tmp_path / "cut"))
    monkeypatch.setattr(tf.train.CheckpointManager, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cut, log=lambda *a: None)
    monkeypatch.setattr(tf.train.CheckpointManager, "save", original)
    lines = []
    train(cut, log=lines.append)
    assert lines[0].startswith("Resumed from") and "step 2 of 4" in lines[0]
    whole, resumed = (list(csv.DictReader(open(tmp_path / d / "history.csv"))) for d in
                      ("whole", "cut"))  # fmt: skip
    for key in ("loss", "top1", "val_top1"):
        assert float(resumed[0][key]) == pytest.approx(float(whole[0][key]), rel=1e-5), key


def test_init_from_copies_net_as_first_four_convs_and_fc_layers(tiny_data, tmp_path):
    from keras_alexnet.models import build_model
    from keras_alexnet.runtime import load_keras_model

    train(tiny_config(tiny_data, tmp_path / "a"), log=lambda *a: None)
    net_a, _ = load_keras_model(tmp_path / "a")
    net_d = build_model("vgg_d", classes=2, input_shape=(32, 32, 3), width=0.0625, seed=1)
    before = {layer.name: layer.get_weights() for layer in net_d.layers}
    copied = init_from_net_a(net_d, tmp_path / "a", log=lambda *a: None)
    expected = ["block1_conv1", "block2_conv1", "block3_conv1", "block3_conv2",
                "fc1", "fc2", "predictions"]  # fmt: skip
    assert copied == expected
    for layer in net_d.layers:
        weights = layer.get_weights()
        if layer.name in expected:
            theirs_all = net_a.get_layer(layer.name).get_weights()
            for ours, theirs in zip(weights, theirs_all, strict=True):
                np.testing.assert_array_equal(ours, theirs)
        elif weights:  # every other layer keeps its own initialisation
            for now, then in zip(weights, before[layer.name], strict=True):
                np.testing.assert_array_equal(now, then)
    # Through training: the run starts from net A and records where from.
    config = tiny_config(tiny_data, tmp_path / "d", model="vgg_d", init_from=str(tmp_path / "a"))
    lines = []
    assert train(config, log=lines.append).epochs == 1
    assert any(line.startswith("Initialised block1_conv1") for line in lines)
    recorded = json.loads((tmp_path / "d" / "command.json").read_text())["config"]
    assert recorded["init_from"] == str(tmp_path / "a")
    wrong = tiny_config(tiny_data, tmp_path / "e", model="vgg_b", init_from=str(tmp_path / "d"))
    with pytest.raises(TrainingError, match="needs a trained VGG A; .* is vgg_d"):
        train(wrong, log=lambda *a: None)


def test_a_train_tree_without_val_holds_out_a_validation_split(tiny_data, tmp_path):
    import shutil

    shutil.copytree(tiny_data / "train", tmp_path / "data" / "train")  # no val/
    lines = []
    result = train(tiny_config(tmp_path / "data", tmp_path / "run"), log=lines.append)
    val = [line for line in lines if "val top-1" in line]
    assert val and "nan" not in val[0]
    assert result.best_model is not None and result.best_model.exists()
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert float(rows[0]["val_top1"]) >= 0 and rows[0]["lr"] == "0.01"


@pytest.mark.parametrize(
    "flags",
    [["--lr", "nan"], ["--lr", "inf"], ["--width", "0"], ["--width", "-1"],
     ["--weight-decay", "-1"], ["--plateau-patience", "0"], ["--max-lr-drops", "-1"],
     ["--step-epochs", "0"], ["--steps-per-epoch", "-1"], ["--val-fraction", "1"],
     ["--precision", "float8"]],
)  # fmt: skip
def test_bad_flag_values_are_one_line_errors(flags, capsys):
    from keras_alexnet import cli
    from scripts import train as train_script

    with pytest.raises(SystemExit) as exit_:
        cli.run(train_script.main, train_script.get_args_parser(), flags)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {flags[0]}" in err, err


def test_flag_checks_hold_for_the_python_api_too(tiny_data, tmp_path):
    for change in ({"lr": float("nan")}, {"step_epochs": 0}, {"momentum": 1.0}):
        with pytest.raises(TrainingError, match="must be"):
            train(tiny_config(tiny_data, tmp_path / "run", **change), log=lambda *a: None)


def _layer_weights(path):
    from keras_alexnet.runtime import load_keras_model

    model, _ = load_keras_model(path)
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def test_weights_fine_tunes_from_a_run_keeping_its_normalisation(tiny_data, tmp_path):
    import shutil

    train(tiny_config(tiny_data, tmp_path / "a", scale=0.01), log=lambda *a: None)
    # A third class: the head is re-initialised, everything else starts from run a.
    three = tmp_path / "three"
    shutil.copytree(tiny_data, three)
    for split in ("train", "val"):
        shutil.copytree(three / split / "dark", three / split / "mid")
    lines = []
    config = tiny_config(three, tmp_path / "b", weights=str(tmp_path / "a"), lr=1e-9, scale=0.5)
    assert train(config, log=lines.append).epochs == 1
    assert any(line.startswith(f"Started from {tmp_path / 'a'}") for line in lines)
    a, b = _layer_weights(tmp_path / "a"), _layer_weights(tmp_path / "b")
    for name in a:
        if name == "predictions":
            assert a[name][0].shape[-1] == 2 and b[name][0].shape[-1] == 3
            continue
        for ours, theirs in zip(b[name], a[name], strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7, err_msg=name)
    meta_a = Metadata.load(tmp_path / "a" / "metadata.json")
    meta_b = Metadata.load(tmp_path / "b" / "metadata.json")
    assert (meta_b.mean, meta_b.scale) == (meta_a.mean, meta_a.scale) != (meta_b.mean, 0.5)
    assert len(meta_b.class_names) == 3


def test_freeze_up_to_keeps_those_layers_and_trains_the_rest(tiny_data, tmp_path):
    train(tiny_config(tiny_data, tmp_path / "a"), log=lambda *a: None)
    config = tiny_config(tiny_data, tmp_path / "b", weights=str(tmp_path / "a"),
                         freeze_up_to="block3_conv2", lr=0.05)  # fmt: skip
    train(config, log=lambda *a: None)
    a, b = _layer_weights(tmp_path / "a"), _layer_weights(tmp_path / "b")
    frozen = ["block1_conv1", "block2_conv1", "block3_conv1", "block3_conv2"]
    for name in a:
        same = all(np.array_equal(x, y) for x, y in zip(a[name], b[name], strict=True))
        assert same == (name in frozen), name
    wrong = tiny_config(tiny_data, tmp_path / "c", freeze_up_to="conv9")
    with pytest.raises(TrainingError, match="has no layer 'conv9'"):
        train(wrong, log=lambda *a: None)
    both = tiny_config(tiny_data, tmp_path / "d", weights="x", init_from="y")
    with pytest.raises(TrainingError, match="pick one"):
        train(both, log=lambda *a: None)


# ------------------------------------------------- recipes, warnings, the last line


def colour_photo(rng, label, size=64):
    """A generated colour photo of class `label`: warm waves, green stripes or blue checks."""
    y, x = np.mgrid[0:size, 0:size] / size
    if label == 0:
        tint, texture = (60, 0, -50), np.sin(2 * np.pi * (x * rng.uniform(1, 2) + rng.uniform()))
    elif label == 1:
        tint = (-40, 50, -20)
        texture = np.sign(np.sin(2 * np.pi * (y * rng.uniform(5, 8) + rng.uniform())))
    else:
        tint, f = (-40, -10, 60), rng.uniform(4, 7)
        texture = np.sign(np.sin(2 * np.pi * x * f + rng.uniform(0, 6))) * np.sign(
            np.sin(2 * np.pi * y * f)
        )
    pixels = rng.uniform(90, 170, 3) + np.array(tint) + 40 * texture[..., None]
    pixels = pixels + rng.normal(0, 20, (size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def colour_photos(tmp_path_factory):
    """Three classes of generated colour JPEGs, differing in colour and texture: 40 + 10 each."""
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("val", 10)):
        for label, name in enumerate(("warm", "green", "blue")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(colour_photo(rng, label)).save(folder / f"{i}.jpg", quality=90)
    return root


def history_rows(losses, val_top1):
    """history.csv rows with these epoch losses and validation top-1s."""
    return [
        {"epoch": str(i + 1), "loss": str(loss), "val_top1": str(top1), "val_top5": "1.0"}
        for i, (loss, top1) in enumerate(zip(losses, val_top1, strict=True))
    ]


def test_progress_warning_names_divergence_and_chance_with_what_to_pass():
    from keras_alexnet.models import get_spec
    from keras_alexnet.training import progress_warning

    paper = TrainConfig(data="photos").resolved(get_spec("alexnet"))
    small = TrainConfig(data="photos", recipe="small").resolved(get_spec("alexnet"))
    tuned = TrainConfig(data="photos", weights="run").resolved(get_spec("alexnet"))
    # The run: 3 classes, loss 3.3 -> 8.5, validation at chance.
    climbing = history_rows([3.3, 8.5], [1 / 3, 1 / 3])
    line = progress_warning(climbing, 3, paper)
    assert line.startswith("Warning: after 2 epochs the loss climbed from 3.3 to 8.5")
    assert "pass `recipe` small" in line and "with `weights`" in line and "\n" not in line
    assert "--" not in line
    flat = progress_warning(history_rows([1.10, 1.09, 1.10], [0.33, 0.36, 0.30]), 3, paper)
    assert "validation top-1 is at chance (36.0%, chance 33.3%)" in flat
    assert "Caffe" in flat and "`recipe` small" in flat
    # Already on the small recipe, or fine-tuning: the advice is the rate, not the recipe.
    assert "`recipe` small" not in progress_warning(climbing, 3, small)
    assert "lower `lr`" in progress_warning(climbing, 3, tuned)
    # The train command's log names the flags (cli.flag_log).
    from keras_alexnet import cli
    from keras_alexnet.commands import train as command

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        cli.flag_log(command.get_args_parser())(line)
    assert "pass --recipe small" in printed.getvalue() and "with --weights" in printed.getvalue()
    assert "is nan" in progress_warning(history_rows([2.0, float("nan")], [0.5, 0.5]), 3, paper)
    # Not judged after one epoch; a run that learns, or whose loss only wobbles, is quiet.
    assert progress_warning(climbing[:1], 3, paper) is None
    assert progress_warning(history_rows([1.1, 0.9], [0.33, 0.45]), 3, paper) is None
    assert progress_warning(history_rows([1.0, 1.4], [0.6, 0.7]), 3, paper) is None
    # 1000 classes: 4 % is at chance + 5 points, 6 % is above it.
    at_chance = progress_warning(history_rows([6.9, 6.9], [0.01, 0.04]), 1000, paper)
    assert "validation top-1 is at chance (4.0%, chance 0.1%)" in at_chance
    assert progress_warning(history_rows([6.9, 6.9], [0.01, 0.06]), 1000, paper) is None


def test_recipes_fill_only_what_no_flag_gave():
    from keras_alexnet.models import get_spec
    from keras_alexnet.train_config import FINE_TUNE_LR, PAPER_LR

    alexnet, vgg = get_spec("alexnet"), get_spec("vgg_a")
    paper = TrainConfig(data="photos").resolved(alexnet)
    assert (paper.recipe, paper.init, paper.scale, paper.image_size, paper.resize) == (
        "paper", "paper", 1.0, 227, (256, 256)
    )  # fmt: skip
    assert (paper.batch_size, paper.epochs, paper.flip, paper.lr) == (128, 90, True, PAPER_LR)
    small = TrainConfig(data="photos", recipe="small").resolved(alexnet)
    assert (small.init, small.scale, small.image_size, small.resize, small.batch_size) == (
        "he", 1 / 127.5, 67, (76, 76), 32
    )  # fmt: skip
    assert (small.epochs, small.flip, small.lr) == (90, True, PAPER_LR)  # the paper's stay
    vgg_small = TrainConfig(data="photos", recipe="small").resolved(vgg)
    assert (vgg_small.image_size, vgg_small.resize) == (32, (36, 36))
    # The demo is the small recipe plus its own two departures.
    demo = TrainConfig().resolved(alexnet)
    assert demo.recipe == "small"
    assert dataclasses.replace(demo, flip=True, epochs=90, data="photos") == dataclasses.replace(
        small, data="photos"
    )
    assert (demo.flip, demo.epochs) == (False, 4)
    given = TrainConfig(data="photos", recipe="small", init="glorot", batch_size=8).resolved(vgg)
    assert (given.init, given.batch_size, given.scale) == ("glorot", 8, 1 / 127.5)
    # Fine-tuning starts at a tenth of the paper's rate, unless --lr says otherwise.
    assert TrainConfig(data="photos", weights="run").resolved(alexnet).lr == FINE_TUNE_LR == 0.001
    assert TrainConfig(data="photos", weights="run", lr=0.05).resolved(alexnet).lr == 0.05
    with pytest.raises(TrainingError, match="`recipe` must be one of paper, small"):
        train(TrainConfig(data="photos", recipe="tiny"), log=lambda *a: None)


def test_the_paper_recipe_on_a_small_photo_set_says_so_and_the_small_recipe_learns(
    colour_photos, tmp_path
):
    # The case at a CPU's size: the paper's recipe on a few photos, 3 classes.
    lines = []
    paper = TrainConfig(
        model="alexnet", data=str(colour_photos), image_size=67, resize=(76, 76), batch_size=30,
        epochs=2, output=str(tmp_path / "paper"), cache=str(tmp_path / "cache"),
    )  # fmt: skip
    train(paper, log=lines.append)
    warnings = [line for line in lines if line.startswith("Warning:")]
    assert len(warnings) == 1 and "`recipe` small" in warnings[0], lines
    assert lines.index(warnings[0]) > lines.index("Epoch 2/2 (lr 0.01)")
    rows = list(csv.DictReader(open(tmp_path / "paper" / "history.csv")))
    assert max(float(r["val_top1"]) for r in rows) <= 1 / 3 + 0.05  # it was at chance
    # The same photos with --recipe small learn.
    lines = []
    small = TrainConfig(
        model="alexnet", data=str(colour_photos), recipe="small", epochs=3,
        output=str(tmp_path / "small"), cache=str(tmp_path / "cache"),
    )  # fmt: skip
    result = train(small, log=lines.append)
    assert result.best_val_top1 >= 0.8, lines
    assert not [line for line in lines if line.startswith("Warning:")]
    config = json.loads((tmp_path / "small" / "command.json").read_text())["config"]
    assert (config["recipe"], config["init"], config["image_size"], config["flip"]) == (
        "small", "he", 67, True
    )  # fmt: skip


def test_a_scale_the_prepared_data_cannot_give_is_refused_before_the_run_directory(
    tiny_data, tmp_path
):
    # The issue's `--model vgg_a --data PREPARED_ALEXNET_SET --resize 256,512`, at 36 / 48.
    from keras_alexnet.data.prepared import prepare

    prepared = tmp_path / "prepared"
    prepare(tiny_data, prepared, model="alexnet", size=36, log=lambda *a: None)
    run, lines = tmp_path / "run", []
    jittered = tiny_config(prepared, run, resize=(36, 48))
    with pytest.raises(TrainingError) as error:
        train(jittered, log=lines.append)
    message = str(error.value)
    assert message.startswith("`resize` 36,48: ") and "prepared at shorter side 36" in message
    assert "keras-alexnet-prepare --model vgg_a" in message and "\n" not in message
    assert not any(line.startswith("Epoch") for line in lines)
    assert not run.exists()  # nothing that refuses the corrected command
    assert train(tiny_config(prepared, run), log=lambda *a: None).epochs == 1


def test_weights_that_do_not_fit_are_refused_before_the_run_directory(tiny_data, tmp_path):
    train(tiny_config(tiny_data, tmp_path / "a"), log=lambda *a: None)  # width 1/16
    run = tmp_path / "b"
    wider = tiny_config(tiny_data, run, weights=str(tmp_path / "a"), width=0.125)
    with pytest.raises(TrainingError, match="`weights`") as error:
        train(wider, log=lambda *a: None)
    assert "\n" not in str(error.value)
    assert not run.exists()
    fitting = tiny_config(tiny_data, run, weights=str(tmp_path / "a"))
    assert train(fitting, log=lambda *a: None).epochs == 1


def test_fine_tuning_starts_at_a_tenth_of_the_rate_and_a_resume_keeps_it(tiny_data, tmp_path):
    train(tiny_config(tiny_data, tmp_path / "a"), log=lambda *a: None)
    lines = []
    tuned = tiny_config(tiny_data, tmp_path / "b", weights=str(tmp_path / "a"), lr=None,
                        lr_schedule="step")  # fmt: skip
    train(tuned, log=lines.append)
    started = (
        "Fine-tuning from `weights`: lr 0.001, a tenth of the paper's 0.01 (`lr` sets another)"
    )
    assert started in lines
    assert "Epoch 1/1 (lr 0.001)" in lines
    # Resumed without --lr (and without --weights, which a resume does not read): still 0.001.
    resumed = dataclasses.replace(tuned, weights=None, epochs=2)
    train(resumed, log=lambda *a: None)
    rows = list(csv.DictReader(open(tmp_path / "b" / "history.csv")))
    assert [r["lr"] for r in rows] == ["0.001", "0.001"]
    given = tiny_config(tiny_data, tmp_path / "c", weights=str(tmp_path / "a"), lr=0.02)
    lines = []
    train(given, log=lines.append)
    assert "Epoch 1/1 (lr 0.02)" in lines and not any("Fine-tuning" in x for x in lines)


def test_the_last_line_names_the_best_epochs_figures_beside_best_keras(
    tiny_data, tmp_path, capsys, monkeypatch
):
    from keras_alexnet import cli
    from scripts import train as train_script

    run = tmp_path / "run"
    flags = [*TRAIN_FLAGS, "--data", str(tiny_data), "--epochs", "3", "--lr", "0.05", "--output",
             str(run)]  # fmt: skip
    monkeypatch.setenv("KERAS_ALEXNET_CACHE", str(tmp_path / "cache"))
    cli.run(train_script.main, train_script.get_args_parser(), flags)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    rows = list(csv.DictReader(open(run / "history.csv")))
    best = max(rows, key=lambda r: float(r["val_top1"]))  # the first best epoch: best.keras
    assert last.startswith("Finished 3 epochs in ")
    assert (
        f"last epoch val top-1 {float(rows[-1]['val_top1']):.2%}, "
        f"top-5 {float(rows[-1]['val_top5']):.2%}; best model {run / 'best.keras'} "
        f"(epoch {best['epoch']}: val top-1 {float(best['val_top1']):.2%}, "
        f"top-5 {float(best['val_top5']):.2%})"
    ) in last


@pytest.mark.slow
def test_bench_demo_reports_each_runs_best_and_last_epoch(tmp_path):
    # Two tiny runs of the demo command (seeds 0 and 1); the table against their history.csv.
    env = {**os.environ, "KERAS_ALEXNET_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_demo.py"), "--seeds", "0,1",
         "--precisions", "float32,mixed_bfloat16",
         "--no-write", "--work-dir", str(tmp_path / "w"), "--", "--epochs", "2",
         "--steps-per-epoch", "2", "--val-steps", "2", "--width", "0.0625"],
        env=env, capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    runs = enumerate([(p, s) for p in ("float32", "mixed_bfloat16") for s in (0, 1)], 1)
    for i, (precision, seed) in runs:
        run = tmp_path / "w" / f"run-{i}"
        history = list(csv.DictReader(open(run / "history.csv")))
        assert json.loads((run / "command.json").read_text())["config"]["precision"] == precision
        best = max(history, key=lambda r: float(r["val_top1"]))
        bests = 100 * float(best["val_top1"])
        lasts = 100 * float(history[-1]["val_top1"])
        expected = (f"| {i} | {precision} | {seed} | {bests:.2f} % (epoch {best['epoch']}) | "
                    f"{lasts:.2f} % | ")  # fmt: skip
        assert any(row.startswith(expected) for row in rows), (expected, rows)
    for first, precision in ((1, "float32"), (3, "mixed_bfloat16")):
        histories = [
            list(csv.DictReader(open(tmp_path / "w" / f"run-{i}" / "history.csv")))
            for i in (first, first + 1)
        ]
        bests = [100 * max(float(r["val_top1"]) for r in h) for h in histories]
        lasts = [100 * float(h[-1]["val_top1"]) for h in histories]
        summary = next(r for r in rows if r.startswith(f"| mean ± sd (min-max) | {precision} |"))
        assert f"{np.mean(bests):.1f} % ± {np.std(bests, ddof=1):.1f}" in summary
        assert f"{np.mean(lasts):.1f} % ± {np.std(lasts, ddof=1):.1f}" in summary
    assert (
        ", flags " in out.stdout  # the CPU's SIMD flags in the provenance line
        and "Command: `python scripts/train.py --model alexnet" in out.stdout
    )


def test_a_model_asked_for_by_its_alias_is_recorded_under_it_and_resumes_by_either_name(
    tiny_data, tmp_path
):
    from keras_alexnet.registry import get_spec

    assert TrainConfig(model="VGG11").resolved(get_spec("vgg11")).output == "runs/vgg11"
    config = tiny_config(tiny_data, tmp_path / "run", model="vgg11")
    train(config, log=lambda *a: None)
    assert Metadata.load(tmp_path / "run" / "metadata.json").model == "vgg11"
    more = train(dataclasses.replace(config, model="vgg_a", epochs=2), log=lambda *a: None)
    assert more.epochs == 2 and history_epochs(tmp_path / "run") == [1, 2]
