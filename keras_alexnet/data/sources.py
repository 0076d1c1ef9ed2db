"""Where images come from: class-folder directories, TensorFlow Datasets, the demo set.

A `Source` hands the pipeline one `tf.data.Dataset` of (encoded image bytes, int32
label) per split, plus the class names and the training set's statistics. Nothing here
downloads anything.
"""

import concurrent.futures
import dataclasses
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_alexnet import fileio, imageinfo, preprocess
from keras_alexnet.data import transforms
from keras_alexnet.data.cache import cache_dir
from keras_alexnet.data.demo import DEMO_NAME, ensure_demo_set
from keras_alexnet.data.stats import (
    IMAGENET_STATS,
    DatasetStats,
    StatsAccumulator,
    compute_stats,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
MAX_PIXELS = preprocess.DATA_MAX_PIXELS  # larger images are skipped (preprocess says why)
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
# TFDS builders made from the ILSVRC-2012 archives: the published statistics apply.
IMAGENET_BUILDERS = ("imagenet2012", "imagenet2012_subset")
REPORTED = 5  # how many skipped file names a report shows
_VAL_ORDER = 1  # the validation order's seed stream, apart from the hold-out's
_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[\w.-]+)?(:[\d.*]+)?$")


@dataclasses.dataclass
class Source:
    """A dataset's splits as (encoded bytes, label) datasets, its classes and statistics.

    `skipped` lists (path, reason) for every file left out because it cannot be used;
    `kind` is "directory" (folders and the demo set) or "tfds".
    """

    name: str
    class_names: list[str]
    stats: DatasetStats
    sizes: dict[str, int]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    kind: str = "directory"  # or "tfds", "prepared"
    layout: object = None  # a prepared set's `layout.Layout` (how its images were rescaled)
    _factories: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def num_train(self):
        """Number of training images."""
        return self.sizes.get("train", 0)

    @property
    def num_val(self):
        """Number of validation images."""
        return self.sizes.get("val", 0)

    def encoded(self, split, *, shuffle_seed=None, shuffle_buffer=10_000, shard=None):
        """Return a Dataset of (encoded image bytes, int32 label) for `split`.

        `shard=(num_shards, index)` keeps a disjoint 1/num_shards of the examples, chosen
        before any shuffling, so the shards together hold every example once: every
        num_shards-th file (folders) or an even subsplit (TFDS).
        With `shuffle_seed` (an int, or -1 for an unseeded shuffle) the order is shuffled,
        anew on every iteration: a whole file list at once, TFDS records through their
        shuffled files and a `shuffle_buffer`-long buffer.
        """
        if split not in self._factories:
            raise ValueError(
                f"{self.name} has no split {split!r}; it has {sorted(self._factories)}"
            )
        if not self.sizes.get(split):
            raise ValueError(f"{self.name}: split {split!r} is empty")
        return self._factories[split](shuffle_seed, shuffle_buffer, shard)


def shuffle_each_pass(ds, buffer, seed):
    """Shuffle anew each iteration; seed -1 means unseeded."""
    seed = None if seed == -1 else seed
    return ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)


# ----------------------------------------------------------------------------- folders


def read_image_bytes(path):
    """A file's bytes, or (None, the reason it cannot be used) without decoding it."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return None, f"unreadable ({e.strerror})"
    return data, header_problem(data)


def header_problem(data):
    """Why encoded bytes cannot be used, from their header alone; None if they may be."""
    if not data:
        return "empty file"
    size = imageinfo.header_size(data[:65536])
    if size is None:
        return "not a JPEG, PNG, GIF or BMP image"
    return imageinfo.shape_problem(*size, MAX_PIXELS)  # refused before decoding


def decoded_problem(decode, *args):
    """Run `decode(*args)`; return (its result, None) or (None, why the image is unusable).

    The result's first element is the decoded [H, W, 3] image (a tensor).
    """
    try:
        result = decode(*args)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        return None, "cannot be decoded: " + _decode_error(e)[:120]
    height, width = (int(v) for v in result[0].shape[:2])
    if height < 1 or width < 1:
        return None, "has no pixels"
    # A JPEG whose frame header the header read did not reach:
    return result, imageinfo.shape_problem(width, height, MAX_PIXELS)


def _decode_error(error):
    """A TensorFlow decode error's own message, without a tf.function's wrapping lines.

    Those are "Graph execution error:", "Detected at node ..." and the indented Python
    frames and node lines around the kernel's message.
    """
    lines = [
        line for line in str(error.message).splitlines()
        if line.strip() and not line[0].isspace()
        and not line.startswith(("Graph execution error", "Detected at node"))
    ]  # fmt: skip
    return re.sub(r"\{\{[^}]*\}\}\s*", "", lines[0] if lines else type(error).__name__)


def pack_moments(count, total, outer):
    """One image's statistics row: (count, sum of RGB, upper triangle of sum of outer products)."""
    return np.concatenate([[count], total, np.asarray(outer)[np.triu_indices(3)]])


