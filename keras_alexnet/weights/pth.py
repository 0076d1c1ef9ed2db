"""PyTorch `.pth` files read into NumPy without PyTorch, running none of the file's code.

A `.pth` written by `torch.save` is a pickle of the saved object plus the raw bytes of its
tensors' storages: since PyTorch 1.6 a zip (`ARCHIVE/data.pkl`, `ARCHIVE/data/KEY`,
`ARCHIVE/byteorder`), before it the legacy stream (magic number, protocol, system info, the
pickle, the storage keys, then each storage as an int64 element count and its bytes;
torchvision's older files). The pickle is read by an unpickler that rebuilds only what a
state dict or a training checkpoint holds (`ALLOWED`: tensors and parameters over typed
storages, OrderedDict, argparse.Namespace, bytes) and refuses any other global in one line
(`RefusedGlobal`), before anything is called. Tensors come back as NumPy arrays of their dtype
(bfloat16 as float32), strided views and storages shared between tensors included; every
view is checked to lie inside its storage.
"""

import argparse
import collections
import dataclasses
import pickle
import struct
import tarfile
import zipfile

import numpy as np

from keras_alexnet.errors import Error

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# torch.<Name>Storage -> the little-endian NumPy dtype of its elements.
STORAGE_DTYPES = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",  # bfloat16: the high half of a float32, widened on reading
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}
BFLOAT16 = "BFloat16Storage"


class PthError(Error, ValueError):
    """A `.pth` file that cannot be read, or that holds more than data."""


class RefusedGlobal(PthError):
    """A global the file's pickle names that is not data: calling it could run any code."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """A torch.<Name>Storage class named by the pickle: only its name is kept."""

    name: str


@dataclasses.dataclass(frozen=True)
class _Storage:
    """A storage a tensor reads: its key in the file, element type, and element offset."""

    key: str
    kind: str
    numel: int
    offset: int = 0  # a legacy view's start within its root storage


@dataclasses.dataclass(frozen=True)
class _Tensor:
    """A tensor to build once the storages are read."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage, offset, size, stride, *_rest):
    """torch._utils._rebuild_tensor_v2's arguments, kept for later (requires_grad etc. dropped)."""
    if not isinstance(storage, _Storage):
        raise PthError("a tensor without a storage")
    return _Tensor(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, *_rest):
    """torch._utils._rebuild_parameter: a Parameter is its tensor."""
    return data


def _encode(text, encoding="latin1"):
    """_codecs.encode as protocol-2 pickles use it for bytes objects, and nothing else."""
    if not isinstance(text, str) or encoding != "latin1":
        raise PthError("an _codecs.encode call that is not a bytes object")
    return text.encode("latin1")


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("argparse", "Namespace"): argparse.Namespace,
    ("_codecs", "encode"): _encode,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    """Rebuilds ALLOWED globals only; storages become `_Storage` records."""

    def find_class(self, module, name):
        """The allowed stand-in for `module.name`; PthError for anything else."""
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        """('storage', type, key, location, numel[, view metadata]) -> a `_Storage`."""
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise PthError(f"an unknown persistent reference {str(pid)[:60]}")
        kind, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(kind, _StorageType):
            raise PthError(f"storage type {kind!r}")
        view = pid[5] if len(pid) > 5 else None
        offset = int(view[1]) if view is not None else 0
        return _Storage(key, kind.name, numel, offset)


def _unpickle(stream):
    """Unpickle one object from `stream` with the restricted unpickler."""
    return _Unpickler(stream).load()


def load(path):
    """The object a `.pth` file holds, with every tensor as a NumPy array.

    RefusedGlobal names a global that is not data (code the file would run); PthError says
    what else is unreadable.
    """
    try:
        if zipfile.is_zipfile(path):
            obj, storages = _load_zip(path)
        elif tarfile.is_tarfile(path):
            raise PthError("a PyTorch file of the tar format (before 0.4), not read here")
        else:
            obj, storages = _load_legacy(path)
    except PthError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile, KeyError) as e:
        raise PthError(f"not a readable PyTorch file ({type(e).__name__}: {e})") from None
    except (TypeError, ValueError, IndexError, AttributeError) as e:
        raise PthError(f"not a readable PyTorch file ({e})") from None
    return _materialise(obj, storages)


