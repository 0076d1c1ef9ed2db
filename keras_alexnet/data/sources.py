"""Where images come from: class-folder directories, TensorFlow Datasets, the demo set.

A `Source` hands the pipeline one `tf.data.Dataset` of (encoded image bytes, int32
label) per split, plus the class names and the training set's statistics. Nothing here
downloads anything.
"""

import concurrent.futures
import dataclasses
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_alexnet import fileio
from keras_alexnet.data import transforms
from keras_alexnet.data.stats import IMAGENET_STATS, DatasetStats, StatsAccumulator

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
MAX_PIXELS = 100_000_000  # larger images are skipped: one would take > 300 MB decoded
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def cache_dir(cache=None):
    """Return the cache directory: `cache`, $KERAS_ALEXNET_CACHE or ~/.cache/keras_alexnet."""
    cache = cache or os.environ.get("KERAS_ALEXNET_CACHE") or "~/.cache/keras_alexnet"
    return Path(cache).expanduser()


@dataclasses.dataclass
class Source:
    """A dataset's splits as (encoded bytes, label) datasets, its classes and statistics."""

    name: str
    class_names: list[str]
    stats: DatasetStats
    sizes: dict[str, int]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    _factories: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def num_train(self):
        """Number of training images."""
        return self.sizes.get("train", 0)

    @property
    def num_val(self):
        """Number of validation images."""
        return self.sizes.get("val", 0)

    def encoded(self, split, shuffle_seed=None):
        """Return a Dataset of (encoded image bytes, int32 label) for `split`.

        With `shuffle_seed` the examples come in a seeded random order (file lists are
        shuffled whole; TFDS shards are shuffled, then a buffer).
        """
        if split not in self._factories:
            raise ValueError(
                f"{self.name} has no split {split!r}; it has {sorted(self._factories)}"
            )
        if not self.sizes.get(split):
            raise ValueError(f"{self.name}: split {split!r} is empty")
        return self._factories[split](shuffle_seed)


# ----------------------------------------------------------------------------- folders


def _header_size(head):
    """Return (width, height) from a JPEG/PNG/GIF/BMP header, or None if unrecognised."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", head[6:10])
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)
    if head[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                return None
            marker = head[i + 1]
            length = struct.unpack(">H", head[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", head[i + 5 : i + 9])
                return w, h
            i += 2 + length
        return (0, 0)  # SOF beyond the bytes read: let the decoder decide
    return None


def check_image(path):
    """Return None if `path` decodes to an RGB image the pipeline can use, else the reason."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if not data:
        return "empty file"
    size = _header_size(data[:65536])
    if size is None:
        return "not a JPEG, PNG, GIF or BMP image"
    if size[0] * size[1] > MAX_PIXELS:
        return f"too large ({size[0]}x{size[1]} pixels; the limit is {MAX_PIXELS:,})"
    try:
        image = transforms.decode(data)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        return "cannot be decoded: " + str(e).splitlines()[0][:120]
    if image.shape[0] < 1 or image.shape[1] < 1:
        return "has no pixels"
    return None


def _verify(paths, cache):
    """Check every file once (results cached by path, size and mtime); return the bad ones."""
    stamps = {}
    for p in paths:
        st = os.stat(p)
        stamps[p] = f"{st.st_size}:{st.st_mtime_ns}"
    key = hashlib.sha1("\n".join(f"{p}|{s}" for p, s in stamps.items()).encode()).hexdigest()
    cached = cache / "verified" / f"{key}.json"
    if cached.exists():
        return {p: r for p, r in fileio.read_json(cached).items()}
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        reasons = dict(zip(paths, pool.map(check_image, paths), strict=True))
    bad = {p: r for p, r in reasons.items() if r}
    fileio.write_json(cached, bad)
    return bad


