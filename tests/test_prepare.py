"""prepare.py: the one-time pass, the prepared source, and training's crop-while-decoding path."""

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from keras_alexnet.data import (
    directory_source,
    eval_dataset,
    kinds,
    load_source,
    train_dataset,
)
from keras_alexnet.data import prepared as prep
from keras_alexnet.images import decode_tf

ROOT = Path(__file__).resolve().parents[1]
SIZE = 24  # prepared images' shorter side in these tests


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_ALEXNET_CACHE", str(tmp_path / "cache"))


def quiet(_):
    """A log that prints nothing."""


def colour(i):
    return (10 + 7 * i % 230, 200 - 3 * i % 190, 40 + 11 * i % 200)


def smooth(h, w, seed):
    """A smooth RGB image (gradients): JPEG and resampling change it little."""
    y, x = np.mgrid[0:h, 0:w]
    phase = np.random.default_rng(seed).uniform(0, 6, 3)
    planes = [127 + 100 * np.sin(x / w * 3 + y / h * 2 + p) for p in phase]
    return np.stack(planes, -1).astype(np.uint8)


@pytest.fixture
def colour_tree(tmp_path):
    """root/<a|b>/: 20 constant-colour PNGs of various shapes, and one broken file."""
    root = tmp_path / "tree"
    for i in range(20):
        folder = root / "ab"[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (30 + i, 26 + (i % 5) * 3), colour(i)).save(folder / f"{i}.png")
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)
    return root


def stored_colours(source, split):
    """The colour of every stored image of a split (constant images)."""
    decode = decode_tf.decode_prepared
    return sorted(tuple(decode(c).numpy()[0, 0]) for c, _ in source.encoded(split))


def test_prepare_keeps_the_folder_split_classes_and_statistics(colour_tree):
    index = prep.prepare(colour_tree, colour_tree.parent / "p", size=SIZE, log=quiet)
    folder = directory_source(colour_tree, val_fraction=0.1, seed=0)
    source = load_source(colour_tree.parent / "p")
    assert source.kind == "prepared" and source.class_names == ["a", "b"]
    assert source.sizes == folder.sizes == {"train": 18, "val": 2}
    assert [Path(p).name for p, _ in index["skipped"]] == ["broken.jpg"]
    assert index["skipped"][0][1].startswith("cannot be decoded: jpeg::Uncompress failed")
    # The same images in each split: constant colours identify them (JPEG moves a few units).
    for split in ("train", "val"):
        want = sorted(tuple(decode_tf.decode(c).numpy()[0, 0]) for c, _ in folder.encoded(split))
        np.testing.assert_allclose(stored_colours(source, split), want, atol=3)
    # Statistics of the original pixels, as the folder source computes them.
    np.testing.assert_allclose(source.stats.mean, folder.stats.mean, rtol=1e-9)
    np.testing.assert_allclose(source.stats.eigval, folder.stats.eigval, rtol=1e-6, atol=1e-9)
    # A prepared set is opened as one, never listed as a class-folder tree, nor prepared again.
    with pytest.raises(ValueError, match="is a prepared set, not a class-folder tree"):
        directory_source(colour_tree.parent / "p")
    with pytest.raises(ValueError, match="is already a prepared set"):
        prep.prepare(colour_tree.parent / "p", colour_tree.parent / "q", size=SIZE, log=quiet)


def test_one_function_decides_what_data_names(colour_tree, tmp_path):
    prep.prepare(colour_tree, tmp_path / "p", size=SIZE, log=quiet)
    cases = {
        None: kinds.DEMO,
        str(colour_tree): kinds.FOLDER,
        str(tmp_path / "p"): kinds.PREPARED,
        "./no_such_folder": kinds.FOLDER,  # a path, reported missing, not looked up in TFDS
        "My Photos": kinds.FOLDER,  # not shaped like a TFDS name
        "mnist": kinds.TFDS,
        "imagenet2012_subset/1pct:5.0.0": kinds.TFDS,
    }
    assert {data: kinds.data_kind(data) for data in cases} == cases
    assert kinds.is_local(str(tmp_path / "p")) and not kinds.is_local("mnist")


