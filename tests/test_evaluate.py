"""Evaluation protocols against hand-cut crops, the FC-as-conv twin, top-k, and bad input."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import RESIZE, ROOT, SIZE, make_run

from keras_alexnet.data import load_source
from keras_alexnet.evaluation import EvaluationError, evaluate, near_ties, topk_correct
from keras_alexnet.metadata import Metadata
from keras_alexnet.models import build_model
from keras_alexnet.models.dense import fully_convolutional
from keras_alexnet.runtime import ModelPathError, resolve


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run") / "alexnet", steps=0)


def _val_images(count):
    """The first `count` validation digits, decoded, rescaled to RESIZE (shorter side)."""
    source = load_source(None)
    images = []
    for contents, _ in source.encoded("val").take(count):
        image = tf.io.decode_image(contents, channels=3, expand_animations=False)
        h, w = image.shape[:2]
        scale = RESIZE / min(h, w)
        shape = (max(RESIZE, round(h * scale)), max(RESIZE, round(w * scale)))
        images.append(tf.image.resize(image, shape, method="bilinear").numpy())
    return images


@pytest.mark.parametrize(
    "name, size, window", [("alexnet", 67, (1, 1)), ("alexnet", 99, (2, 2)), ("vgg_c", 64, (2, 2))]
)
def test_fc_as_conv_twin_equals_model_on_a_crop_of_the_input_size(name, size, window):
    model = build_model(
        name, classes=7, input_shape=(size, size, 3), width=1 / 16, seed=1, init="glorot",
        mean=(120.0, 110.0, 100.0), scale=1 / 128,
    )  # fmt: skip
    twin = fully_convolutional(model)
    first_fc = model.layers[[layer.name for layer in model.layers].index("flatten") + 1].name
    assert twin.get_layer(first_fc).kernel.shape[:2] == window  # fc6 / fc1 as an h x w conv
    x = np.random.default_rng(0).uniform(0, 255, (3, size, size, 3)).astype("float32")
    expected = model.predict_on_batch(x)
    np.testing.assert_allclose(twin.predict_on_batch(x), expected, rtol=1e-5, atol=1e-7)
    # A larger image gives a class score map, one softmax per position.
    big = np.random.default_rng(1).uniform(0, 255, (2, size + 64, size + 32, 3))
    score_map = fully_convolutional(model, average=False).predict_on_batch(big.astype("float32"))
    body = build_model(name, include_top=False, input_shape=big.shape[1:], width=1 / 16)
    h, w = body.output_shape[1:3]  # the last pool's map; fc6 slides its window over it
    assert score_map.shape == (2, h - window[0] + 1, w - window[1] + 1, 7)
    assert score_map.shape[1] * score_map.shape[2] > 1
    np.testing.assert_allclose(score_map.sum(-1), 1.0, rtol=1e-5)


def test_ten_crop_equals_crops_cut_by_hand(run):
    path, model = run
    result = evaluate(path, protocol="ten_crop", verbose=False, return_scores=True)
    images = _val_images(6)
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        top, left = (h - SIZE) // 2, (w - SIZE) // 2
        corners = [(0, 0), (0, w - SIZE), (h - SIZE, 0), (h - SIZE, w - SIZE), (top, left)]
        crops = np.stack([image[t : t + SIZE, x : x + SIZE] for t, x in corners])
        crops = np.concatenate([crops, crops[:, :, ::-1]])
        expected = model.predict_on_batch(crops).mean(axis=0)
        np.testing.assert_allclose(result["scores"][i], expected, rtol=1e-5, atol=1e-7)
    assert result["count"] == load_source(None).num_val
    assert result["protocol"] == "ten_crop" and result["runtime"] == "keras"


def test_dense_equals_crop_and_mirror_where_they_coincide(run):
    path, model = run
    # With Q = the input size a square digit rescales to exactly one crop: the score map is
    # 1x1 and dense evaluation is the mean of the crop's and its mirror's softmax.
    result = evaluate(path, protocol="dense", resize=SIZE, verbose=False, return_scores=True)
    source = load_source(None)
    for i, (contents, _) in enumerate(source.encoded("val").take(5)):
        image = tf.io.decode_image(contents, channels=3, expand_animations=False)
        image = tf.image.resize(image, (SIZE, SIZE), method="bilinear").numpy()
        expected = model.predict_on_batch(np.stack([image, image[:, ::-1]])).mean(axis=0)
        np.testing.assert_allclose(result["scores"][i], expected, rtol=1e-5, atol=1e-7)


def test_multi_scale_averages_dense_scores_over_scales(run):
    path, _ = run
    scales = (SIZE, RESIZE)
    got = evaluate(path, protocol="multi_scale", scales=scales, verbose=False, return_scores=True)
    per_scale = [
        evaluate(path, protocol="dense", resize=q, verbose=False, return_scores=True)["scores"]
        for q in scales
    ]
    np.testing.assert_allclose(got["scores"], np.mean(per_scale, axis=0), rtol=1e-5, atol=1e-7)
    assert got["scales"] == list(scales)


def test_center_matches_top_k_computed_with_numpy(run):
    path, _ = run
    result = evaluate(path, protocol="center", verbose=False, return_scores=True)
    scores, labels = result["scores"], result["labels"]
    order = np.argsort(-scores, axis=1, kind="stable")
    assert result["top1"] == pytest.approx(np.mean(order[:, 0] == labels))
    assert result["top5"] == pytest.approx(np.mean((order[:, :5] == labels[:, None]).any(1)))
    assert result["top1_error"] == pytest.approx(1 - result["top1"])


def test_protocol_all_tables_what_each_protocol_gives_alone(run, tmp_path, capsys):
    from keras_alexnet.commands import evaluate as command
    from keras_alexnet.protocols import PROTOCOLS

    path, _ = run
    out = tmp_path / "all.json"
    argv = ["--model", str(path), "--protocol", "all", "--scales", f"{SIZE},{RESIZE}", "--quiet",
            "--output-json", str(out)]  # fmt: skip
    command.main(command.get_args_parser().parse_args(argv))
    table = capsys.readouterr().out
    written = json.loads(out.read_text())["protocols"]
    assert [r["protocol"] for r in written] == list(PROTOCOLS)
    assert [r["own"] for r in written] == [name == "ten_crop" for name in PROTOCOLS]
    for result in written:
        alone = evaluate(path, protocol=result["protocol"], scales=(SIZE, RESIZE), verbose=False)
        assert (result["top1"], result["top5"]) == (alone["top1"], alone["top5"])
        row = next(line for line in table.splitlines() if line.startswith(result["protocol"]))
        assert f"{100 * alone['top1']:.2f}" in row and f"{100 * alone['top5']:.2f}" in row
    assert "ten_crop *" in table and f"multi_scale (Q {SIZE},{RESIZE})" in table


def test_protocol_all_decodes_once_and_skips_what_a_fixed_size_runtime_cannot_run(
    run, monkeypatch, capsys
):
    import keras_alexnet.evaluation as evaluation
    from keras_alexnet.runtime import load

    class Counting:
        """The demo source, counting how often its images are read."""

        def __init__(self, source):
            self.source, self.reads = source, []

        def __getattr__(self, name):
            return getattr(self.source, name)

        def encoded(self, split, **kwargs):
            self.reads.append(split)
            return self.source.encoded(split, **kwargs)

    opened = []
    open_data = evaluation._open_data
    monkeypatch.setattr(
        evaluation, "_open_data", lambda *a: opened.append(Counting(open_data(*a))) or opened[-1]
    )
    path, _ = run
    # A runtime that takes only crops of its input size, as an ONNX file exported for crops.
    crops_only = dataclasses.replace(load(path), input_size=SIZE)
    results = evaluation.evaluate_all(crops_only, verbose=False)
    # Every protocol's views from one read of the split.
    assert [split for source in opened for split in source.reads] == ["val"]
    by_name = {r["protocol"]: r for r in results}
    for name in ("dense", "multi_scale"):
        assert f"cannot run `protocol` {name}" in by_name[name]["skipped"]
    for name in ("center", "ten_crop"):
        alone = evaluate(path, protocol=name, verbose=False)
        assert (by_name[name]["top1"], by_name[name]["top5"]) == (alone["top1"], alone["top5"])
    table = evaluation.format_all(results)
    assert "dense" in table and "cannot run `protocol` dense" in table
    # The command's table names its flag instead.
    from keras_alexnet.commands import evaluate as command

    monkeypatch.setattr(evaluation, "load", lambda *a, **k: crops_only)
    command.main(command.get_args_parser().parse_args(["--model", str(path), "--protocol",
                                                       "all", "--quiet"]))  # fmt: skip
    table = capsys.readouterr().out
    assert "cannot run --protocol dense" in table and "`" not in table


def test_top_k_counts_boundary_ties_as_correct_like_in_top_k():
    scores = np.array([[0.1, 0.5, 0.5, 0.2], [0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]])
    labels = np.array([2, 1, 3])
    expected = tf.math.in_top_k(labels, scores, 1).numpy()
    np.testing.assert_array_equal(topk_correct(scores, labels, 1), expected)
    np.testing.assert_array_equal(topk_correct(scores, labels, 1), [True, False, True])
    np.testing.assert_array_equal(near_ties(scores, labels), [True, False, True])
    np.testing.assert_array_equal(topk_correct(scores, labels, 2), [True, True, True])


def test_bad_inputs_raise_one_clear_error(run, tmp_path):
    path, _ = run
    with pytest.raises(ModelPathError, match="does not exist"):
        resolve(tmp_path / "missing.onnx")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelPathError, match="not a model"):
        resolve(tmp_path / "notes.txt")
    with pytest.raises(ModelPathError, match="neither"):
        resolve(tmp_path)
    (tmp_path / "broken.keras").write_text("not a zip")
    Metadata.load(path / "metadata.json").save(tmp_path / "metadata.json")
    with pytest.raises(ModelPathError, match="not a readable Keras model"):
        evaluate(tmp_path / "broken.keras", verbose=False)
    with pytest.raises(EvaluationError, match="split 'test'"):
        evaluate(path, split="test", verbose=False)
    with pytest.raises(EvaluationError, match="smaller than"):
        evaluate(path, protocol="center", resize=SIZE - 1, verbose=False)


def test_empty_split_and_other_classes_are_refused(run, tmp_path):
    from PIL import Image

    path, _ = run
    data = tmp_path / "data"
    for c in range(10):
        (data / "train" / str(c)).mkdir(parents=True)
        Image.new("RGB", (9, 9), (c * 20, 0, 0)).save(data / "train" / str(c) / "a.png")
    with pytest.raises(EvaluationError, match="split 'val' of .* is empty"):
        evaluate(path, data=str(data), verbose=False)  # train/ without val/
    (data / "train" / "9").rename(data / "train" / "nine")
    with pytest.raises(EvaluationError, match="classes"):
        evaluate(path, data=str(data), split="train", verbose=False)


def test_the_python_api_names_the_argument_and_the_command_its_flag(run, capsys):
    from keras_alexnet import cli
    from keras_alexnet.commands import evaluate as command

    path, _ = run
    with pytest.raises(EvaluationError) as error:
        evaluate(path, split="test", verbose=False)
    assert str(error.value).endswith("pass another `split` or `data`")
    assert "--" not in str(error.value)
    with pytest.raises(SystemExit) as exit_info:
        argv = ["--model", str(path), "--split", "test", "--quiet"]
        cli.run(command.main, command.get_args_parser(), argv, name="evaluate")
    assert exit_info.value.code == 1
    line = capsys.readouterr().err
    assert line.startswith("evaluate: error: split 'test'")
    assert line.endswith("pass another --split or --data\n")


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--model", str(tmp_path / "x")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("evaluate.py: error:")]
    assert len(lines) == 1 and "does not exist" in lines[0]


def test_a_class_count_differing_from_the_metadata_is_refused_before_the_pass(
    run, tmp_path, monkeypatch
):
    import dataclasses
    import shutil

    import keras_alexnet.data

    path, _ = run
    shutil.copy(path / "best.keras", tmp_path / "best.keras")
    metadata = Metadata.load(path / "metadata.json")
    nine = dataclasses.replace(metadata, class_names=metadata.class_names[:9])
    nine.save(tmp_path / "metadata.json")

    def no_data(*args, **kwargs):
        raise AssertionError("the data was opened before the model was checked")

    monkeypatch.setattr(keras_alexnet.data, "load_source", no_data)
    message = f"outputs 10 classes but its metadata \\({tmp_path}/metadata.json\\) has 9 class"
    with pytest.raises(ModelPathError, match=message):
        evaluate(tmp_path, verbose=False)


def test_paper_scales_follow_vgg_section_4_2():
    from keras_alexnet.protocols import fit_scales, paper_scales

    assert paper_scales(256) == (224, 256, 288)  # fixed S: S - 32, S, S + 32
    assert paper_scales(384, 384) == (352, 384, 416)
    assert paper_scales(256, 512) == (256, 384, 512)  # jittered: Smin, the middle, Smax
    assert paper_scales(36, 48) == (36, 42, 48)
    # The demo's S = 76: 44 is below AlexNet's 67px input, so it is tested at 67.
    assert paper_scales(76) == (44, 76, 108)
    assert fit_scales(paper_scales(76), 67) == (67, 76, 108)
    assert fit_scales((40, 50, 70), 67) == (67, 70)  # each Q once


def test_multi_scale_scales_come_from_the_recorded_training_scale():
    from keras_alexnet.evaluation import resolve_scales
    from keras_alexnet.protocols import PROTOCOLS

    multi = PROTOCOLS["multi_scale"]
    fixed = Metadata(model="vgg_d", class_names=("a",), input_size=224, resize=256, mean=(0,) * 3)
    assert resolve_scales(multi, fixed, 224) == ((224, 256, 288), None)
    jittered = dataclasses.replace(fixed, resize_max=512)
    assert resolve_scales(multi, jittered, 224) == ((256, 384, 512), None)
    assert resolve_scales(multi, jittered, 224, scales=(300, 400)) == ((300, 400), None)
    assert resolve_scales(PROTOCOLS["dense"], jittered, 224) == (None, None)
    demo = Metadata(model="alexnet", class_names=("a",), input_size=67, resize=76, mean=(0,) * 3)
    scales, note = resolve_scales(multi, demo, 67)
    assert scales == (67, 76, 108)
    assert "Q = 44 raised to the 67px input" in note and "44, 76, 108 for S = 76" in note


def test_a_run_trained_with_jittered_scales_records_them(tmp_path):
    from keras_alexnet.models import get_spec
    from keras_alexnet.train_config import TrainConfig
    from keras_alexnet.training import _metadata

    spec = get_spec("vgg_a")
    source = load_source(None)
    for resize, recorded in (((36, 48), 48), ((36, 36), None)):
        config = TrainConfig(model="vgg_a", resize=resize, output=str(tmp_path / "run"))
        metadata = _metadata(config.resolved(spec), spec, source)
        assert (metadata.resize, metadata.resize_max) == (36, recorded)
        assert Metadata.from_json(metadata.to_json()) == metadata


def test_evaluate_multi_scale_on_the_demo_scale_tests_at_its_own_scales(tmp_path):
    # A model trained like the demo (67px crops of digits rescaled to 76, no reflections).
    path, _ = make_run(tmp_path / "demo", resize=76, steps=0, protocol="center")
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--model", str(path),
         "--protocol", "multi_scale", "--quiet", "--output-json", str(tmp_path / "r.json")],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "r.json").read_text())
    # VGG Section 4.2 for S = 76: 44, 76, 108, with 44 raised to the 67px input.
    assert results["scales"] == [67, 76, 108]
    assert "multi_scale (Q = 67, 76, 108)" in out.stdout and "Q = 44 raised" in out.stdout
    # --scales still overrides.
    explicit = evaluate(path, protocol="multi_scale", scales=(70, 90), verbose=False)
    assert explicit["scales"] == [70, 90] and explicit["scales_note"] is None


def test_evaluate_help_states_each_default_as_the_code_chooses_it():
    from keras_alexnet.commands.evaluate import get_args_parser
    from keras_alexnet.models import MODELS
    from keras_alexnet.protocols import PAPER_PROTOCOLS, trained_protocol

    text = " ".join(get_args_parser().format_help().split())
    for spec in MODELS.values():
        assert PAPER_PROTOCOLS[spec.family] == spec.protocol
        assert f"{spec.family} {spec.protocol}" in text
        assert trained_protocol(spec.protocol, True) == spec.protocol
    assert trained_protocol(MODELS["alexnet"].protocol, False) == "center"
    assert "center for one trained without (the demo's)" in text
    assert "S=256: 224,256,288" in text and "[256, 512]: 256,384,512" in text
