"""TensorFlow Datasets image classification sets as sources, read from a data directory.

Nothing is downloaded: ImageNet is built from the official archives a user places in its
manual directory, any other set must already be prepared.
"""

import hashlib
from pathlib import Path

import tensorflow as tf

from keras_alexnet.data.cache import cache_dir
from keras_alexnet.data.source import Source, shuffle_each_pass
from keras_alexnet.data.stats import IMAGENET_STATS, DatasetStats, compute_stats

IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
IMAGENET_BUILDERS = ("imagenet2012", "imagenet2012_subset")


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
