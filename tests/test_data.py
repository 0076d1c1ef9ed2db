import dataclasses
import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_alexnet.data import (
    IMAGENET_STATS,
    DatasetStats,
    compute_stats,
    directory_source,
    ensure_demo_set,
    eval_dataset,
    load_source,
    train_dataset,
    transforms,
)
from keras_alexnet.data.demo import demo_split
from keras_alexnet.data.pipeline import decoder
from keras_alexnet.data.prepared import prepare
from keras_alexnet.images import crop_tf, decode_tf


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_ALEXNET_CACHE", str(tmp_path / "cache"))


def save(path, image, fmt, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kwargs)


def random_rgb(rng, h, w):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def tree(tmp_path):
    """root/<class>/ with JPEG, PNG+alpha, GIF, BMP, grayscale, CMYK and two bad files."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c in ("cat", "dog"):
        for i in range(6):
            save(root / c / f"rgb{i}.jpg", random_rgb(rng, 30 + i, 40), "JPEG")
        rgba = np.concatenate([rng.integers(0, 256, (24, 26, 3)), np.full((24, 26, 1), 7)], -1)
        save(root / c / "alpha.png", Image.fromarray(rgba.astype(np.uint8), "RGBA"), "PNG")
        save(root / c / "anim.gif", random_rgb(rng, 22, 25).convert("P"), "GIF")
        save(root / c / "bitmap.bmp", random_rgb(rng, 21, 23), "BMP")
        save(
            root / c / "gray.png", Image.fromarray(rng.integers(0, 256, (20, 30), np.uint8)), "PNG"
        )
        save(root / c / "cmyk.jpg", Image.new("CMYK", (25, 20), (10, 200, 30, 0)), "JPEG")
        save(root / c / "tiny.png", Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")
    good = io.BytesIO()
    random_rgb(rng, 40, 40).save(good, "JPEG")
    (root / "cat" / "truncated.jpg").write_bytes(good.getvalue()[:200])
    (root / "dog" / "notes.jpg").write_text("this is not an image")
    # A PNG whose header claims 20000 x 20000 pixels: refused before any decoding.
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    (root / "dog" / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    return root


def test_directory_source_decodes_mixed_formats_and_reports_bad_files(tree, capsys):
    source = directory_source(tree, val_fraction=0.25, seed=0)
    assert source.class_names == ["cat", "dog"]
    skipped = dict(source.skipped)
    assert sorted(p.rsplit("/", 1)[-1] for p in skipped) == [
        "huge.png",
        "notes.jpg",
        "truncated.jpg",
    ]
    assert "too large" in skipped[str(tree / "dog" / "huge.png")]
    assert "skipping 3 unusable file(s)" in capsys.readouterr().out
    assert source.num_train + source.num_val == 2 * 12
    for contents, label in source.encoded("train").concatenate(source.encoded("val")):
        image = decode_tf.decode(contents)
        assert image.shape[-1] == 3 and image.dtype == tf.uint8
        assert int(label) in (0, 1)


def test_cmyk_jpeg_and_grayscale_decode_to_the_right_rgb(tree):
    cmyk = decode_tf.decode(tf.io.read_file(str(tree / "cat" / "cmyk.jpg"))).numpy()
    expected = np.asarray(Image.open(tree / "cat" / "cmyk.jpg").convert("RGB"))
    np.testing.assert_allclose(cmyk.astype(int), expected.astype(int), atol=2)
    gray = decode_tf.decode(tf.io.read_file(str(tree / "cat" / "gray.png"))).numpy()
    plain = np.asarray(Image.open(tree / "cat" / "gray.png"))
    assert all(np.array_equal(gray[..., c], plain) for c in range(3))
    alpha = decode_tf.decode(tf.io.read_file(str(tree / "cat" / "alpha.png"))).numpy()
    np.testing.assert_array_equal(
        alpha, np.asarray(Image.open(tree / "cat" / "alpha.png"))[..., :3]
    )


def test_empty_class_folder_and_empty_directory_are_clear_errors(tmp_path):
    (tmp_path / "a" / "one").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "one" / "x.png")
    (tmp_path / "a" / "two").mkdir()
    with pytest.raises(ValueError, match=r"a/two: empty class folder"):
        directory_source(tmp_path / "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        directory_source(tmp_path / "b")
    with pytest.raises(ValueError, match="no such directory"):
        directory_source(tmp_path / "missing")


def test_every_mode_has_the_promised_shapes_and_dtypes(tree):
    source = directory_source(tree, val_fraction=0.25, seed=0)
    x, y = next(iter(train_dataset(source, image_size=16, resize=20, batch_size=4, seed=1)))
    assert (x.shape, x.dtype, y.shape, y.dtype) == ((4, 16, 16, 3), tf.float32, (4,), tf.int32)
    x, y = next(iter(eval_dataset(source, protocol="center", image_size=16, resize=20)))
    assert x.shape[1:] == (16, 16, 3) and x.shape[0] == y.shape[0] == source.num_val
    x, y = next(iter(eval_dataset(source, protocol="ten_crop", image_size=16, resize=20)))
    assert x.shape[1:] == (10, 16, 16, 3)
    x, y = next(iter(eval_dataset(source, protocol="dense", image_size=16, resize=20)))
    assert x.shape[0] == 2 and min(x.shape[1:3]) == 20 and y.shape == (1,)
    with pytest.raises(ValueError, match="protocol must be one of"):
        eval_dataset(source, protocol="five_crop", image_size=16)


def test_training_batches_are_reproducible_from_the_seed_and_epoch(tree):
    source = directory_source(tree, val_fraction=0.25, seed=0)

    def first(**kw):
        return next(iter(train_dataset(source, image_size=16, resize=20, batch_size=6, **kw)))

    a, b = first(seed=3), first(seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], first(seed=3, epoch=1)[0])
    assert not np.array_equal(a[0], first(seed=4)[0])


def test_drop_remainder_and_sharding(tree):
    source = directory_source(tree, val_fraction=0.25, seed=0)
    n = source.num_train
    batches = list(train_dataset(source, image_size=8, resize=10, batch_size=4, seed=0))
    assert len(batches) == n // 4
    ctx = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2
    )
    shard = list(
        train_dataset(source, image_size=8, resize=10, batch_size=4, seed=0, input_context=ctx)
    )
    assert all(b[0].shape[0] == 2 for b in shard) and len(shard) == (n // 2) // 2


def constant_source(tmp_path, color=(100, 120, 140), n=64):
    for c in ("a", "b"):
        for i in range(n // 2):
            save(tmp_path / "const" / c / f"{i}.png", Image.new("RGB", (12, 12), color), "PNG")
    return directory_source(tmp_path / "const", val_fraction=0.25, seed=0)


def test_pca_lighting_is_drawn_per_image_per_presentation(tmp_path):
    source = dataclasses.replace(constant_source(tmp_path, n=200), stats=IMAGENET_STATS)

    def offsets(epoch):
        ds = train_dataset(
            source, image_size=8, resize=12, batch_size=50, seed=0, epoch=epoch, flip=False
        )
        batches = [x.numpy() for x, _ in ds]
        # A constant image's crop is its colour: what remains is the lighting offset,
        # the same on every pixel of an image.
        assert all(np.allclose(b.std(axis=(1, 2)), 0, atol=1e-3) for b in batches)
        return np.concatenate([b[:, 0, 0] for b in batches]) - np.array([100, 120, 140])

    first, second = offsets(0), offsets(1)
    assert len(np.unique(first.round(3), axis=0)) == len(first)  # a new draw per image
    assert not np.allclose(first, second)  # and per presentation
    eigvec, eigval = np.array(IMAGENET_STATS.eigvec), np.array(IMAGENET_STATS.eigval)
    alphas = np.linalg.solve(eigvec, first.T).T / eigval  # offset = eigvec @ (alpha * eigval)
    np.testing.assert_allclose(alphas.std(axis=0), 0.1, rtol=0.25)
    np.testing.assert_allclose(alphas.mean(axis=0), 0, atol=0.04)


def test_pca_lighting_offset_lies_in_the_eigenvector_span_with_std_0_1():
    eigvec = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    eigval = np.array([30.0, 5.0, 0.0])  # rank 2: offsets must stay in the first two axes
    # As training draws them: alpha per image, the offsets added to the whole batch.
    alphas = tf.stack([transforms.lighting_alpha(tf.constant([i, 7])) for i in range(2000)])
    lit = transforms.add_per_image_channel(
        tf.zeros((2000, 4, 4, 3)), transforms.lighting_offsets(alphas, eigval, eigvec)
    )
    offsets = lit[:, 0, 0].numpy()
    alphas = offsets @ eigvec  # coordinates along each eigenvector = alpha_i * eigval_i
    assert np.allclose(alphas[:, 2], 0, atol=1e-4)
    np.testing.assert_allclose(alphas[:, :2].std(axis=0) / eigval[:2], 0.1, rtol=0.1)
    np.testing.assert_allclose(offsets.mean(axis=0), 0, atol=0.3)


def test_compute_stats_matches_numpy_eigh_on_the_same_pixels():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(3, 3))
    images = [np.clip(rng.normal(size=(9 + i, 7, 3)) @ base * 40 + 120, 0, 255) for i in range(5)]
    stats = compute_stats(images)
    pixels = np.concatenate([im.reshape(-1, 3) for im in images])
    np.testing.assert_allclose(stats.mean, pixels.mean(axis=0), rtol=1e-9)
    values, vectors = np.linalg.eigh(np.cov(pixels / 255.0, rowvar=False, bias=True))
    np.testing.assert_allclose(stats.eigval, values[::-1] * 255.0, rtol=1e-6)
    for j in range(3):  # eigenvectors up to sign
        v = np.array(stats.eigvec)[:, j]
        assert abs(abs(v @ vectors[:, ::-1][:, j]) - 1) < 1e-6
    round_trip = DatasetStats.from_json(stats.to_json())
    assert round_trip == stats


def test_directory_statistics_are_those_of_the_training_pixels(tree):
    source = directory_source(tree, val_fraction=0.25, seed=0)
    images = [decode_tf.decode(c).numpy() for c, _ in source.encoded("train")]
    expected = compute_stats(images)
    np.testing.assert_allclose(source.stats.mean, expected.mean, rtol=1e-9)
    np.testing.assert_allclose(source.stats.eigval, expected.eigval, rtol=1e-6)


def test_ten_crop_equals_ten_crops_cut_by_hand(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (20, 26, 3), dtype=np.uint8)
    crops = crop_tf.ten_crop(tf.constant(image, tf.float32), 16).numpy()
    by_hand = [image[:16, :16], image[:16, 10:], image[4:, :16], image[4:, 10:], image[2:18, 5:21]]
    by_hand += [c[:, ::-1] for c in by_hand]
    np.testing.assert_array_equal(crops, np.stack(by_hand).astype(np.float32))
    # Through the whole pipeline: a PNG whose shorter side already equals the resize size.
    for c in ("a", "b"):
        save(tmp_path / "t" / "train" / c / "x.png", Image.fromarray(image), "PNG")
        save(tmp_path / "t" / "val" / c / "x.png", Image.fromarray(image), "PNG")
    source = directory_source(tmp_path / "t")
    x, _ = next(iter(eval_dataset(source, protocol="ten_crop", image_size=16, resize=20)))
    np.testing.assert_allclose(x.numpy()[0], np.stack(by_hand), atol=1e-3)
    dense, _ = next(iter(eval_dataset(source, protocol="dense", image_size=16, resize=20)))
    np.testing.assert_allclose(dense.numpy(), np.stack([image, image[:, ::-1]]), atol=1e-3)
    center, _ = next(iter(eval_dataset(source, protocol="center", image_size=16, resize=20)))
    np.testing.assert_allclose(center.numpy()[0], image[2:18, 5:21], atol=1e-3)


def test_scale_jittering_draws_the_shorter_side_from_the_range():
    image = tf.zeros((30, 45, 3))
    sides = set()
    for i in range(200):
        s = transforms.random_scale(256, 512, tf.constant([i, 0]))
        sides.add(int(tf.reduce_min(tf.shape(crop_tf.resize_shorter(image, s))[:2])))
    assert min(sides) >= 256 and max(sides) <= 512 and len(sides) > 100


def test_demo_set_is_real_digits_with_a_fixed_split(tmp_path):
    first = ensure_demo_set(tmp_path / "one")
    second = ensure_demo_set(tmp_path / "two")

    def listing(root):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))

    assert listing(first) == listing(second)
    assert len(listing(first)) == 1797
    source = load_source(None, cache=tmp_path / "one")
    assert (source.num_train, source.num_val) == (1433, 364)
    first_batch = {int(y) for _, y in source.encoded("val").take(32)}
    assert len(first_batch) > 5  # validation mixes the digits: --val-steps sees them all
    assert source.class_names == [str(d) for d in range(10)]
    labels = np.repeat(np.arange(10), 20)
    assert demo_split(labels).sum() == 40  # every 5th of each class


def test_tfds_mock_data_source():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        source = load_source("imagenet2012")
        assert len(source.class_names) == 1000 and source.stats.mean[0] == pytest.approx(123.68)
        x, y = next(iter(train_dataset(source, image_size=16, resize=20, batch_size=3, seed=0)))
        assert x.shape == (3, 16, 16, 3) and y.dtype == tf.int32
        x, _ = next(iter(eval_dataset(source, protocol="ten_crop", image_size=16, resize=20)))
        assert x.shape[1:] == (10, 16, 16, 3)


def test_missing_imagenet_archives_say_which_files_go_where(tmp_path):
    with pytest.raises(ValueError, match=r"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar.*"
                       r"downloads/manual"):  # fmt: skip
        load_source("imagenet2012", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="neither a directory nor a TFDS dataset"):
        load_source("no_such_dataset_xyz", data_dir=str(tmp_path / "tfds"))


def test_every_pass_is_a_new_presentation_reproducible_from_the_seed(tree):
    source = directory_source(tree, val_fraction=0.25, seed=0)

    def passes(ds, n=3):
        return [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(n)]

    kw = dict(image_size=16, resize=20, batch_size=6, seed=5)
    first, again = passes(train_dataset(source, **kw)), passes(train_dataset(source, **kw))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)  # pass k is the same in every run
    assert not np.array_equal(first[0], first[1])  # but each pass is a new presentation
    assert not np.array_equal(first[1], first[2])
    cached = passes(train_dataset(source, cache=True, **kw))
    assert not np.array_equal(cached[0], cached[1])  # caching does not freeze the order


def test_training_crops_are_crops_of_the_image_and_half_are_mirrored(tmp_path):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (20, 29, 3), dtype=np.uint8)  # shorter side = resize
    for c in ("a", "b"):
        for i in range(20):
            save(tmp_path / "t" / "train" / c / f"{i}.png", Image.fromarray(image), "PNG")
        save(tmp_path / "t" / "val" / c / "0.png", Image.fromarray(image), "PNG")
    source = directory_source(tmp_path / "t")
    ds = train_dataset(source, image_size=12, resize=20, batch_size=40, seed=0, pca_lighting=False)
    crops = np.concatenate([x.numpy() for _ in range(3) for x, _ in ds])
    by_hand = {}
    for top in range(20 - 12 + 1):
        for left in range(29 - 12 + 1):
            patch = image[top : top + 12, left : left + 12].astype(np.float32)
            by_hand[patch.tobytes()] = (top, left, False)
            by_hand[patch[:, ::-1].copy().tobytes()] = (top, left, True)
    found = [by_hand.get(crop.tobytes()) for crop in crops]
    assert None not in found  # every training image is exactly a crop (or its mirror)
    mirrored = np.mean([f[2] for f in found])
    assert 0.35 < mirrored < 0.65
    assert len({f[:2] for f in found}) > 40  # positions spread over the 9 x 18 choices


def test_shards_are_disjoint_and_cover_the_data(tmp_path):
    colours = [(i, 255 - i, (7 * i) % 256) for i in range(0, 240, 10)]  # 24 distinct images
    for i, colour in enumerate(colours):
        path = tmp_path / "s" / "train" / str(i % 2) / f"{i}.png"
        save(path, Image.new("RGB", (9, 9), colour), "PNG")
        save(tmp_path / "s" / "val" / str(i % 2) / "0.png", Image.new("RGB", (9, 9)), "PNG")
    source = directory_source(tmp_path / "s")
    seen = []
    for index in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=index, num_replicas_in_sync=2
        )
        ds = train_dataset(
            source,
            image_size=8,
            resize=9,
            batch_size=4,
            seed=0,
            pca_lighting=False,
            input_context=ctx,
        )
        seen.append({tuple(x[0, 0]) for b, _ in ds for x in b.numpy()})
        assert all(b.shape[0] == 2 for b, _ in ds)  # the per-replica batch
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {tuple(float(v) for v in c) for c in colours}


def test_listing_decodes_each_file_once_and_rescans_only_changed_files(tree, monkeypatch):
    from keras_alexnet.data import scan

    first = directory_source(tree, val_fraction=0.25, seed=0)
    calls = []
    real = scan.scan_image
    monkeypatch.setattr(scan, "scan_image", lambda p: calls.append(p) or real(p))
    again = directory_source(tree, val_fraction=0.25, seed=0)
    assert calls == [] and again.skipped == first.skipped and again.stats == first.stats
    changed = tree / "cat" / "rgb0.jpg"
    save(changed, Image.new("RGB", (33, 35), (1, 2, 3)), "JPEG")
    os.utime(changed, ns=(1, 1))  # a new mtime even on coarse clocks
    third = directory_source(tree, val_fraction=0.25, seed=0)
    assert calls == [str(changed)]
    images = [decode_tf.decode(c).numpy() for c, _ in third.encoded("train")]
    np.testing.assert_allclose(third.stats.mean, compute_stats(images).mean, rtol=1e-9)
    np.testing.assert_allclose(compute_stats(third).eigval, third.stats.eigval, rtol=1e-6)


def test_sixteen_bit_png_decodes_to_eight_bit_rgb(tmp_path):
    values = np.arange(0, 65536, 4096, dtype=np.uint16).reshape(4, 4)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)  # mode I;16
    decoded = decode_tf.decode(tf.io.read_file(str(path))).numpy()
    assert decoded.shape == (4, 4, 3) and decoded.dtype == np.uint8
    np.testing.assert_allclose(decoded[..., 0], values / 257.0, atol=1)


def test_tfds_mock_grayscale_set_gets_computed_statistics():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8):
        source = load_source("mnist")
        assert source.kind == "tfds" and (source.num_train, source.num_val) == (8, 8)
        images = [decode_tf.decode(c).numpy() for c, _ in source.encoded("train")]
        np.testing.assert_allclose(source.stats.mean, compute_stats(images).mean, rtol=1e-9)
        x, y = next(iter(eval_dataset(source, protocol="center", image_size=20, resize=28)))
        assert x.shape == (8, 20, 20, 3) and x.dtype == tf.float32 and y.dtype == tf.int32
        np.testing.assert_array_equal(x[..., 0], x[..., 2])  # grayscale -> equal RGB


def test_tfds_names_with_configs_are_not_taken_for_directories(tmp_path):
    with pytest.raises(ValueError, match=r"imagenet2012_subset/1pct is not prepared.*manual"):
        load_source("imagenet2012_subset/1pct", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="no such directory"):
        load_source("./missing_folder")


def test_demo_pngs_hold_the_scikit_learn_digits(tmp_path):
    from keras_alexnet.data.demo import load_digits

    root = ensure_demo_set(cache_dir=tmp_path)
    digits = load_digits()
    for index in (0, 5, 1796):
        split = "val" if demo_split(digits.target)[index] else "train"
        path = root / split / str(digits.target[index]) / f"{index:04d}.png"
        stored = np.asarray(Image.open(path))
        np.testing.assert_array_equal(stored, np.round(digits.images[index] * 255 / 16))
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]  # no temporary left


# sha256 of the uint8 images then the uint8 labels of scikit-learn 1.9.1's load_digits().
DIGITS_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"


def test_bundled_digits_are_the_uci_set_with_their_attribution():
    from keras_alexnet.data.demo import DIGITS_FILE, load_digits

    digits = load_digits()
    assert digits.images.shape == (1797, 8, 8) and digits.target.shape == (1797,)
    content = digits.images.astype(np.uint8).tobytes() + digits.target.astype(np.uint8).tobytes()
    assert hashlib.sha256(content).hexdigest() == DIGITS_SHA256
    notice = DIGITS_FILE.with_name("digits.NOTICE.md").read_text()
    assert "CC BY 4.0" in notice and "Alpaydin" in notice and "scikit-learn" in notice


def test_bundled_digits_equal_scikit_learns_copy():
    datasets = pytest.importorskip("sklearn.datasets")
    from keras_alexnet.data.demo import load_digits

    ours, theirs = load_digits(), datasets.load_digits()
    np.testing.assert_array_equal(ours.images, theirs.images)
    np.testing.assert_array_equal(ours.target, theirs.target)
    assert ours.images.dtype == theirs.images.dtype and ours.target.dtype == theirs.target.dtype


def test_compute_stats_script_writes_the_source_statistics(tree, tmp_path):
    import runpy

    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "compute_stats.py"))
    out = tmp_path / "stats.json"
    args = script["get_args_parser"]().parse_args(
        ["--data", str(tree), "--output", str(out), "--val-fraction", "0.25"]
    )
    script["main"](args)
    written = json.loads(out.read_text())
    source = directory_source(tree, val_fraction=0.25, seed=0)
    assert DatasetStats.from_json(written["stats"]) == source.stats
    assert written["num_train"] == source.num_train


# ------------------------------------------------------- sharding: disjoint, complete

SHARD_EXAMPLES = 63  # odd: the two shards differ in size


def shard_colour(i):
    return (i, 2 * i, 3 * i)


def _tfds_on_disk(root):
    """A prepared TFDS set of constant 4x4 images of colour shard_colour(i), in 4 files."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class KerasAlexnetShardProbe(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = {
                "image": tfds.features.Image(shape=(4, 4, 3)),
                "label": tfds.features.ClassLabel(num_classes=3),
            }
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples(SHARD_EXAMPLES),
                "validation": self._generate_examples(4),
            }

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"image": np.full((4, 4, 3), shard_colour(i), np.uint8), "label": i % 3}

    KerasAlexnetShardProbe(data_dir=str(root)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=4)
    )
    return load_source("keras_alexnet_shard_probe", data_dir=str(root))