def jpeg_with_orientation(array, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=98, exif=exif.tobytes())
    return buffer.getvalue()


def test_prepared_images_are_upright_and_rescaled_as_the_paper_did(tmp_path):
    root = tmp_path / "tree"
    stored = smooth(40, 64, 0)  # landscape as stored; EXIF 6 turns it to portrait
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        (root / c / "0.jpg").write_bytes(jpeg_with_orientation(stored, 6))
        Image.fromarray(smooth(50, 30, 1)).save(root / c / "1.png")
    prep.prepare(root, tmp_path / "alex", model="alexnet", size=SIZE, log=quiet)
    prep.prepare(root, tmp_path / "vgg", model="vgg16", size=SIZE, log=quiet)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(root / "a" / "0.jpg")))
    assert upright.shape == (64, 40, 3)
    resized = tf.image.resize(upright, [38, SIZE]).numpy()  # shorter side 24, aspect kept
    top = (38 - SIZE) // 2
    expected = {"alex": resized[top : top + SIZE], "vgg": resized}  # AlexNet: central square
    for name, want in expected.items():
        source = load_source(tmp_path / name)
        images = [decode_tf.decode_prepared(c).numpy() for c, _ in source.encoded("train")]
        got = next(im for im in images if im.shape[:2] == want.shape[:2])
        assert np.abs(got.astype(float) - want).mean() < 2.5, name
    assert source.layout == prep.Layout(SIZE, square=False)


