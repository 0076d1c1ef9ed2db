"""Prepared data: every image decoded once, rescaled as the paper did, in TFRecord shards.

AlexNet Section 2: "we down-sampled the images to a fixed resolution of 256 x 256 ...
rescaled the image such that the shorter side was of length 256, and then cropped out the
central 256x256 patch". `prepare` does that once (VGG: the shorter side rescaled to the
largest training scale, so that scale jittering still works), applies EXIF orientation,
and writes

    DIR/prepared.json          classes, sizes, statistics, layout, shard list, skipped files
    DIR/train-00000.tfrecord   tf.train.Example {"image/encoded": JPEG, "image/class/label"}
    DIR/val-00000.tfrecord     (TF-Slim's ImageNet keys)

Training then reads the index instead of decoding every image at start, and decodes only
each random crop. The JPEGs keep full-resolution chroma (4:4:4): with 4:2:0 chroma a crop
decoded on its own differs from the same crop of the decoded image at its left edge.
An interrupted pass resumes at its first unfinished shard, if its source is unchanged.
The state file and prepared.json record the settings and a digest of the source (class
names and every listed file's path, size and mtime, or a TFDS set's name, version, classes
and sizes): a pass whose source changed starts over, and a finished set whose source
changed is stale and refused. One prepare at a time writes a directory (its `.lock`).
"""

import concurrent.futures
import dataclasses
import errno
import hashlib
import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_alexnet import fileio
from keras_alexnet.data import folders, scan, tfds_sets
from keras_alexnet.data.demo import ensure_demo_set
from keras_alexnet.data.kinds import (
    DEMO,
    PREPARED,
    PREPARED_FILE,
    TFDS,
    as_path,
    data_kind,
    is_prepared,
)
from keras_alexnet.data.layout import MAX_SIZE, QUALITY, SHARD_SIZE, Layout, layout_for
from keras_alexnet.data.source import Source, shuffle_each_pass
from keras_alexnet.data.stats import DatasetStats, pixel_moments
from keras_alexnet.errors import field
from keras_alexnet.images import crop_tf, decode_tf, headers
from keras_alexnet.progress import Progress
from keras_alexnet.rundir import RunLock

STATE_FILE = ".prepare-state.json"  # the finished shards of an unfinished pass
FORMAT = 1
IMAGE_KEY, LABEL_KEY = "image/encoded", "image/class/label"
SPLITS = ("train", "val")
LOCK_FILE = ".lock"  # RunLock's file: one prepare at a time writes a directory


# --------------------------------------------------------------------------- reading


def prepared_source(root):
    """Open a prepared directory as a `Source` (kind "prepared"): reads only its index."""
    root = Path(root)
    meta = read_index(root)
    factories, sizes = {}, {}
    for split, info in meta["splits"].items():
        files = [str(root / shard["file"]) for shard in info["shards"]]
        factories[split] = _records_factory(files)
        sizes[split] = info["count"]
    return Source(
        name=str(root),
        class_names=list(meta["class_names"]),
        stats=DatasetStats.from_json(meta["stats"]),
        sizes=sizes,
        kind="prepared",
        layout=Layout(**meta["layout"]),
        _factories=factories,
    )


def read_index(root):
    """The prepared.json of `root`; ValueError for another format version."""
    meta = fileio.read_json(Path(root) / PREPARED_FILE)
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{root}: prepared with format {meta.get('format')}, this version reads {FORMAT}; "
            "prepare it again"
        )
    return meta


READ_BUFFER = 1 << 20  # bytes read ahead per open shard file
PARSE_BATCH = 64  # records parsed per call: parsing one at a time doubles its CPU time