@pytest.fixture(params=["folders", "prepared", "tfds_files", "tfds_mock"])
def sharded_source(request, tmp_path):
    """A 63-example training split: folders, prepared.py's shards, TFDS files and mock data."""
    if request.param in ("folders", "prepared"):
        for i in range(SHARD_EXAMPLES):
            image = Image.new("RGB", (4, 4), shard_colour(i))
            save(tmp_path / "f" / "train" / str(i % 3) / f"{i}.png", image, "PNG")
        for c in range(3):
            save(tmp_path / "f" / "val" / str(c) / "0.png", Image.new("RGB", (4, 4)), "PNG")
        if request.param == "prepared":  # 4 shard files of 16
            prepare(tmp_path / "f", tmp_path / "p", size=4, shard_size=16, log=lambda _: None)
        yield load_source(tmp_path / ("p" if request.param == "prepared" else "f"))
    elif request.param == "tfds_files":
        yield _tfds_on_disk(tmp_path / "tfds")
    else:
        tfds = pytest.importorskip("tensorflow_datasets")
        with tfds.testing.mock_data(num_examples=SHARD_EXAMPLES):
            yield load_source("imagenet2012")


def digests(ds):
    return [hashlib.sha1(contents.numpy()).hexdigest() for contents, _ in ds]


