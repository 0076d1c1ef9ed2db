"""ONNX / SavedModel exports: same numbers as Keras, metadata inside, int8, atomic writes."""

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf
from helpers import ROOT, SIZE, make_run

from keras_alexnet import export
from keras_alexnet.calibration import center_crops
from keras_alexnet.evaluation import EvaluationError, evaluate
from keras_alexnet.metadata import Metadata
from keras_alexnet.onnx import proto as proto_edits
from keras_alexnet.runtime import load, load_metadata


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny AlexNet fitted a few steps on the digits, exported to ONNX and SavedModel."""
    root = tmp_path_factory.mktemp("export")
    run, model = make_run(root / "run", steps=30)
    onnx_path = root / "alexnet.onnx"
    onnx_result = export.export_onnx(run, onnx_path, log=lambda *_: None)
    saved = root / "alexnet_savedmodel"
    export.export_savedmodel(run, saved, log=lambda *_: None)
    return {
        "run": run,
        "model": model,
        "onnx": onnx_path,
        "savedmodel": saved,
        "result": onnx_result,
    }


@pytest.mark.parametrize("protocol", ["center", "ten_crop", "dense"])
def test_keras_savedmodel_and_onnx_give_the_same_top1_top5(exported, protocol):
    results = {
        key: evaluate(exported[key], protocol=protocol, verbose=False, return_scores=True)
        for key in ("run", "savedmodel", "onnx")
    }
    keras_result = results["run"]
    assert {r["runtime"] for r in results.values()} == {"keras", "savedmodel", "onnxruntime"}
    for other in (results["savedmodel"], results["onnx"]):
        assert other["count"] == keras_result["count"] > 0
        np.testing.assert_array_equal(other["labels"], keras_result["labels"])
        np.testing.assert_allclose(other["scores"], keras_result["scores"], rtol=1e-5, atol=1e-6)
        # Same top-1/top-5 to the image, up to images whose label ties another class.
        allowed = keras_result["near_ties"] / keras_result["count"]
        assert abs(other["top1"] - keras_result["top1"]) <= allowed
        assert abs(other["top5"] - keras_result["top5"]) <= allowed


def test_onnx_file_has_named_dynamic_io_and_the_metadata(exported):
    path, run = exported["onnx"], exported["run"]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "images" and out.name == "probabilities"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", "height", "width", 3]
    expected = Metadata.load(run / "metadata.json")
    props = {p.key: p.value for p in model.metadata_props}
    assert Metadata.from_properties(props) == expected
    assert load_metadata(path) == expected
    for key in ("model", "class_names", "input_size", "resize", "mean", "protocol", "version"):
        assert f"keras_alexnet.{key}" in props
    assert not any(n.op_type == "LRN" for n in model.graph.node)  # expanded for speed
    assert exported["result"]["max_relative_error"] <= 1e-5


def test_onnx_takes_raw_pixels_with_the_mean_inside(exported):
    session = ort.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).uniform(0, 255, (5, SIZE, SIZE, 3)).astype("float32")
    got = session.run(["probabilities"], {"images": x})[0]
    expected = exported["model"].predict_on_batch(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Batch axis is dynamic: one image alone gives its row of the batch.
    np.testing.assert_allclose(session.run(None, {"images": x[:1]})[0], got[:1], rtol=1e-5)


def test_savedmodel_serves_uint8_and_float_with_metadata_assets(exported):
    path = exported["savedmodel"]
    assert Metadata.load(path / "assets" / "metadata.json") == Metadata.load(
        exported["run"] / "metadata.json"
    )
    loaded = tf.saved_model.load(str(path))
    pixels = np.random.default_rng(4).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    from_uint8 = loaded.signatures["serving_uint8"](images=tf.constant(pixels))["probabilities"]
    from_float = loaded.signatures["serving_default"](images=tf.constant(pixels, tf.float32))
    expected = exported["model"].predict_on_batch(pixels.astype("float32"))
    np.testing.assert_allclose(from_uint8.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_float["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_int8_export_reports_top1_agreement_measured_independently(exported, tmp_path):
    int8 = tmp_path / "alexnet.int8.onnx"
    result = export.quantize_export(
        exported["onnx"], int8, calibration_images=16, agreement_images=48, log=lambda *_: None
    )
    model = onnx.load(str(int8))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    # Every convolution is int8; the LRN stays fp32, in NHWC, its window sum an AveragePool.
    convs = [n.op_type for n in model.graph.node if n.op_type in ("Conv", "QLinearConv")]
    assert convs == ["QLinearConv"] * 5
    pools = [n for n in model.graph.node if n.op_type == "AveragePool"]
    assert len(pools) == 2 and all("/expanded/" in n.output[0] for n in pools)
    assert load_metadata(int8) == load_metadata(exported["onnx"])
    assert result["bytes"] < exported["onnx"].stat().st_size
    assert result["agreement_images"] == 48
    # Recompute the agreement on the same held-out images with both sessions.
    from keras_alexnet.data import load_source

    images, _ = center_crops(load_source(None), load_metadata(int8), "val", 48)
    top = [load(p).predict(images).argmax(-1) for p in (exported["onnx"], int8)]
    assert result["agreement"] == pytest.approx(np.mean(top[0] == top[1]))
    assert result["agreement"] >= 0.5  # int8 noise must not scramble a trained net


def test_int8_qdq_format_runs_end_to_end_with_its_agreement_measured(exported, tmp_path):
    int8 = tmp_path / "alexnet.qdq.onnx"
    result = export.quantize_export(
        exported["onnx"], int8, calibration_images=16, agreement_images=48, quant_format="qdq",
        log=lambda *_: None,
    )  # fmt: skip
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    # QDQ: QuantizeLinear / DequantizeLinear pairs around float ops, no QLinear* operators
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    assert not [op for op in ops if op.startswith("QLinear")]
    assert load_metadata(int8) == load_metadata(exported["onnx"])
    from keras_alexnet.data import load_source

    images, _ = center_crops(load_source(None), load_metadata(int8), "val", 48)
    fp32, qdq = (load(p).predict(images) for p in (exported["onnx"], int8))
    assert result["agreement"] == pytest.approx(np.mean(fp32.argmax(-1) == qdq.argmax(-1)))
    assert result["agreement"] >= 0.5  # as the QOperator test: int8 noise, not scrambling
    assert np.abs(qdq - fp32).max() > 0  # it did quantise


def test_the_python_api_names_the_argument_and_the_command_its_flag(tmp_path, capsys):
    import argparse

    from keras_alexnet import cli
    from keras_alexnet.commands import export_onnx as command

    with pytest.raises(export.ExportError) as error:
        export.export_onnx(tmp_path / "run", quantize="int4", log=lambda *_: None)
    assert str(error.value) == "`quantize` takes int8. Received: 'int4'"

    def main(args):
        """The command's main, given int4 past argparse's choices (which refuse it first)."""
        command.main(argparse.Namespace(**{**vars(args), "quantize": "int4"}))

    with pytest.raises(SystemExit) as exit_info:
        argv = ["--model", str(tmp_path / "run")]
        cli.run(main, command.get_args_parser(), argv, name="export_onnx")
    assert exit_info.value.code == 1
    line = capsys.readouterr().err
    assert line == "export_onnx: error: --quantize takes int8. Received: 'int4'\n"


def test_failed_export_leaves_nothing_at_the_target(exported, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "MAX_RELATIVE_ERROR", -1.0)  # force the verification to fail
    target = tmp_path / "out" / "model.onnx"
    with pytest.raises(export.ExportError, match="nothing written"):
        export.export_onnx(exported["run"], target, log=lambda *_: None)
    assert list(target.parent.iterdir()) == []


def test_static_size_onnx_and_other_crop_sizes_are_refused(exported, tmp_path):
    # A plain Keras export has a fixed 67x67 input: other crops and dense cannot run on it.
    model = exported["model"]
    path = tmp_path / "static.onnx"
    model.export(str(path), format="onnx", verbose=False)
    proto = onnx.load(str(path))
    proto_edits.set_properties(proto, load_metadata(exported["onnx"]).to_properties())
    onnx.save(proto, str(path))
    with pytest.raises(EvaluationError, match="takes 67x67 images"):
        evaluate(path, protocol="center", image_size=SIZE + 4, verbose=False)
    with pytest.raises(EvaluationError, match="cannot run `protocol` dense"):
        evaluate(path, protocol="dense", verbose=False)


def test_evaluate_cli_on_an_onnx_file_alone_uses_its_metadata(exported, tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--model", str(exported["onnx"]),
         "--protocol", "center", "--quiet", "--output-json", str(out)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    import json

    got = json.loads(out.read_text())
    expected = evaluate(exported["run"], protocol="center", verbose=False)
    assert got["runtime"] == "onnxruntime" and got["protocol"] == "center"
    assert got["count"] == expected["count"]
    assert got["top1"] == pytest.approx(expected["top1"], abs=expected["near_ties"] / got["count"])
    assert "top-1 accuracy" in proc.stdout


def test_vgg_export_appends_the_fc_layers_as_matmuls_and_matches_keras(tmp_path):
    run, model = make_run(tmp_path / "vgg", name="vgg_a_lrn", size=64, resize=72, steps=0)
    path = tmp_path / "vgg.onnx"
    result = export.export_onnx(run, path, log=lambda *_: None)
    assert result["max_relative_error"] <= 1e-5
    graph = onnx.load(str(path)).graph
    kernels = {i.name: tuple(i.dims) for i in graph.initializer}
    # fc1 sees block5_pool's 2x2 map of a 64px input: 4 window slices concatenated, then
    # every FC layer is one MatMul against its Dense kernel.
    for name in ("fc1", "fc2", "predictions"):
        assert kernels[f"{name}/W"] == tuple(model.get_layer(name).kernel.shape)
    ops = [n.op_type for n in graph.node]
    assert ops.count("Slice") == 4 and ops.count("MatMul") == 3
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(5).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    expected = model.predict_on_batch(x)
    np.testing.assert_allclose(session.run(None, {"images": x})[0], expected, rtol=1e-5, atol=1e-7)


def test_export_cli_reports_on_stdout_and_keeps_stderr_free_of_tensorflow_noise(exported, tmp_path):
    target = tmp_path / "cli.onnx"
    script = str(ROOT / "scripts" / "export_onnx.py")
    proc = subprocess.run(
        [sys.executable, script, "--model", str(exported["run"]), "--output", str(target)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # tf2onnx's grappler INFO lines and Keras's np.object FutureWarning are filtered out.
    assert proc.stderr == ""
    assert "max relative error" in proc.stdout and target.exists()
    missing = subprocess.run(
        [sys.executable, script, "--model", str(tmp_path / "nope")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [
        f"export_onnx.py: error: {tmp_path / 'nope'} does not exist: pass a .keras file, a "
        "training run directory, a SavedModel directory or an .onnx file"
    ]


def test_profile_onnx_times_files_side_by_side_and_lists_operator_shares(exported, capsys):
    from benchmarks import profile_onnx

    args = profile_onnx.get_args_parser().parse_args(
        [str(exported["onnx"]), str(exported["onnx"]), "--batch-sizes", "2", "--seconds",
         "0.1", "--rounds", "1", "--top", "99"]
    )  # fmt: skip
    profile_onnx.main(args)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "batch 2" and lines[2] == "| file | img/s | vs alexnet.onnx |"
    assert lines[4].startswith("| alexnet.onnx | ") and lines[4].endswith(" | 1.00x |")
    start = lines.index("alexnet.onnx, batch 2, share of kernel time") + 3
    rows = lines[start : lines.index("", start)]
    shares = {row.split(" | ")[0][2:]: float(row.split(" | ")[1][:-4]) for row in rows}
    assert "Conv" in shares and sum(shares.values()) == pytest.approx(100, abs=1)
