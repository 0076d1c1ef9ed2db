"""Atomic writes: a crash mid-write never leaves a half-written file at the target path."""

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from keras_alexnet.errors import Error


class WriteError(Error, OSError):
    """Writing `filename` failed; reads as one line: `cannot write PATH: CAUSE`."""

    def __init__(self, code, path, strerror=None):
        super().__init__(code, strerror or os.strerror(code), str(path))

    def __str__(self):
        return f"cannot write {self.filename}: {self.strerror}"


def _write_error(error, path):
    """`error` as a WriteError naming the target `path` rather than a temporary."""
    code = error.errno or errno.EIO
    return WriteError(code, path, error.strerror or str(error))


@contextlib.contextmanager
def _temporary_dir(path):
    """Yield a fresh temporary directory beside `path` (parents created); remove it after."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except FileExistsError:
        # mkdir's answer when a regular file stands where a folder of the path should be.
        raise WriteError(errno.ENOTDIR, path) from None
    except OSError as e:
        raise _write_error(e, path) from None
    try:
        yield tmp_dir
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _is_write_failure(error, path, tmp_dir):
    """Whether an OSError raised while writing `path` came from the write (not, say, a read)."""
    # A failed write()/flush() (a full disk) carries no file name.
    if error.filename is None:
        return True
    names = [Path(os.fsdecode(n)) for n in (error.filename, error.filename2) if n is not None]
    return any(n == path or n.is_relative_to(tmp_dir) for n in names)


def _replace(tmp, path, tmp_dir):
    """Rename `tmp` over `path`; for a directory, put the old one back if that fails."""
    if not (path.is_dir() and not path.is_symlink()):
        os.replace(tmp, path)
        return
    # os.replace cannot replace a non-empty directory: move the old one aside first.
    old = tmp_dir / (path.name + ".old")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except OSError:
        os.replace(old, path)
        raise


def check_writable(path):
    """Raise WriteError now if `path` could not be written later (a read-only or missing folder)."""
    with _temporary_dir(Path(path)):
        pass


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success rename it over `path` atomically.

    Works for a file or a directory written at the yielded path. On an exception the
    temporary is removed and `path` is left as it was; a failed write (read-only or full
    folder, a file where a folder should be) raises WriteError naming `path`.
    """
    path = Path(path)
    with _temporary_dir(path) as tmp_dir:
        try:
            yield tmp_dir / path.name
            _replace(tmp_dir / path.name, path, tmp_dir)
        except OSError as e:
            # Also a nested atomic write's WriteError (a file inside a directory being written).
            if not _is_write_failure(e, path, tmp_dir):
                raise
            raise _write_error(e, path) from e


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