def test_shuffled_shards_are_disjoint_and_hold_every_example_once(sharded_source):
    everything = digests(sharded_source.encoded("train"))
    assert len(set(everything)) == SHARD_EXAMPLES
    shards = []
    for index in range(2):
        # Each input pipeline shuffles with its own seed, as train_dataset does.
        ds = sharded_source.encoded(
            "train", shuffle_seed=7 + index, shuffle_buffer=8, shard=(2, index)
        )
        first, second = digests(ds), digests(ds)
        assert sorted(first) == sorted(second)  # every pass reads the same shard
        shards.append(first)
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(everything)


@pytest.mark.parametrize("cache", [False, True])
def test_training_pipelines_together_see_every_example_once(sharded_source, cache):
    if sharded_source.name == "imagenet2012":
        pytest.skip("mock images are random: crops cannot be traced back to examples")
    seen = []
    for index in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=index, num_replicas_in_sync=2
        )
        ds = train_dataset(
            sharded_source, image_size=4, resize=4, batch_size=2, seed=0, pca_lighting=False,
            cache=cache, input_context=ctx,
        )  # fmt: skip
        seen += [tuple(int(v) for v in x[0, 0]) for b, _ in ds for x in b.numpy()]
    # Each example's colour as stored (prepared JPEGs may move a channel by one).
    decode = decoder(sharded_source)
    stored = [tuple(decode(c).numpy()[0, 0]) for c, _ in sharded_source.encoded("train")]
    assert len(stored) == SHARD_EXAMPLES
    assert sorted(seen) == sorted(stored)


