"""What a `--data` value names: the demo set, a class-folder tree, a prepared set or a TFDS set.

`data_kind` is the one place that decides it, for opening a source, preparing one and
finding a model's training data; it reads at most one file and loads no TensorFlow.
"""

import re
from pathlib import Path

DEMO, FOLDER, PREPARED, TFDS = "demo", "folder", "prepared", "tfds"
PREPARED_FILE = "prepared.json"  # written last by `prepare`: its presence marks a finished pass
# 'mnist', 'imagenet2012_subset/1pct', 'cifar10:3.0.2': a TFDS name, config and version.
_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[\w.-]+)?(:[\d.*]+)?$")
_PATH_PREFIXES = ("/", ".", "~")


def as_path(data):
    """`data` as a path, with `~` expanded."""
    return Path(str(data)).expanduser()


def is_prepared(path):
    """Whether `path` is a directory holding a finished prepared set."""
    return (Path(path) / PREPARED_FILE).is_file()


def data_kind(data):
    """DEMO for None; PREPARED for a finished prepared set; FOLDER for any other path; else TFDS.

    A value is a path when it exists, starts with '/', '.' or '~', or is not shaped like a
    TFDS name ('mnist', 'imagenet2012_subset/1pct:5.0.0'): a missing folder is reported as
    one, not looked up in TFDS.
    """
    if data is None:
        return DEMO
    path = as_path(data)
    if is_prepared(path):
        return PREPARED
    text = str(data)
    if path.exists() or text.startswith(_PATH_PREFIXES) or not _TFDS_NAME.match(text):
        return FOLDER
    return TFDS


def is_local(data):
    """Whether `data` names something on this machine's disk (not the demo set, not TFDS)."""
    return data_kind(data) in (FOLDER, PREPARED)
