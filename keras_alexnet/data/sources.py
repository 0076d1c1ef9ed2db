"""Where images come from: `load_source` opens what `--data` names as a `Source`.

The bundled demo set and class-folder trees (`folders`), prepared sets (`prepared`) and
TensorFlow Datasets (`tfds_sets`); `kinds.data_kind` decides which a name is. Nothing here
downloads anything.
"""

from keras_alexnet import fileio
from keras_alexnet.data import folders, kinds, prepared, tfds_sets
from keras_alexnet.data.demo import DEMO_NAME, ensure_demo_set
from keras_alexnet.data.stats import DatasetStats, compute_stats


def load_source(data=None, data_dir=None, *, val_fraction=0.1, seed=0, cache=None):
    """Open a data source: None (the bundled demo set), a folder, a prepared set, a TFDS name.

    `kinds.data_kind` decides which: a path (one that exists, or starts with '/', '.' or '~')
    is a prepared set when `prepare` finished it, else a class-folder tree; anything else
    shaped like a TFDS name ('mnist', 'imagenet2012_subset/1pct:5.0.0') is read from
    `data_dir` (TFDS's default data directory when None).
    """
    kind = kinds.data_kind(data)
    if kind == kinds.DEMO:
        return folders.directory_source(ensure_demo_set(cache), cache=cache, name=DEMO_NAME)
    if kind == kinds.PREPARED:
        return prepared.prepared_source(kinds.as_path(data))
    if kind == kinds.FOLDER:
        path = kinds.as_path(data)
        return folders.directory_source(path, val_fraction=val_fraction, seed=seed, cache=cache)
    return tfds_sets.tfds_source(str(data), data_dir, cache=cache)


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
        stats = DatasetStats.from_json(prepared.read_index(source.name)["pixel_stats"])
    result = {"source": source.name, "num_train": source.num_train, "stats": stats.to_json()}
    if output is not None:
        fileio.write_json(output, result)
    return result