def _load_zip(path):
    """(object, {key: raw storage bytes as a 1-D array}) of a zip-format `.pth`."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise PthError("a zip without one ARCHIVE/data.pkl: not written by torch.save")
        root = pickles[0].rpartition("/")[0]
        with archive.open(pickles[0]) as f:
            obj = _unpickle(f)
        big = f"{root}/byteorder" in names and archive.read(f"{root}/byteorder") == b"big"
        storages = {}
        for storage in _storages(obj):
            if storage.key not in storages:
                data = archive.read(f"{root}/data/{storage.key}")
                storages[storage.key] = _as_array(data, storage.kind, big)
    return obj, storages


def _load_legacy(path):
    """(object, storages) of a legacy-format `.pth` (PyTorch before 1.6)."""
    with open(path, "rb") as f:
        if _unpickle(f) != LEGACY_MAGIC:
            raise PthError("neither a zip nor a legacy PyTorch file")
        if _unpickle(f) != LEGACY_PROTOCOL:
            raise PthError("a legacy PyTorch file of an unknown protocol")
        info = _unpickle(f)
        big = isinstance(info, dict) and info.get("little_endian") is False
        obj = _unpickle(f)
        keys = _unpickle(f)
        kinds = {s.key: s.kind for s in _storages(obj)}
        storages = {}
        for key in keys:
            key = str(key)
            (numel,) = struct.unpack("<q", f.read(8))
            if key not in kinds:
                raise PthError(f"storage {key!r} that no tensor reads")
            kind = kinds[key]
            data = f.read(numel * np.dtype(STORAGE_DTYPES[kind]).itemsize)
            storages[key] = _as_array(data, kind, big)
    return obj, storages


def _as_array(data, kind, big_endian):
    """Raw storage bytes as a 1-D array of its element type, in native byte order."""
    dtype = np.dtype(STORAGE_DTYPES[kind])
    if big_endian:
        dtype = dtype.newbyteorder(">")
    if len(data) % dtype.itemsize:
        raise PthError(f"a {kind} of {len(data)} bytes, not whole elements")
    return np.frombuffer(data, dtype).astype(dtype.newbyteorder("="), copy=False)


def _storages(obj):
    """Every `_Storage` the tensors in `obj` read."""
    return [t.storage for t in _walk(obj) if isinstance(t, _Tensor)]


def _walk(obj):
    """`obj` and everything inside its dicts, lists, tuples and Namespaces."""
    yield obj
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _walk(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _walk(value)
    elif isinstance(obj, argparse.Namespace):
        yield from _walk(vars(obj))


def _materialise(obj, storages):
    """`obj` with every `_Tensor` replaced by its NumPy array."""
    if isinstance(obj, _Tensor):
        return _tensor(obj, storages)
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        out.update((k, _materialise(v, storages)) for k, v in obj.items())
        return out
    if isinstance(obj, list | tuple):
        return type(obj)(_materialise(v, storages) for v in obj)
    return obj


def _tensor(t, storages):
    """One tensor's array: its window of the storage, copied, bfloat16 widened to float32."""
    if t.storage.key not in storages:
        raise PthError(f"a tensor reads storage {t.storage.key!r}, which the file lacks")
    base = storages[t.storage.key]
    start = t.storage.offset + t.offset
    if min((start, *t.size, *t.stride), default=0) < 0 or len(t.size) != len(t.stride):
        raise PthError(f"a tensor of size {t.size} and stride {t.stride}: not a valid view")
    if 0 not in t.size:
        last = start + sum((n - 1) * s for n, s in zip(t.size, t.stride, strict=True))
        if last >= len(base):
            raise PthError(f"a tensor reads past its storage ({last} >= {len(base)} elements)")
    strides = tuple(s * base.itemsize for s in t.stride)
    window = base[start:] if 0 not in t.size else base[:0]
    array = np.lib.stride_tricks.as_strided(window, t.size, strides, writeable=False).copy()
    if t.storage.kind == BFLOAT16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array