def test_an_interrupted_pass_resumes_at_its_first_unfinished_shard(colour_tree, monkeypatch):
    whole = colour_tree.parent / "whole"
    prep.prepare(colour_tree, whole, size=SIZE, shard_size=4, log=quiet)
    out = colour_tree.parent / "resumed"
    real = prep._write_shard
    written = []

    def crash_on_third(path, records):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(Path(path).name)
        real(path, records)

    monkeypatch.setattr(prep, "_write_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(colour_tree, out, size=SIZE, shard_size=4, log=quiet)
    assert not prep.is_prepared(out) and (out / prep.STATE_FILE).exists()
    calls = []
    monkeypatch.setattr(prep, "_write_shard", lambda p, r: (calls.append(p), real(p, r)))
    prep.prepare(colour_tree, out, size=SIZE, shard_size=4, log=quiet)
    assert Path(calls[0]).name == "train-00002.tfrecord"  # the first two were kept
    assert not (out / prep.STATE_FILE).exists()
    assert json.loads((out / "prepared.json").read_text()) == json.loads(
        (whole / "prepared.json").read_text()
    )
    for f in sorted(whole.glob("*.tfrecord")):
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name


def run_prepare(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prepare.py"), *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip


def test_the_command_twice_and_with_other_settings(colour_tree, tmp_path):
    out = tmp_path / "p"
    first = run_prepare("--data", colour_tree, "--output", out, "--size", 67)
    assert first.returncode == 0, first.stderr
    assert "Prepared 18 train and 2 val images" in first.stdout
    assert "skipping 1 unusable file(s)" in first.stdout
    again = run_prepare("--data", colour_tree, "--output", out, "--size", 67)
    assert again.returncode == 0 and "already prepared" in again.stdout
    other = run_prepare("--data", colour_tree, "--output", out, "--size", 72)
    assert other.returncode == 1
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and "size" in lines[0] and "choose another --output" in lines[0]
    bad = run_prepare("--data", colour_tree, "--output", tmp_path / "q", "--quality", 0)
    assert bad.returncode == 2 and "--quality" in bad.stderr
    # A finished set whose folder changed since is stale: one line, and --overwrite redoes it.
    Image.new("RGB", (30, 30), colour(99)).save(colour_tree / "b" / "new.png")
    stale = run_prepare("--data", colour_tree, "--output", out, "--size", 67)
    lines = stale.stderr.strip().splitlines()
    assert stale.returncode == 1 and len(lines) == 1, stale.stderr
    assert "is stale" in lines[0] and "--overwrite" in lines[0]
    redo = run_prepare("--data", colour_tree, "--output", out, "--size", 67, "--overwrite")
    assert redo.returncode == 0 and "Prepared 19 train and 2 val images" in redo.stdout


def test_a_busy_output_and_a_scale_above_the_prepared_one_are_refused(colour_tree, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a prepared directory"):
        prep.prepare(colour_tree, busy, size=SIZE, log=quiet)
    prep.prepare(colour_tree, tmp_path / "p", size=SIZE, log=quiet)
    source = load_source(tmp_path / "p")
    with pytest.raises(ValueError, match="prepared at shorter side 24") as error:
        train_dataset(source, image_size=16, resize=32, batch_size=2)
    # The fix is another command's: its console script, in either form.
    assert str(error.value).endswith("(`keras-alexnet-prepare --size 32`)")
    with pytest.raises(ValueError, match="prepared at shorter side 24"):
        eval_dataset(source, protocol="dense", image_size=16, resize=48)


def test_the_python_api_names_the_argument_and_the_command_its_flag(colour_tree, tmp_path, capsys):
    from keras_alexnet import cli
    from keras_alexnet.commands import prepare as command

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError) as error:
        prep.prepare(colour_tree, busy, size=SIZE, log=quiet)
    assert str(error.value).endswith("is not a prepared directory; choose another `output`")
    assert "--" not in str(error.value)
    with pytest.raises(SystemExit) as exit_info:
        argv = ["--data", str(colour_tree), "--output", str(busy), "--size", "67"]
        cli.run(command.main, command.get_args_parser(), argv, name="prepare")
    assert exit_info.value.code == 1
    line = capsys.readouterr().err
    assert line.startswith(f"prepare: error: {busy} exists and is not a prepared directory")
    assert line.endswith("; choose another --output\n")


@pytest.mark.parametrize("flip", [True, False])
def test_cropping_while_decoding_equals_decoding_then_cropping(tmp_path, flip):
    root = tmp_path / "tree"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(smooth(30 + 3 * i, 40, i)).save(root / c / f"{i}.png")
    prep.prepare(root, tmp_path / "p", size=SIZE, log=quiet)
    fast = load_source(tmp_path / "p")
    slow = dataclasses.replace(fast, layout=None)  # the general path: decode, rescale, crop

    def batches(source):
        ds = train_dataset(source, image_size=17, resize=SIZE, batch_size=5, seed=3, flip=flip)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    got, want = batches(fast), batches(slow)
    assert len(got) == len(want) == 2
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        np.testing.assert_array_equal(gy, wy)
        np.testing.assert_array_equal(gx, wx)  # same crops, flips and lighting, bit for bit


def test_training_and_evaluation_read_a_prepared_tfds_set(tiny_data, tmp_path):
    from tests.tfds_tree import mock_tfds_from_tree

    with mock_tfds_from_tree(tiny_data):
        index = prep.prepare("cats_vs_dogs", tmp_path / "p", size=SIZE, log=quiet)
    assert {k: v["count"] for k, v in index["splits"].items()} == {"train": 32, "val": 8}
    assert index["class_names"] == ["cat", "dog"]
    source = load_source(tmp_path / "p")
    (x, y), *_ = train_dataset(source, image_size=20, resize=SIZE, batch_size=8, seed=0)
    assert x.shape == (8, 20, 20, 3) and x.dtype == tf.float32
    # Dark vs bright blobs (tiny_data): the labels came through with the pixels.
    means = x.numpy().mean(axis=(1, 2, 3))
    assert np.all((means > 125) == (y.numpy() == 1))


def test_passes_on_prepared_data_are_new_presentations_reproducible_from_the_seed(colour_tree):
    prep.prepare(colour_tree, colour_tree.parent / "p", size=SIZE, shard_size=5, log=quiet)
    source = load_source(colour_tree.parent / "p")

    def passes(ds, n=3):
        return [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(n)]

    kw = dict(image_size=16, resize=SIZE, batch_size=6, seed=5)
    first, again = passes(train_dataset(source, **kw)), passes(train_dataset(source, **kw))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)  # pass k is the same in every run
    assert not np.array_equal(first[0], first[1])  # each pass is a new presentation
    other_epoch = passes(train_dataset(source, epoch=1, **kw), n=1)[0]
    assert not np.array_equal(first[0], other_epoch)


def test_evaluate_and_compute_stats_read_a_prepared_directory(tmp_path):
    from helpers import RESIZE, SIZE, make_run

    from keras_alexnet.data import source_stats
    from keras_alexnet.evaluation import evaluate

    prep.prepare(None, tmp_path / "p", size=RESIZE, log=quiet)  # the demo digits
    stats, folder = source_stats(str(tmp_path / "p")), source_stats(None)
    assert stats["num_train"] == folder["num_train"]
    np.testing.assert_allclose(stats["stats"]["mean"], folder["stats"]["mean"], rtol=1e-9)
    path, model = make_run(tmp_path / "run", steps=0, protocol="center")
    result = evaluate(path, data=str(tmp_path / "p"), verbose=False, return_scores=True)
    # Against the centre crops cut by hand from the prepared RESIZE x RESIZE images.
    records = list(load_source(tmp_path / "p").encoded("val"))
    top = (RESIZE - SIZE) // 2
    crops = np.stack([
        decode_tf.decode_prepared(c).numpy()[top : top + SIZE, top : top + SIZE]
        for c, _ in records
    ]).astype("float32")  # fmt: skip
    assert result["count"] == len(records) == 364  # the demo split
    np.testing.assert_allclose(result["scores"], model.predict(crops, verbose=0), atol=1e-5)
    np.testing.assert_array_equal(result["labels"], [int(y) for _, y in records])


def test_a_folder_named_by_another_path_is_the_same_source(colour_tree, monkeypatch):
    monkeypatch.chdir(colour_tree.parent)
    prep.prepare("tree", "p", size=SIZE, log=quiet)
    said = []
    prep.prepare(colour_tree, colour_tree.parent / "p", size=SIZE, log=said.append)
    assert "is already prepared" in said[0]


def test_a_class_without_usable_images_is_one_clear_error(tmp_path):
    root = tmp_path / "tree"
    for i in range(4):
        (root / "a").mkdir(parents=True, exist_ok=True)
        (root / "b").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (30, 30), colour(i)).save(root / "a" / f"{i}.png")
        (root / "b" / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)
    # One file of each class is held out for validation; the other three train.
    message = r"b: no training images: all 3 files are unusable \(first: cannot be decoded: jpeg"
    with pytest.raises(ValueError, match=message):
        prep.prepare(root, tmp_path / "p", size=SIZE, val_fraction=0.25, log=quiet)
    assert not prep.is_prepared(tmp_path / "p")


