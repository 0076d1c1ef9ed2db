"""Atomic writes: a crash mid-write never leaves a half-written file at the target path."""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success rename it over `path` atomically.

    Works for a file or a directory written at the yielded path. On an exception the
    temporary is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            # os.replace cannot replace a non-empty directory: move the old one aside first.
            old = tmp_dir / (path.name + ".old")
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def write_text(path, text):
    """Write `text` to `path` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(path, obj):
    """Write `obj` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)
