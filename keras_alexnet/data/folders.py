"""Class-folder trees as sources: listing, the seeded validation hold-out, the file datasets.

root/train/<class>/*, root/val/<class>/*, or root/<class>/* (the demo set is such a tree).
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_alexnet.data.cache import cache_dir
from keras_alexnet.data.kinds import is_prepared
from keras_alexnet.data.scan import report_skipped, scan_files, stats_from_moments
from keras_alexnet.data.source import Source, shuffle_each_pass

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
_VAL_ORDER = 1  # the validation order's seed stream, apart from the hold-out's


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
    root = Path(root).expanduser()
    if is_prepared(root):
        raise ValueError(
            f"{root} is a prepared set, not a class-folder tree: open it with load_source"
        )
    cache = cache_dir(cache)
    folder, class_names, listed, val = list_directory(root, val_fraction)
    scanned = scan_files([p for p, _ in listed + (val or [])], cache)
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