def records(out):
    """A prepared set's records as sorted (class name, colour) pairs (constant images)."""
    source = load_source(out)
    return sorted(
        (source.class_names[int(y)], tuple(decode_tf.decode_prepared(c).numpy()[0, 0]))
        for split in source.sizes
        for c, y in source.encoded(split)
    )


def class_tree(root, classes, per_class, start=0):
    """root/<class>/: `per_class` constant-colour PNGs each, numbered on from `start`."""
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            n = start + k * per_class + i
            Image.new("RGB", (30, 28), colour(n)).save(root / name / f"{n}.png")
    return root


def test_a_pass_resumed_after_its_classes_changed_starts_over(tmp_path):
    # Class c's files have a JPEG header but do not decode: the pass fails at its end.
    root = class_tree(tmp_path / "tree", "abd", 5)
    (root / "c").mkdir()
    for i in range(5):
        (root / "c" / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)
    out = tmp_path / "p"
    with pytest.raises(ValueError, match="c: no training images"):
        prep.prepare(root, out, size=SIZE, shard_size=4, log=quiet)
    for f in (root / "c").iterdir():
        f.unlink()
    (root / "c").rmdir()
    said = []
    index = prep.prepare(root, out, size=SIZE, shard_size=4, log=said.append)
    assert "starting over" in said[0]
    assert index["class_names"] == ["a", "b", "d"]
    clean = prep.prepare(root, tmp_path / "clean", size=SIZE, shard_size=4, log=quiet)
    assert index["splits"] == clean["splits"]
    # Every image under its own class's label, as a pass over the new folder labels it.
    assert records(out) == records(tmp_path / "clean")
    assert {c for c, _ in records(out)} == {"a", "b", "d"}