def scan_image(path):
    """Decode one file as the pipeline will; return (reason or None, pixel moments or None).

    The moments are `pack_moments`' row, the statistics' share of this image; they let the
    statistics of any subset be summed without decoding again.
    """
    data, problem = read_image_bytes(path)
    if problem:
        return problem, None
    result, problem = decoded_problem(lambda d: (transforms.decode(d),), data)
    if problem:
        return problem, None
    x = result[0].numpy().reshape(-1, 3).astype(np.float64)
    return None, pack_moments(len(x), x.sum(axis=0), x.T @ x)


def _scan(paths, cache):
    """Scan every file once; results are cached per file by (path, size, mtime).

    Returns {path: (reason, moments)}. A second listing of an unchanged tree decodes
    nothing; a changed or added file is decoded again.
    """
    stamps = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:  # a link to nowhere or a loop: the scan says why it is unusable
            stamps[p] = (-1, -1)
            continue
        stamps[p] = (st.st_size, st.st_mtime_ns)
    key = hashlib.sha1(os.path.commonpath(paths).encode()).hexdigest() if paths else "none"
    cache_file = cache / "scan" / f"{key}.npz"
    known = {}
    if cache_file.exists():
        with np.load(cache_file) as z:
            arrays = {k: z[k] for k in z.files}
        names = arrays["paths"].tobytes().decode().split("\n")
        reasons = arrays["reasons"].tobytes().decode().split("\n")
        for i, p in enumerate(names):
            stamp = (int(arrays["size"][i]), int(arrays["mtime"][i]))
            known[p] = (stamp, reasons[i] or None, None if reasons[i] else arrays["moments"][i])
    results = {p: known[p][1:] for p in paths if p in known and known[p][0] == stamps[p]}
    todo = [p for p in paths if p not in results]
    if todo:
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            results.update(zip(todo, pool.map(scan_image, todo), strict=True))
        merged = {p: (stamps[p], *results[p]) for p in paths}
        merged.update({p: v for p, v in known.items() if p not in merged})
        names = list(merged)
        with fileio.atomic_path(cache_file) as tmp:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    paths=np.frombuffer("\n".join(names).encode(), np.uint8),
                    reasons=np.frombuffer(
                        "\n".join((merged[p][1] or "").replace("\n", " ") for p in names).encode(),
                        np.uint8,
                    ),
                    size=np.array([merged[p][0][0] for p in names], np.int64),
                    mtime=np.array([merged[p][0][1] for p in names], np.int64),
                    moments=np.stack(
                        [np.zeros(10) if merged[p][2] is None else merged[p][2] for p in names]
                    ),
                )
    return results


def stats_from_moments(moments):
    """DatasetStats from per-image moments rows (count, sum[3], upper outer[6])."""
    total = np.sum(moments, axis=0)
    acc = StatsAccumulator()
    acc.count = total[0]
    acc.total = total[1:4]
    outer = np.zeros((3, 3))
    outer[np.triu_indices(3)] = total[4:]
    acc.outer = outer + np.triu(outer, 1).T
    return acc.result()


