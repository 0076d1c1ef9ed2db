"""scripts/predict.py: top-5 per image with a run directory, .keras, SavedModel or ONNX."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT, assert_top5, build_artifacts, reference_probabilities, sample_images

from keras_alexnet.predict import MAX_FILE_BYTES

sys.path.insert(0, str(ROOT / "scripts"))
import predict as predict_script  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    model, onnx_path = build_artifacts(run)
    from keras_alexnet.export import export_savedmodel

    export_savedmodel(run / "best.keras", run / "savedmodel", log=lambda *a, **k: None)
    photos = tmp_path_factory.mktemp("photos")
    blobs = sample_images(5, seed=9)
    (photos / "nested").mkdir()
    names = ["a.png", "b.png", "nested/c.png", "nested/d.png", "e.jpg"]
    for name, blob in zip(names, blobs, strict=True):
        (photos / name).write_bytes(blob)
    (photos / "notes.txt").write_text("not an image")
    (photos / ".hidden.png").write_bytes(blobs[0])
    want = dict(zip(names, reference_probabilities(model, blobs), strict=True))
    return run, onnx_path, photos, want


def run_main(capsys, *argv):
    args = predict_script.get_args_parser().parse_args(list(argv))
    predict_script.main(args)
    out = capsys.readouterr()
    return out.out, out.err


@pytest.mark.parametrize("kind", ["onnx", "run_dir", "keras_file", "savedmodel"])
def test_predict_json_gives_the_models_top5_and_skips_unreadable_files(setup, capsys, kind):
    run, onnx_path, photos, want = setup
    model = {
        "onnx": onnx_path,
        "run_dir": run,
        "keras_file": run / "best.keras",
        "savedmodel": run / "savedmodel",
    }[kind]
    missing = photos / "missing.png"
    out, err = run_main(capsys, "--model", str(model), str(photos), str(missing), "--json")
    results = json.loads(out)
    files = [r["file"] for r in results]
    # Directory order is sorted and recursive; the hidden file is left out.
    assert files == [
        str(photos / n)
        for n in ["a.png", "b.png", "e.jpg", "notes.txt", "nested/c.png", "nested/d.png"]
    ] + [str(missing)]
    for r in results:
        name = r["file"][len(str(photos)) + 1 :]
        if name in want:
            assert_top5(r["top5"], want[name])
        else:
            assert "top5" not in r and r["error"]
    assert f"skipped {photos / 'notes.txt'}: not an image" in err
    assert f"skipped {missing}: " in err


def test_predict_text_output(setup, capsys):
    _, onnx_path, photos, want = setup
    out, _ = run_main(capsys, "--model", str(onnx_path), str(photos / "a.png"), "--top", "3")
    lines = out.splitlines()
    assert lines[0] == str(photos / "a.png")
    probabilities = [float(line.split()[0]) for line in lines[1:]]
    top3 = sorted(want["a.png"], reverse=True)[:3]
    assert probabilities == pytest.approx(top3, abs=1e-4)
    assert all(line.split()[1].startswith("class_") for line in lines[1:])


def test_predict_with_nothing_readable_exits_non_zero(setup, capsys):
    _, onnx_path, photos, _ = setup
    with pytest.raises(SystemExit) as exit_info:
        run_main(capsys, "--model", str(onnx_path), str(photos / "notes.txt"))
    assert exit_info.value.code == 1


def test_keras_file_without_metadata_is_a_one_line_error(setup, tmp_path):
    run, _, photos, _ = setup
    shutil.copy(run / "best.keras", tmp_path / "lonely.keras")
    cmd = [sys.executable, "scripts/predict.py", "--model", str(tmp_path / "lonely.keras")]
    out = subprocess.run([*cmd, str(photos)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"predict.py: error: {tmp_path}/lonely.keras has no metadata.json")


def test_predict_script_end_to_end_with_onnx(setup):
    _, onnx_path, photos, want = setup
    cmd = [sys.executable, "scripts/predict.py", "--model", str(onnx_path), "--json"]
    out = subprocess.run(
        [*cmd, str(photos / "b.png")], capture_output=True, text=True, cwd=ROOT, check=True
    )
    [result] = json.loads(out.stdout)
    assert_top5(result["top5"], want["b.png"])


def test_importing_predict_does_not_load_the_server():
    # predict runs without the server's extras; importing it must not pull FastAPI in.
    code = "import sys, keras_alexnet.predict; print('fastapi' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False"


def mismatched_copies(setup, directory):
    """Each kind of artifact of the 10-class model, paired with metadata of 3 classes."""
    import onnx

    from keras_alexnet.metadata import Metadata
    from keras_alexnet.onnx.proto import set_properties

    run, onnx_path, _, _ = setup
    wrong = dataclasses.replace(Metadata.load(run / "metadata.json"), class_names=("a", "b", "c"))
    (directory / "run").mkdir()
    shutil.copy(run / "best.keras", directory / "run" / "best.keras")
    wrong.save(directory / "run" / "metadata.json")
    shutil.copytree(run / "savedmodel", directory / "savedmodel")
    wrong.save(directory / "savedmodel" / "assets" / "metadata.json")
    proto = onnx.load(onnx_path)
    set_properties(proto, wrong.to_properties())
    onnx.save(proto, directory / "wrong.onnx")
    return {
        "run_dir": (directory / "run", directory / "run" / "metadata.json"),
        "keras_file": (directory / "run" / "best.keras", directory / "run" / "metadata.json"),
        "savedmodel": (directory / "savedmodel", directory / "savedmodel/assets/metadata.json"),
        "onnx": (directory / "wrong.onnx", "the ONNX file's metadata properties"),
    }


@pytest.mark.parametrize("kind", ["onnx", "run_dir", "keras_file", "savedmodel"])
def test_class_count_differing_from_the_metadata_is_refused_at_load(setup, tmp_path, kind):
    from keras_alexnet.runtime import ModelPathError, load

    path, source = mismatched_copies(setup, tmp_path)[kind]
    with pytest.raises(ModelPathError) as info:
        load(path)
    [line] = str(info.value).splitlines()
    assert f"outputs 10 classes but its metadata ({source}) has 3 class names" in line


def test_server_and_predict_refuse_a_class_count_differing_from_the_metadata(setup, tmp_path):
    from keras_alexnet.runtime import ModelPathError
    from keras_alexnet.serving.model import OnnxModel

    path, _ = mismatched_copies(setup, tmp_path)["onnx"]
    with pytest.raises(ModelPathError, match="outputs 10 classes but its metadata"):
        OnnxModel(path)
    photo = setup[2] / "a.png"
    cmd = [sys.executable, "scripts/predict.py", "--model", str(path), str(photo)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        f"predict.py: error: {path} outputs 10 classes but its metadata (the ONNX file's metadata "
        "properties) has 3 class names: give the model its own training run's metadata.json"
    ]


def test_predict_provider_flag_refuses_an_unavailable_provider_in_one_line(setup):
    _, onnx_path, photos, _ = setup
    cmd = [sys.executable, "scripts/predict.py", "--model", str(onnx_path), str(photos)]
    out = subprocess.run([*cmd, "--provider", "nosuch"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("predict.py: error: onnxruntime here has no execution provider 'nosuch'")


def test_a_fifo_in_a_folder_is_skipped_not_waited_for(setup, tmp_path):
    _, onnx_path, photos, want = setup
    shutil.copy(photos / "a.png", tmp_path / "a.png")
    os.mkfifo(tmp_path / "pipe.png")  # reading it would wait for a writer forever
    cmd = [sys.executable, "scripts/predict.py", "--model", str(onnx_path), "--json"]
    out = subprocess.run(
        [*cmd, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    image, pipe = json.loads(out.stdout)
    assert_top5(image["top5"], want["a.png"])
    assert pipe == {"file": str(tmp_path / "pipe.png"), "error": "not a regular file"}
    assert f"skipped {tmp_path / 'pipe.png'}: not a regular file" in out.stderr
    # Progress in a non-terminal stderr: plain lines, no carriage returns or ANSI codes.
    assert "images: 2/2 (100 %)" in out.stderr
    assert "\r" not in out.stderr and "\x1b" not in out.stderr


def test_devices_and_oversized_files_are_reported_without_reading_them(setup, capsys, tmp_path):
    _, onnx_path, photos, want = setup
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    out, err = run_main(
        capsys, "--model", str(onnx_path), "/dev/zero", str(big), str(photos / "b.png"), "--json"
    )
    zero, oversized, image = json.loads(out)
    assert zero["error"] == "not a regular file"
    assert oversized["error"] == f"larger than {MAX_FILE_BYTES / 2**20:g} MiB"
    assert_top5(image["top5"], want["b.png"])
    assert "skipped /dev/zero: not a regular file" in err
    with pytest.raises(SystemExit) as exit_info:  # nothing classified: exit status 1
        run_main(capsys, "--model", str(onnx_path), "/dev/zero")
    assert exit_info.value.code == 1


@pytest.mark.parametrize("kind", ["onnx", "run_dir"])
def test_load_classifies_paths_bytes_pillow_images_and_arrays(setup, kind):
    import numpy as np
    from PIL import Image

    import keras_alexnet

    run, onnx_path, photos, want = setup
    model = keras_alexnet.load(onnx_path if kind == "onnx" else run)
    path = photos / "e.jpg"
    with Image.open(path) as image:
        pillow = image.copy()
    as_array = np.asarray(pillow.convert("RGB"))
    answers = model.classify([path, str(path), path.read_bytes(), pillow, as_array])
    # Against TensorFlow's decoder and the data pipeline's resize and crop (`want`).
    for answer in answers:
        assert_top5(answer, want["e.jpg"])
    single = model.classify(photos / "a.png", k=3)
    assert [c["index"] for c in single] == list(np.argsort(-want["a.png"])[:3])
    assert model.classify([]) == []
    with pytest.raises(ValueError, match=r"RGB array \[H, W, 3\].*shape \[2, 3, 4, 5\]"):
        model.classify(np.zeros((2, 3, 4, 5)))