def _parse(records):
    """A batch of serialised Examples -> (JPEG bytes, int32 labels)."""
    features = {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    examples = tf.io.parse_example(records, features)
    return examples[IMAGE_KEY], tf.cast(examples[LABEL_KEY], tf.int32)


def _records_factory(files):
    """A split's `Source` factory: (shuffle_seed, shuffle_buffer, shard) -> its Dataset.

    Unsharded, a shuffled read takes the shard files in a new order each pass, interleaved,
    through a `shuffle_buffer` shuffle. Sharded (several input pipelines), every pipeline
    reads the files in their fixed order and keeps every num_shards-th record before any
    shuffling, so the pipelines' shares are disjoint and together hold every image once.
    """

    def make(shuffle_seed, shuffle_buffer, shard):
        ds = tf.data.Dataset.from_tensor_slices(files)
        if shuffle_seed is not None and shard is None:
            ds = shuffle_each_pass(ds, len(files), shuffle_seed)
        ds = ds.interleave(
            lambda f: tf.data.TFRecordDataset(f, buffer_size=READ_BUFFER),
            cycle_length=min(len(files), 8),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if shard is not None:
            ds = ds.shard(*shard)
        if shuffle_seed is not None:
            ds = shuffle_each_pass(ds, shuffle_buffer, shuffle_seed)
        ds = ds.batch(PARSE_BATCH).map(_parse, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.unbatch()

    return make


# --------------------------------------------------------------------------- writing


def _image_fn(layout, quality):
    """A tf.function: (bytes, EXIF orientation) -> (upright image, count, RGB sum, outer, JPEG).

    The moments are of the original pixels (the statistics of the source itself); the JPEG
    is the image rescaled to the layout.
    """

    @tf.function(
        input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32)],
        reduce_retracing=True,
    )
    def prepare_image(contents, orientation):
        image = decode_tf.decode(contents, orientation)
        resized = crop_tf.resize_shorter(image, layout.size)
        if layout.square:
            resized = crop_tf.center_crop(resized, layout.size)
        pixels = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
        jpeg = tf.io.encode_jpeg(pixels, quality=quality, chroma_downsampling=False)
        return image, *pixel_moments(image), jpeg

    return prepare_image


def _prepare_one(item, image_fn):
    """(name, bytes or path, label) -> (name, reason, None) or (name, None, record)."""
    name, data, label = item
    problem = None
    if isinstance(data, str):
        data, problem = scan.read_image_bytes(data)
    else:
        problem = scan.header_problem(data)
    if problem:
        return name, problem, None
    orientation = np.int32(headers.exif_orientation(data[: headers.EXIF_HEAD]))
    result, problem = scan.decoded_problem(image_fn, tf.constant(data), orientation)
    if problem:
        return name, problem, None
    _, count, total, outer, jpeg = result
    moments = scan.pack_moments(float(count), total.numpy(), outer.numpy())
    return name, None, (jpeg.numpy(), int(label), moments)


def _example(jpeg, label):
    """A serialised tf.train.Example of one prepared image."""
    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_shard(path, records):
    """Write [(JPEG, label)] to a TFRecord file atomically; WriteError naming `path` if it fails."""
    with fileio.atomic_path(path) as tmp:
        try:
            with tf.io.TFRecordWriter(str(tmp)) as writer:
                for jpeg, label in records:
                    writer.write(_example(jpeg, label))
        except tf.errors.OpError as e:  # a full disk is ResourceExhaustedError "TMP; No space..."
            code = errno.ENOSPC if isinstance(e, tf.errors.ResourceExhaustedError) else errno.EIO
            raise fileio.WriteError(code, path, e.message.rpartition("; ")[2] or None) from None


@dataclasses.dataclass
class _SplitState:
    """What is done of one split: its finished shards, skipped files and moments."""

    shards: list = dataclasses.field(default_factory=list)  # [{"file", "count"}]
    skipped: list = dataclasses.field(default_factory=list)  # [[name, reason]]
    moments: list = dataclasses.field(default_factory=lambda: [0.0] * 10)

    def add_shard(self, file, results):
        """Record a written shard's results [(name, reason, record or None)]."""
        written = [r for _, _, r in results if r is not None]
        self.shards.append({"file": file, "count": len(written)})
        self.skipped += [[n, why] for n, why, r in results if r is None]
        self.moments = list(np.sum([self.moments, *[r[2] for r in written]], axis=0))

    @property
    def count(self):
        """Images written so far."""
        return sum(s["count"] for s in self.shards)


def _shard_items(items, shard_size, first):
    """Yield (index, [items]) chunks of `shard_size` from shard number `first` on."""
    items = itertools.islice(items, first * shard_size, None)
    for index in itertools.count(first):
        chunk = list(itertools.islice(items, shard_size))
        if not chunk:
            return
        yield index, chunk


def write_split(split, items, total, out, state, *, image_fn, shard_size, workers, save):
    """Prepare `total` items of a split into shards in `out`, from the first unfinished one.

    `save()` runs after every shard, so an interrupted pass loses at most one shard.
    """
    first = len(state.shards)
    bar = Progress(total, f"prepare {split}", "img", initial=min(first * shard_size, total))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for index, chunk in _shard_items(items, shard_size, first):
            results = list(pool.map(lambda item: _prepare_one(item, image_fn), chunk))
            file = f"{split}-{index:05d}.tfrecord"
            _write_shard(out / file, [r[:2] for _, _, r in results if r is not None])
            state.add_shard(file, results)
            save()
            bar.add(len(chunk))
    bar.close()
    return state


def default_workers():
    """Threads for the pass: one per core (TensorFlow's decode and encode release the GIL)."""
    return os.cpu_count() or 2


# ------------------------------------------------------------------------ the pass


def prepare(
    data,
    output,
    *,
    model="alexnet",
    size=None,
    quality=QUALITY,
    shard_size=SHARD_SIZE,
    data_dir=None,
    val_fraction=0.1,
    seed=0,
    workers=None,
    cache=None,
    overwrite=False,
    log=print,
):
    """Decode every image of `data` once into a prepared directory `output`; return its index.

    `data` is what training reads: None (the demo set), a class-folder tree or a TFDS name.
    Images are rescaled to `layout_for(model, size)`, re-encoded as JPEG at `quality`, and
    written `shard_size` to a file. A folder without val/ holds out a seeded `val_fraction`
    of each class (of the files listed, usable or not, where a folder source holds out
    usable files only: the same split when every file is usable). Unusable files are
    skipped and reported. A finished directory with the same settings and source is left
    as it is; an unfinished one is resumed at its first unfinished shard, or started over
    when the source changed since. ValueError for a finished set whose source changed
    (stale) or one with other settings, unless `overwrite` (then it is prepared anew).
    """
    output = Path(output).expanduser()
    layout = layout_for(model, size)
    if not 1 <= layout.size <= MAX_SIZE:
        raise ValueError(f"size must be from 1 to {MAX_SIZE}. Received: {layout.size}")
    _check_output(output)
    listing = _listing(data, data_dir, val_fraction, seed, cache, output)
    _check_every_class_has_an_image(listing)
    signature = {
        "data": _data_key(data), "data_dir": data_dir,
        "layout": dataclasses.asdict(layout), "quality": quality, "shard_size": shard_size,
        "val_fraction": val_fraction, "seed": seed, "source": listing.digest,
    }  # fmt: skip
    with RunLock(output, user="prepare", error=ValueError):
        _remove_temporaries(output)
        if overwrite:
            _clear(output)
        done = _finished(output, signature)
        if done is not None:
            log(f"{output} is already prepared ({_counts(done)}); nothing to do")
            return done
        states = _resume_state(output, signature, log)
        _write_splits(listing, output, states, signature, workers=workers or default_workers())
        index = _index(signature, listing, states, layout, quality)
        fileio.write_json(output / PREPARED_FILE, index)
        (output / STATE_FILE).unlink(missing_ok=True)
    scan.report_skipped([tuple(s) for s in index["skipped"]])
    log(f"Prepared {_counts(index)} in {output}")
    return index


def _check_output(output):
    """Refuse an output that is a file, or a folder holding anything but a prepared set."""
    if not output.exists():
        return
    names = {f.name for f in output.iterdir()} if output.is_dir() else None
    if names is not None and (names <= {LOCK_FILE} or names & {PREPARED_FILE, STATE_FILE}):
        return
    raise ValueError(
        f"{output} exists and is not a prepared directory; choose another {field('output')}"
    )


def _clear(output):
    """Remove a prepared set or an unfinished pass from `output` (its index first)."""
    (output / PREPARED_FILE).unlink(missing_ok=True)
    (output / STATE_FILE).unlink(missing_ok=True)
    for split in SPLITS:
        for shard in output.glob(f"{split}-*.tfrecord"):
            shard.unlink()


def _remove_temporaries(output):
    """Remove the half-written shards (fileio.atomic_path's folders) of a killed pass."""
    for split in SPLITS:
        for tmp in output.glob(f".{split}-*.tfrecord.*"):
            shutil.rmtree(tmp, ignore_errors=True)


def _write_splits(listing, output, states, signature, *, workers):
    """Write every split's unfinished shards, saving the state after each."""
    layout = Layout(**signature["layout"])
    image_fn = _image_fn(layout, signature["quality"])

    def save():
        fileio.write_json(output / STATE_FILE, _state_json(signature, states))

    for split, (items, total) in listing.items.items():
        write_split(
            split, items, total, output, states.setdefault(split, _SplitState()),
            image_fn=image_fn, shard_size=signature["shard_size"], workers=workers, save=save,
        )  # fmt: skip


def _data_key(data):
    """How the signature names the data: a folder by its absolute path, else as given."""
    if data is None:
        return None
    path = Path(str(data)).expanduser()
    return str(path.resolve()) if path.exists() else str(data)


def _counts(index):
    """'N train and M val images' of an index."""
    return " and ".join(f"{v['count']} {k}" for k, v in index["splits"].items()) + " images"


def _finished(output, signature):
    """The index of a finished directory prepared with `signature`; None if there is none."""
    if not is_prepared(output):
        return None
    index = read_index(output)
    old = index.get("signature") or {}
    if _settings(old) != _settings(signature):
        raise ValueError(f"{output} was prepared {_difference(old, signature)}")
    if old.get("source") != signature["source"]:
        raise ValueError(
            f"{output} is stale: its source changed since it was prepared (classes or files "
            f"added, removed or modified); run again with {field('overwrite')} to prepare it anew"
        )
    return index


def _settings(signature):
    """A signature without its source digest: the settings a user chose."""
    return {k: v for k, v in signature.items() if k != "source"}


def _difference(old, new):
    """'with data=X (now Y)' naming the first setting that differs."""
    key = next(k for k in _settings(new) if old.get(k) != new[k])
    return (
        f"with {key}={old.get(key)!r} (now {new[key]!r}); choose another {field('output')}, "
        f"or {field('overwrite')} to prepare it anew"
    )


def _resume_state(output, signature, log):
    """The finished shards of an interrupted pass into `output`, or nothing for a new one.

    A pass whose source changed since it began starts over: its shards hold the old
    listing's images, at the old listing's positions.
    """
    state_file = output / STATE_FILE
    if state_file.exists():
        saved = fileio.read_json(state_file)
        old = saved.get("signature") or {}
        if _settings(old) != _settings(signature):
            raise ValueError(f"{output} holds an unfinished pass {_difference(old, signature)}")
        if old.get("source") == signature["source"]:
            return {k: _SplitState(**v) for k, v in saved["splits"].items()}
        log(f"{output}: the source changed since this unfinished pass began; starting over")
        _clear(output)
    output.mkdir(parents=True, exist_ok=True)
    return {}


def _state_json(signature, states):
    """The resumable state as JSON."""
    return {"signature": signature, "splits": {k: dataclasses.asdict(v) for k, v in states.items()}}


@dataclasses.dataclass
class _Listing:
    """What a pass reads: {split: (items, count)}, class names, a folder and the source."""

    items: dict
    class_names: list
    digest: str  # of what the items are made from: a changed source changes it
    folder: object = None  # a class-folder tree's training folder
    stats: DatasetStats | None = None  # published statistics (ImageNet) that take precedence


def _listing(data, data_dir, val_fraction, seed, cache, output):
    """List the source's splits as (name, bytes or path, label) items, without decoding."""
    kind = data_kind(data)
    if kind == PREPARED:
        raise ValueError(f"{data} is already a prepared set: train from it as it is")
    if kind != TFDS:
        path = as_path(ensure_demo_set(cache) if kind == DEMO else data)
        if path.exists() and output.resolve().is_relative_to(path.resolve()):
            raise ValueError(
                f"{output} is inside the input folder {path}: it would be listed as a class; "
                f"choose an {field('output')} outside it"
            )
        return _directory_listing(path, val_fraction, seed)
    source = tfds_sets.tfds_source(str(data), data_dir, cache=cache, with_stats=False)
    items = {
        split: (_tfds_items(source, split), source.sizes[split])
        for split in SPLITS
        if source.sizes.get(split)
    }
    version = _tfds_version(str(data), data_dir)
    digest = _digest([version, source.class_names, sorted(source.sizes.items())])
    return _Listing(items, source.class_names, digest, stats=source.stats)


def _tfds_version(name, data_dir):
    """A TFDS set's full name (name/config/version) as its builder reads it."""
    import tensorflow_datasets as tfds

    return tfds.builder(name, data_dir=data_dir).info.full_name


def _digest(parts):
    """A hex digest of JSON-able `parts`."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _file_stamp(path):
    """(size, mtime in ns) of a file; (-1, -1) for one that cannot be stat'ed (a link loop)."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def _tfds_items(source, split):
    """A TFDS split's (name, bytes, label) items, in the set's own order."""
    for i, (contents, label) in enumerate(source.encoded(split).as_numpy_iterator()):
        yield f"{source.name}:{split}[{i}]", contents, label


def _directory_listing(root, val_fraction, seed):
    """A class-folder tree's items: training files in a seeded order mixing the classes."""
    if is_prepared(root):
        raise ValueError(f"{root} is already a prepared directory")
    folder, class_names, train, val = folders.list_directory(root, val_fraction)
    if val is None:
        train, val = folders.hold_out(train, class_names, val_fraction, seed)
    train = [train[i] for i in np.random.default_rng(seed).permutation(len(train))]
    val = folders.validation_order(val, seed)
    label = {c: i for i, c in enumerate(class_names)}
    splits = (("train", train), ("val", val))
    items = {split: ([(p, p, label[c]) for p, c in files], len(files)) for split, files in splits}
    listed = [
        [split, os.path.relpath(p, root), label[c], *_file_stamp(p)]
        for split, files in splits
        for p, c in files
    ]
    return _Listing(items, class_names, _digest([class_names, listed]), folder=folder)


def _check_every_class_has_an_image(listing):
    """Before any shard is written: every class has a training file whose header is an image.

    Reads each class's files' heads until one passes; a class whose files all decode badly
    despite a good header is found at the end of the pass (`_index`).
    """
    if listing.folder is None:
        return
    listed = [(p, listing.class_names[y]) for p, _, y in listing.items["train"][0]]
    usable, reasons, found = [], {}, set()
    for path, name in listed:
        if name in found:
            continue
        problem = _head_problem(path)
        if problem:
            reasons[path] = problem
        else:
            usable.append((path, name))
            found.add(name)
    folders.check_every_class_trains(listing.folder, listing.class_names, listed, usable, reasons)


def _head_problem(path):
    """Why a file cannot be an image, from its first bytes alone; None if it may be one."""
    try:
        with open(path, "rb") as f:
            head = f.read(headers.EXIF_HEAD)
    except OSError as e:
        return f"unreadable ({e.strerror})"
    return scan.header_problem(head)


def _index(signature, listing, states, layout, quality):
    """prepared.json: what the shards hold; ValueError for a class left without images."""
    train = states["train"]
    if listing.folder is not None:
        reasons = dict(train.skipped)
        listed = [(p, listing.class_names[y]) for p, _, y in listing.items["train"][0]]
        usable = [f for f in listed if f[0] not in reasons]
        folders.check_every_class_trains(
            listing.folder, listing.class_names, listed, usable, reasons
        )
    pixel_stats = scan.stats_from_moments([train.moments])
    return {
        "format": FORMAT,
        "signature": signature,
        "class_names": listing.class_names,
        "layout": dataclasses.asdict(layout),
        "quality": quality,
        "stats": (listing.stats or pixel_stats).to_json(),
        "pixel_stats": pixel_stats.to_json(),
        "splits": {
            k: {"count": v.count, "shards": v.shards} for k, v in states.items() if v.shards
        },
        "skipped": [s for v in states.values() for s in v.skipped],
    }