def _list_tree(root):
    """Return (class_names, [(path, class name)]) of a root/<class>/<image> tree."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class sub-folders (expected {root}/<class>/<image>)")
    files = []
    for name in classes:
        # A link to nowhere or a link loop is listed too, so that it is reported as skipped.
        images = sorted(
            str(p)
            for p in (root / name).iterdir()
            if (p.is_file() or p.is_symlink()) and p.suffix.lower() in IMAGE_EXTENSIONS
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

    def make(shuffle_seed, shuffle_buffer, shard):
        del shuffle_buffer  # file names are small: the whole list is shuffled
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        if shard is not None:
            ds = ds.shard(*shard)
        if shuffle_seed is not None:
            ds = shuffle_each_pass(ds, len(paths), shuffle_seed)
        return ds.map(lambda p, y: (tf.io.read_file(p), y), num_parallel_calls=tf.data.AUTOTUNE)

    return make


def report_skipped(skipped):
    """Print once how many files were skipped, and the first few with the reason."""
    if not skipped:
        return
    shown = "; ".join(f"{p}: {r}" for p, r in skipped[:REPORTED])
    more = f" (and {len(skipped) - REPORTED} more)" if len(skipped) > REPORTED else ""
    print(f"keras_alexnet: skipping {len(skipped)} unusable file(s): {shown}{more}")


def directory_source(root, *, val_fraction=0.1, seed=0, cache=None, name=None):
    """A class-folder tree: root/train/<class>/*, root/val/<class>/*, or root/<class>/*.

    Class names are the sub-folder names in sorted order. Without a val/ tree, a seeded
    `val_fraction` of each class's usable images is held out for validation. Every file is
    decoded once when first listed (cached by path, size and mtime): files that do not
    decode (truncated, not an image, too large or elongated) are skipped, counted and
    reported, and the training statistics come from the same pass. The validation order is
    a fixed seeded mix of the classes, so its first batches are a fair sample. Raises
    ValueError for fewer than 2 classes or a class left without training images.
    """
    from keras_alexnet.data import prepared

    root = Path(root).expanduser()
    if prepared.is_prepared(root):
        return prepared.prepared_source(root)
    cache = cache_dir(cache)
    folder, class_names, listed, val = list_directory(root, val_fraction)
    scanned = _scan([p for p, _ in listed + (val or [])], cache)
    skipped = sorted((p, r) for p, (r, _) in scanned.items() if r)
    report_skipped(skipped)
    train = [f for f in listed if not scanned[f[0]][0]]
    if val is None:
        train, val = hold_out(train, class_names, val_fraction, seed)
    val = [f for f in val if not scanned[f[0]][0]]
    check_every_class_trains(folder, class_names, listed, train, dict(skipped))
    val = validation_order(val, seed)
    index = {c: i for i, c in enumerate(class_names)}
    splits = {
        s: ([p for p, _ in f], [index[c] for _, c in f])
        for s, f in (("train", train), ("val", val))
    }
    stats = stats_from_moments([scanned[p][1] for p in splits["train"][0]])
    return Source(
        name=name or str(root),
        class_names=class_names,
        stats=stats,
        sizes={s: len(v[0]) for s, v in splits.items()},
        skipped=skipped,
        _factories={s: _files_factory(*v) for s, v in splits.items()},
    )


def list_directory(root, val_fraction):
    """List a class-folder tree without reading any file: (folder, classes, train, val).

    `train` and `val` are [(path, class name)]; `val` is None without a val/ tree (the
    caller holds out `val_fraction`). ValueError for a missing root, fewer than 2 classes,
    or train/ and val/ with other classes.
    """
    if not root.is_dir():
        raise ValueError(f"{root}: no such directory")
    folder = root / "train" if (root / "train").is_dir() else root
    class_names, listed = _list_tree(folder)
    if len(class_names) < 2:
        raise ValueError(
            f"{folder}: one class folder ({class_names[0]}); a classifier needs at least 2 classes"
        )
    val = None
    if folder != root and (root / "val").is_dir():
        val_classes, val = _list_tree(root / "val")
        if val_classes != class_names:
            raise ValueError(
                f"{root}: train/ and val/ have different classes "
                f"({len(class_names)} vs {len(val_classes)})"
            )
    if val is None and not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1). Received: {val_fraction}")
    return folder, class_names, listed, val


def validation_order(files, seed):
    """Validation files in a fixed seeded order that mixes the classes.

    Class-sorted, the first N batches (--val-steps) would hold only the first classes.
    """
    return [files[i] for i in np.random.default_rng([seed, _VAL_ORDER]).permutation(len(files))]


def hold_out(files, class_names, val_fraction, seed):
    """Split [(path, class)] into (train, val), a seeded `val_fraction` of each class to val."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for name in class_names:
        members = [f for f in files if f[1] == name]
        order = rng.permutation(len(members))
        n_val = int(round(len(members) * val_fraction))
        val += [members[i] for i in sorted(order[:n_val])]
        train += [members[i] for i in sorted(order[n_val:])]
    return train, val


def check_every_class_trains(folder, class_names, listed, train, unusable):
    """Raise for a class with no training image: it would be a label the model never sees.

    `listed` and `train` are [(path, class)]; `unusable` maps a skipped path to its reason.
    """
    trained = {c for _, c in train}
    for name in class_names:
        if name in trained:
            continue
        reasons = [unusable[p] for p, c in listed if c == name and p in unusable]
        total = sum(c == name for _, c in listed)
        why = f"all {total} files are unusable (first: {reasons[0]})"
        if len(reasons) < total:
            why = f"{len(reasons)} of {total} files are unusable and the rest went to validation"
        raise ValueError(f"{folder / name}: no training images: {why}")


# ------------------------------------------------------------------------------- tfds


def _tfds_root(builder):
    """The TFDS data directory a builder reads from (its data_dir less name/[config/]version)."""
    return Path(builder.data_dir).parents[len(builder.info.full_name.split("/")) - 1]


def tfds_source(name, data_dir=None, *, cache=None, with_stats=True):
    """A TensorFlow Datasets image classification set, read from `data_dir` (no download).

    `imagenet2012` is built from the official archives placed in its manual directory;
    the error says which files go where when they are missing. Statistics: ImageNet's
    published values for the ImageNet builders, else computed once over the training
    split and cached; without `with_stats`, None for the other sets (no pass over the data).
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises its own DatasetNotFoundError and friends
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{name!r} is neither a directory nor a TFDS dataset: {first}") from None
    info = builder.info
    keys = _tfds_keys(info, name)
    # info.splits is empty until the set is generated (and under tfds.testing.mock_data).
    available = set(info.splits.keys()) or {"train", "validation"}
    val_split = next((s for s in ("validation", "test") if s in available), None)
    split_names = {"train": "train", "val": val_split}
    try:
        builder.as_dataset(split=split_names["train"])  # opens files lazily: cheap
    except Exception:  # tfds raises AssertionError / its own errors when data is missing
        _prepare_or_explain(builder, name)
    factories = {s: _tfds_factory(builder, keys, t) for s, t in split_names.items() if t}
    sizes = {s: _num_examples(info, t, factories[s]) for s, t in split_names.items() if t}
    return Source(
        name=name,
        class_names=list(info.features[keys[1]].names),
        stats=_tfds_stats(name, builder, factories["train"], cache, with_stats),
        sizes=sizes,
        kind="tfds",
        _factories=factories,
    )


def _tfds_keys(info, name):
    """The (image, label) feature names of an image classification set; ValueError if none."""
    import tensorflow_datasets as tfds

    def first(kind):
        return next((k for k, f in info.features.items() if isinstance(f, kind)), None)

    image_key, label_key = first(tfds.features.Image), first(tfds.features.ClassLabel)
    if image_key is None or label_key is None:
        raise ValueError(f"{name}: not an image classification dataset (needs Image + ClassLabel)")
    return image_key, label_key


def _tfds_factory(builder, keys, tfds_split):
    """A split's `Source` factory: (shuffle_seed, shuffle_buffer, shard) -> its Dataset."""
    import tensorflow_datasets as tfds

    image_key, label_key = keys
    info = builder.info

    def make(shuffle_seed, shuffle_buffer, shard):
        shuffled = shuffle_seed is not None
        seed = None if shuffle_seed in (None, -1) else shuffle_seed
        # Files shuffled with a per-pipeline seed and then sharded would overlap between
        # pipelines; shard first. A prepared split has known sizes: each pipeline reads
        # only its even subsplit (sizes differ by at most one) and shuffles its files.
        # Otherwise (mock data) every pipeline reads the files in order and keeps every
        # num_shards-th example.
        split, by_subsplit = tfds_split, shard is not None and tfds_split in info.splits
        if by_subsplit:
            split = tfds.even_splits(tfds_split, shard[0])[shard[1]]
        read_config = tfds.ReadConfig(shuffle_seed=seed, shuffle_reshuffle_each_iteration=shuffled)
        ds = builder.as_dataset(
            split=split,
            shuffle_files=shuffled and (shard is None or by_subsplit),
            decoders={image_key: tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
        ds = ds.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)))
        if shard is not None and not by_subsplit:
            ds = ds.shard(*shard)
        if shuffled:
            ds = shuffle_each_pass(ds, shuffle_buffer, shuffle_seed)
        return ds

    return make


def _tfds_stats(name, builder, train_factory, cache, compute=True):
    """ImageNet's published statistics for its builders, else the training split's, cached."""
    if _base_name(name) in IMAGENET_BUILDERS:
        return IMAGENET_STATS
    if not compute:
        return None
    key = hashlib.sha1(f"{name}|{builder.data_dir}".encode()).hexdigest()
    cache_file = cache_dir(cache) / "stats" / f"{key}.json"
    if cache_file.exists():
        return DatasetStats.load(cache_file)
    stats = compute_stats(train_factory(None, 0, None))
    stats.save(cache_file)
    return stats


def _base_name(name):
    """'imagenet2012_subset/1pct:5.0.0' -> 'imagenet2012_subset'."""
    return name.split(":")[0].split("/")[0]


def _num_examples(info, split, factory):
    """A split's size from the dataset info, else by counting (mock data)."""
    try:
        return info.splits[split].num_examples
    except KeyError:
        return int(factory(None, 0, None).reduce(0, lambda n, _: n + 1))


def _prepare_or_explain(builder, name):
    """Build from the manual directory when possible, else say exactly what is missing."""
    root = _tfds_root(builder)
    manual = root / "downloads" / "manual"
    if _base_name(name) in IMAGENET_BUILDERS:
        missing = [f for f in IMAGENET_MANUAL_FILES if not (manual / f).exists()]
        if missing:
            raise ValueError(
                f"{name} is not prepared in {root}: place {' and '.join(missing)} "
                f"(the official ILSVRC-2012 archives from image-net.org) in {manual}/ "
                "and run again; the first run then builds the dataset (hours, once)"
            )
        print(f"keras_alexnet: building {name} from {manual} (once; this takes hours)")
        builder.download_and_prepare()
        return
    raise ValueError(
        f"TFDS dataset {name!r} is not prepared in {root}; this machine cannot download "
        f"it. Prepare it elsewhere with `tfds build {name} --data_dir DIR`, copy DIR here "
        "and pass it as the data directory"
    )


def load_source(data=None, data_dir=None, *, val_fraction=0.1, seed=0, cache=None):
    """Open a data source: None (the bundled demo set), a class-folder directory, or a TFDS name.

    A path that exists, or that starts with '/', '.' or '~', is a directory; anything else
    that looks like a TFDS name ('mnist', 'imagenet2012_subset/1pct:5.0.0') is read from
    `data_dir` (TFDS's default data directory when None).
    """
    if data is None:
        return directory_source(ensure_demo_set(cache), cache=cache, name=DEMO_NAME)
    data = str(data)
    path = Path(data).expanduser()
    if path.exists() or data.startswith(("/", ".", "~")) or not _TFDS_NAME.match(data):
        return directory_source(path, val_fraction=val_fraction, seed=seed, cache=cache)
    return tfds_source(data, data_dir, cache=cache)


def source_stats(data=None, data_dir=None, *, output=None, val_fraction=0.1, seed=0, cache=None):
    """Compute a source's training statistics from its pixels; write them as JSON to `output`.

    Folders and the demo set reuse the decoding pass of their listing; a TFDS set, ImageNet
    included (whose source otherwise uses the published values), is decoded once more.
    Returns {"source", "num_train", "stats"}, the document written.
    """
    source = load_source(data, data_dir, val_fraction=val_fraction, seed=seed, cache=cache)
    stats = source.stats
    if source.kind == "tfds":
        stats = compute_stats(source)
    elif source.kind == "prepared":  # measured in the prepare pass, published ones aside
        from keras_alexnet.data import prepared

        stats = DatasetStats.from_json(prepared.read_index(source.name)["pixel_stats"])
    result = {"source": source.name, "num_train": source.num_train, "stats": stats.to_json()}
    if output is not None:
        fileio.write_json(output, result)
    return result