# ------------------------------------------------ splits: hold-out, order, degenerate trees


def class_tree(root, classes, n, size=(6, 5)):
    rng = np.random.default_rng(len(classes) * n)
    for c in classes:
        for i in range(n):
            save(root / c / f"{i:02d}.png", random_rgb(rng, *size), "PNG")
    return root


def test_train_tree_without_val_holds_out_a_seeded_fraction_like_a_single_tree(tmp_path):
    class_tree(tmp_path / "nested" / "train", ["a", "b"], 10)
    class_tree(tmp_path / "flat", ["a", "b"], 10)  # the same files, no train/ level
    nested = directory_source(tmp_path / "nested", val_fraction=0.2, seed=3)
    flat = directory_source(tmp_path / "flat", val_fraction=0.2, seed=3)
    assert (nested.num_train, nested.num_val) == (16, 4)

    def names(source, split):
        return sorted(
            (int(y), hashlib.sha1(c.numpy()).hexdigest()) for c, y in source.encoded(split)
        )

    assert names(nested, "val") == names(flat, "val")
    assert [y for y, _ in names(nested, "val")] == [0, 0, 1, 1]  # 20 % of each class
    assert not set(names(nested, "val")) & set(names(nested, "train"))
    other = directory_source(tmp_path / "nested", val_fraction=0.2, seed=4)
    assert names(other, "val") != names(nested, "val")  # the seed chooses the hold-out
    assert [y for y, _ in names(other, "val")] == [0, 0, 1, 1]  # still 20 % of each class
    with pytest.raises(ValueError, match="val_fraction must be in"):
        directory_source(tmp_path / "nested", val_fraction=0)