def test_a_class_without_an_image_is_refused_before_any_shard_is_written(tmp_path):
    root = class_tree(tmp_path / "tree", "ab", 6)
    (root / "c").mkdir()
    for i in range(3):
        (root / "c" / f"{i}.jpg").write_text("not an image")
    with pytest.raises(ValueError, match=r"c: no training images: all \d files are unusable"):
        prep.prepare(root, tmp_path / "p", size=SIZE, shard_size=2, log=quiet)
    assert (
        not list(tmp_path.glob("p/*.tfrecord")) and not (tmp_path / "p" / prep.STATE_FILE).exists()
    )


def test_files_added_after_an_interrupted_pass_are_neither_lost_nor_doubled(tmp_path, monkeypatch):
    root = class_tree(tmp_path / "tree", "abc", 20)
    out = tmp_path / "p"
    real, written = prep._write_shard, []

    def crash_after_three(path, rows):
        if len(written) == 3:
            raise KeyboardInterrupt  # as a kill: the state holds three shards
        written.append(path)
        real(path, rows)

    monkeypatch.setattr(prep, "_write_shard", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(root, out, size=SIZE, shard_size=5, log=quiet)
    monkeypatch.setattr(prep, "_write_shard", real)
    leftover = out / ".train-00003.tfrecord.k1ll3d"  # a kill mid-write leaves atomic_path's
    leftover.mkdir()
    (leftover / "train-00003.tfrecord").write_bytes(b"half")
    Image.new("RGB", (30, 28), colour(200)).save(root / "a" / "new.png")
    index = prep.prepare(root, out, size=SIZE, shard_size=5, log=quiet)
    assert not leftover.exists()
    prep.prepare(root, tmp_path / "clean", size=SIZE, shard_size=5, log=quiet)
    got = records(out)
    assert sum(v["count"] for v in index["splits"].values()) == len(got) == 61
    assert len(set(got)) == 61  # no image written twice ...
    assert got == records(tmp_path / "clean")  # ... and none lost


def test_a_finished_set_whose_folder_changed_is_stale(colour_tree, tmp_path):
    out = tmp_path / "p"
    prep.prepare(colour_tree, out, size=SIZE, log=quiet)
    (colour_tree / "a" / "0.png").unlink()
    with pytest.raises(ValueError, match="is stale: its source changed") as error:
        prep.prepare(colour_tree, out, size=SIZE, log=quiet)
    assert "\n" not in str(error.value)
    index = prep.prepare(colour_tree, out, size=SIZE, overwrite=True, log=quiet)
    assert sum(v["count"] for v in index["splits"].values()) == 19
    assert prep.prepare(colour_tree, out, size=SIZE, log=quiet) == index  # now up to date


def test_a_second_prepare_into_the_same_output_is_refused(colour_tree, tmp_path):
    from keras_alexnet.rundir import RunLock

    out = tmp_path / "p"
    with RunLock(out):  # another process preparing (or training) into it
        with pytest.raises(ValueError, match=r"p is in use by another prepare \(pid \d+\)") as e:
            prep.prepare(colour_tree, out, size=SIZE, log=quiet)
        assert "\n" not in str(e.value) and not list(out.glob("*.tfrecord"))
    assert prep.prepare(colour_tree, out, size=SIZE, log=quiet)["class_names"] == ["a", "b"]


def run_in_process(argv, capsys):
    """Run the prepare command in this process; return (exit status, stderr)."""
    from keras_alexnet import cli
    from keras_alexnet.commands import prepare as command

    try:
        cli.run(command.main, command.get_args_parser(), list(map(str, argv)), name="prepare")
        status = 0
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def test_a_full_disk_is_one_line_naming_the_shard_and_a_rerun_resumes(
    colour_tree, tmp_path, monkeypatch, capsys
):
    real = tf.io.TFRecordWriter
    shards = []

    class FillingDisk(real):
        def __init__(self, path):
            super().__init__(path)
            shards.append(path)

        def write(self, record):
            if len(shards) == 3:  # the third shard meets a full disk
                raise tf.errors.ResourceExhaustedError(
                    None, None, f"{shards[-1]}; No space left on device"
                )
            super().write(record)

    monkeypatch.setattr(tf.io, "TFRecordWriter", FillingDisk)
    out = tmp_path / "p"
    argv = ["--data", colour_tree, "--output", out, "--size", 67, "--shard-size", 4]
    status, err = run_in_process(argv, capsys)
    assert status == 1
    assert err.splitlines()[-1] == (
        f"prepare: error: cannot write {out / 'train-00002.tfrecord'}: No space left on device"
    )
    monkeypatch.setattr(tf.io, "TFRecordWriter", real)  # space freed
    assert run_in_process(argv, capsys)[0] == 0 and prep.is_prepared(out)


def test_size_bounds_are_the_smallest_input_and_the_largest_worth_keeping(
    colour_tree, tmp_path, capsys
):
    from keras_alexnet.commands import prepare as command

    text = " ".join(command.get_args_parser().format_help().split())
    assert "smallest input (alexnet 67, alexnet_tv 63, vgg 32) to 1024" in text
    for model, size, low in (("alexnet", 66, 67), ("vgg16", 31, 32), ("alexnet", 1025, 67)):
        argv = ["--data", colour_tree, "--output", tmp_path / "p", "--model", model, "--size", size]
        status, err = run_in_process(argv, capsys)
        assert status == 1, err
        assert err.strip() == (
            f"prepare: error: --size must be from {low} ({model}'s smallest input) to 1024. "
            f"Received: {size}"
        )
    assert not (tmp_path / "p").exists()
    with pytest.raises(ValueError, match="size must be from 1 to 1024"):
        prep.prepare(colour_tree, tmp_path / "p", size=100_000, log=quiet)


def test_an_output_inside_the_input_folder_is_refused(colour_tree):
    with pytest.raises(ValueError, match="is inside the input folder"):
        prep.prepare(colour_tree, colour_tree / "prepared", size=SIZE, log=quiet)
    assert not (colour_tree / "prepared").exists()


def test_a_symlink_loop_is_listed_among_the_skipped_files(colour_tree, tmp_path):
    (colour_tree / "b" / "loop.jpg").symlink_to("loop.jpg")  # points at itself
    (colour_tree / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    index = prep.prepare(colour_tree, tmp_path / "p", size=SIZE, log=quiet)
    reasons = {Path(p).name: why for p, why in index["skipped"]}
    assert reasons["loop.jpg"] == "unreadable (Too many levels of symbolic links)"
    assert reasons["gone.png"] == "unreadable (No such file or directory)"
    folder = dict(directory_source(colour_tree).skipped)  # the folder source lists them too
    assert folder[str(colour_tree / "b" / "loop.jpg")] == reasons["loop.jpg"]


def corrupt_jpegs(folder):
    """Write three damaged JPEGs into `folder`: truncated, junk before a marker, no data."""
    buffer = io.BytesIO()
    Image.fromarray(smooth(40, 48, 7)).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    sos = data.index(b"\xff\xda")  # junk before the scan: it decodes, with libjpeg's warning
    (folder / "junk.jpg").write_bytes(data[:sos] + b"\0" * 16 + data[sos:])
    (folder / "empty_scan.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)


# What TensorFlow's C++ code and libjpeg write on their own (absl's "E0000 00:00:..." lines).
NATIVE = re.compile(r"^[IWEF]\d{4} |jpeg_mem|DecodeImage|assert_op|rendezvous|dataset\.cc|JPEG")


def test_prepare_and_a_jit_compiled_training_on_corrupt_jpegs_print_only_our_lines(
    colour_tree, tmp_path
):
    corrupt_jpegs(colour_tree / "b")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a shell
    out = tmp_path / "p"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prepare.py"), "--data", str(colour_tree),
         "--output", str(out), "--size", "67"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "skipping 3 unusable file(s)" in run.stdout  # broken.jpg, truncated, empty scan
    assert all(re.match(r"prepare (train|val): \d+/\d+ ", line) for line in run.stderr.splitlines())
    assert run.stderr.strip(), "the progress lines are there"
    train = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--data", str(colour_tree),
         "--epochs", "1", "--steps-per-epoch", "1", "--val-steps", "1", "--width", "0.0625",
         "--image-size", "67", "--resize", "76", "--batch-size", "4", "--jit-compile",
         "--output", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    assert not [line for line in train.stderr.splitlines() if NATIVE.search(line)], train.stderr
    # An error is still its one line, after the filter.
    refused = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prepare.py"), "--data", str(colour_tree),
         "--output", str(out), "--quality", "0"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "prepare.py: error: argument --quality: must be an integer from 1 to 100. "
        "Received: '0' (see --help)"
    ]


def test_the_native_stderr_filter_drops_tensorflow_and_libjpeg_lines_only():
    from keras_alexnet import _quiet

    ours = [
        b"prepare train: 8/24 (33 %), 7.5 img/s\n",
        b"F0000 00:00:1796430008.816361   14830 op.cc:12] Check failed: fatal, kept\n",
        b"Traceback (most recent call last):\n",
        b'  File "x.py", line 1, in <module>\n',
        b"the last line without a newline",
    ]
    noise = [
        b"E0000 00:00:1796430008.816361   14830 jpeg_mem.cc:331] Premature end of JPEG data\n",
        b"W0000 00:00:1796428937.779587    4866 local_rendezvous.cc:412] Local rendezvous "
        b"is aborting with status: INVALID_ARGUMENT: jpeg::Uncompress failed.\n",
        b"\t [[{{node decode_image/DecodeImage}}]]\n",
        # a multi-line Status, as a lost worker's collective reports it
        b"E0000 00:00:1796430008.816361   14830 collective_ops.cc:90] Collective failed: "
        b"UNAVAILABLE: Collective ops is aborted by: failed to connect to all addresses\n",
        b"/job:worker/replica:0/task:1\n",
        b"The tasks have crashed. Restart your program to reset.\n",
        b"Corrupt JPEG data: 16 extraneous bytes before marker 0xda\n",
        b"Input file read error\n",
        b"libpng warning: iCCP: known incorrect sRGB profile\n",
    ]
    mixed = [ours[0], *noise[:6], ours[1], noise[6], ours[2], noise[7], ours[3], noise[8], ours[4]]
    sink = io.BytesIO()
    _quiet.filter_lines(io.BytesIO(b"".join(mixed)), sink)
    assert sink.getvalue() == b"".join(ours)
