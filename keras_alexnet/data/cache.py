"""Where keras_alexnet keeps what it derives from data: the demo tree, scans, statistics."""

import os
from pathlib import Path


def cache_dir(cache=None):
    """Return the cache directory: `cache`, $KERAS_ALEXNET_CACHE or ~/.cache/keras_alexnet."""
    cache = cache or os.environ.get("KERAS_ALEXNET_CACHE") or "~/.cache/keras_alexnet"
    return Path(cache).expanduser()