def _list_tree(root):
    """Return (class_names, [(path, class name)]) of a root/<class>/<image> tree."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class sub-folders (expected {root}/<class>/<image>)")
    files = []
    for name in classes:
        images = sorted(
            str(p)
            for p in (root / name).iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not images:
            raise ValueError(
                f"{root / name}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} files)"
            )
        files += [(p, name) for p in images]
    return classes, files


def _files_factory(paths, labels):
    """Return a factory of (bytes, label) datasets over a fixed file list."""
    paths = np.asarray(paths, dtype=object).astype(str)
    labels = np.asarray(labels, dtype=np.int32)

    def make(shuffle_seed):
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        if shuffle_seed is not None:
            ds = ds.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=False)
        return ds.map(lambda p, y: (tf.io.read_file(p), y), num_parallel_calls=tf.data.AUTOTUNE)

    return make


def _stats_of(dataset, cache_file):
    """Compute (and cache) DatasetStats over the decoded images of a (bytes, label) dataset."""
    if cache_file is not None and cache_file.exists():
        return DatasetStats.load(cache_file)
    stats = stats_of_dataset(dataset)
    if cache_file is not None:
        stats.save(cache_file)
    return stats


def stats_of_dataset(dataset):
    """Mean and RGB PCA over all images of a (bytes, label) dataset, summed in float64."""

    def moments(contents, _):
        x = tf.reshape(tf.cast(transforms.decode(contents), tf.float64), [-1, 3])
        return tf.cast(tf.shape(x)[0], tf.float64), tf.reduce_sum(x, 0), tf.matmul(x, x, True)

    acc = StatsAccumulator()
    for count, total, outer in dataset.map(moments, num_parallel_calls=tf.data.AUTOTUNE):
        acc.count += int(count)
        acc.total += total.numpy()
        acc.outer += outer.numpy()
    return acc.result()


def directory_source(root, *, val_fraction=0.1, seed=0, cache=None, name=None):
    """A class-folder tree: root/train/<class>/*, root/val/<class>/*, or root/<class>/*.

    Class names are the sub-folder names in sorted order. With a single tree, a seeded
    `val_fraction` of each class is held out for validation. Files that do not decode
    (truncated, not an image, too large) are skipped, counted and reported.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root}: no such directory")
    cache = cache_dir(cache)
    if (root / "train").is_dir():
        class_names, train = _list_tree(root / "train")
        val = []
        if (root / "val").is_dir():
            val_classes, val = _list_tree(root / "val")
            if val_classes != class_names:
                raise ValueError(
                    f"{root}: train/ and val/ have different classes "
                    f"({len(class_names)} vs {len(val_classes)})"
                )
    else:
        class_names, files = _list_tree(root)
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1). Received: {val_fraction}")
        rng = np.random.default_rng(seed)
        train, val = [], []
        for name_ in class_names:
            members = [f for f in files if f[1] == name_]
            order = rng.permutation(len(members))
            n_val = int(round(len(members) * val_fraction))
            val += [members[i] for i in sorted(order[:n_val])]
            train += [members[i] for i in sorted(order[n_val:])]
    bad = _verify([p for p, _ in train + val], cache)
    skipped = sorted(bad.items())
    if skipped:
        shown = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        print(f"keras_alexnet: skipping {len(skipped)} unusable file(s): {shown}{more}")
    index = {c: i for i, c in enumerate(class_names)}
    splits = {}
    for split, files in (("train", train), ("val", val)):
        good = [(p, index[c]) for p, c in files if p not in bad]
        splits[split] = ([p for p, _ in good], [y for _, y in good])
    if not splits["train"][0]:
        raise ValueError(f"{root}: no usable training images")
    factories = {s: _files_factory(*v) for s, v in splits.items()}
    key = hashlib.sha1("\n".join(splits["train"][0]).encode()).hexdigest()
    stats = _stats_of(factories["train"](None), cache / "stats" / f"{key}.json")
    return Source(
        name=name or str(root),
        class_names=class_names,
        stats=stats,
        sizes={s: len(v[0]) for s, v in splits.items()},
        skipped=skipped,
        _factories=factories,
    )


# ------------------------------------------------------------------------------- tfds


def tfds_source(name, data_dir=None, *, cache=None):
    """A TensorFlow Datasets image classification set, read from `data_dir` (no download).

    `imagenet2012` is built from the official archives placed in its manual directory;
    the error says which files go where when they are missing.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises its own DatasetNotFoundError and friends
        raise ValueError(f"{name!r} is neither a directory nor a TFDS dataset: {e}") from None
    info = builder.info
    image_key = next(
        (k for k, f in info.features.items() if isinstance(f, tfds.features.Image)), None
    )
    label_key = next(
        (k for k, f in info.features.items() if isinstance(f, tfds.features.ClassLabel)), None
    )
    if image_key is None or label_key is None:
        raise ValueError(f"{name}: not an image classification dataset (needs Image + ClassLabel)")
    # info.splits is empty until the set is generated (and under tfds.testing.mock_data).
    available = set(info.splits.keys()) or {"train", "validation"}
    val_split = next((s for s in ("validation", "test") if s in available), None)
    split_names = {"train": "train", "val": val_split}
    try:
        builder.as_dataset(split=split_names["train"])  # opens files lazily: cheap
    except Exception:  # tfds raises AssertionError / its own errors when data is missing
        _prepare_or_explain(builder, name)

    def factory(tfds_split):
        def make(shuffle_seed):
            read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed)
            ds = builder.as_dataset(
                split=tfds_split,
                shuffle_files=shuffle_seed is not None,
                decoders={image_key: tfds.decode.SkipDecoding()},
                read_config=read_config,
            )
            ds = ds.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)))
            if shuffle_seed is not None:
                ds = ds.shuffle(10_000, seed=shuffle_seed, reshuffle_each_iteration=False)
            return ds

        return make

    factories = {s: factory(t) for s, t in split_names.items() if t}
    sizes = {s: _num_examples(info, t, factories[s]) for s, t in split_names.items() if t}
    if name.split(":")[0] == "imagenet2012":
        stats = IMAGENET_STATS
    else:
        key = hashlib.sha1(f"{name}|{builder.data_dir}".encode()).hexdigest()
        stats = _stats_of(factories["train"](None), cache_dir(cache) / "stats" / f"{key}.json")
    return Source(
        name=name,
        class_names=list(info.features[label_key].names),
        stats=stats,
        sizes=sizes,
        _factories=factories,
    )


def _num_examples(info, split, factory):
    """A split's size from the dataset info, else by counting (mock data)."""
    try:
        return info.splits[split].num_examples
    except KeyError:
        return int(factory(None).reduce(0, lambda n, _: n + 1))


def _prepare_or_explain(builder, name):
    """Build from the manual directory when possible, else say exactly what is missing."""
    manual = Path(builder._data_dir_root) / "downloads" / "manual"
    if name.split(":")[0] == "imagenet2012":
        missing = [f for f in IMAGENET_MANUAL_FILES if not (manual / f).exists()]
        if missing:
            raise ValueError(
                f"imagenet2012 is not prepared in {builder._data_dir_root}: place "
                f"{' and '.join(missing)} (from image-net.org) in {manual}/ and run again"
            )
        print(f"keras_alexnet: building imagenet2012 from {manual} (once; this takes hours)")
        builder.download_and_prepare()
        return
    raise ValueError(
        f"TFDS dataset {name!r} is not prepared in {builder._data_dir_root}; this machine "
        f"cannot download it. Prepare it elsewhere with `tfds build {name} --data_dir DIR` "
        "and pass --data-dir DIR"
    )


def load_source(data=None, data_dir=None, *, val_fraction=0.1, seed=0, cache=None):
    """Open a data source: None (the bundled demo set), a class-folder directory, or a TFDS name."""
    if data is None:
        from keras_alexnet.data.demo import DEMO_NAME, ensure_demo_set

        return directory_source(ensure_demo_set(cache), cache=cache, name=DEMO_NAME)
    path = Path(data).expanduser()
    if path.exists() or os.sep in str(data) or str(data).startswith("."):
        return directory_source(path, val_fraction=val_fraction, seed=seed, cache=cache)
    return tfds_source(data, data_dir, cache=cache)