def test_validation_order_mixes_the_classes_so_a_prefix_is_a_fair_sample(tmp_path):
    class_tree(tmp_path / "t" / "train", ["a", "b", "c"], 4)
    class_tree(tmp_path / "t" / "val", ["a", "b", "c"], 8)
    source = directory_source(tmp_path / "t")
    _, labels = next(
        iter(eval_dataset(source, protocol="center", image_size=4, resize=5, batch_size=6))
    )
    assert len(set(labels.numpy())) > 1
    order = [int(y) for _, y in source.encoded("val")]
    assert sorted(order) == [0] * 8 + [1] * 8 + [2] * 8
    assert order == [int(y) for _, y in directory_source(tmp_path / "t").encoded("val")]
    held_out = directory_source(tmp_path / "t" / "train", val_fraction=0.5)
    assert len({int(y) for _, y in held_out.encoded("val").take(3)}) > 1


def test_a_class_without_usable_images_is_one_clear_error(tmp_path):
    class_tree(tmp_path / "t", ["cat", "dog"], 3)
    for name in ("dog/00.png", "dog/01.png", "dog/02.png"):
        (tmp_path / "t" / name).write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"t/dog: no training images: all 3 files are unusable"):
        directory_source(tmp_path / "t")


def test_a_one_class_tree_is_one_clear_error(tmp_path):
    class_tree(tmp_path / "t" / "train", ["cat"], 3)
    with pytest.raises(ValueError, match=r"t/train: one class folder \(cat\).*at least 2 classes"):
        directory_source(tmp_path / "t")


def test_scan_skips_extremely_elongated_images_with_the_reason(tmp_path):
    class_tree(tmp_path / "t", ["a", "b"], 3)
    save(tmp_path / "t" / "a" / "strip.png", Image.new("RGB", (20_000, 1)), "PNG")
    save(tmp_path / "t" / "b" / "pole.jpg", Image.new("RGB", (2, 300)), "JPEG")
    save(tmp_path / "t" / "b" / "wide.png", Image.new("RGB", (200, 10)), "PNG")  # 20:1 is fine
    source = directory_source(tmp_path / "t")
    reasons = {Path(p).name: r for p, r in source.skipped}
    assert sorted(reasons) == ["pole.jpg", "strip.png"]
    assert reasons["strip.png"].startswith("too elongated: 20000x1 pixels")
    assert source.num_train + source.num_val == 7
