"""keras_alexnet.weights.pth against PyTorch's own `torch.load` on the files `torch.save` writes.

Every dtype a state dict uses, strided views, shared and offset storages, empty and 0-d
tensors, parameters, checkpoints with plain data; the zip format and the legacy one;
big-endian storages; and the files it must refuse without running them.
"""

import argparse
import collections
import io
import pickle
import zipfile

import numpy as np
import pytest

from keras_alexnet.weights import pth

torch = pytest.importorskip("torch")

DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool,
]  # fmt: skip


def state_dict():
    """A state dict with every dtype and the layouts torch.save writes."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=gen)
    state = collections.OrderedDict()
    for dtype in DTYPES:
        values = torch.randn(3, 5, generator=gen) * 50
        state[f"t_{str(dtype).split('.')[1]}"] = values.to(dtype)
    state["contiguous"] = base
    state["transposed"] = base.t()  # a strided view of the same storage
    state["column"] = base[:, 2]  # offset and stride
    state["slice"] = base[1:3, ::2]
    state["empty"] = torch.zeros(0, 3)
    state["scalar"] = torch.tensor(7, dtype=torch.int64)  # num_batches_tracked's shape
    state["parameter"] = torch.nn.Parameter(torch.randn(2, 2, generator=gen))
    return state


def reference(path):
    """What torch.load gives, as NumPy (bfloat16 widened to float32, as our reader does)."""
    loaded = torch.load(path, weights_only=True)
    return {
        k: (v.float() if v.dtype == torch.bfloat16 else v).detach().numpy()
        for k, v in loaded.items()
    }


def assert_same(ours, theirs):
    assert list(ours) == list(theirs)
    for key, want in theirs.items():
        got = ours[key]
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype, key
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_every_dtype_and_layout_equals_torch_load(tmp_path, zip_format):
    path = tmp_path / "state.pth"
    torch.save(state_dict(), path, _use_new_zipfile_serialization=zip_format)
    ours = pth.load(path)
    assert isinstance(ours, collections.OrderedDict)
    assert_same(ours, reference(path))
    # Views are copies: writing one cannot change another that shared its storage.
    ours["transposed"][...] = 0
    assert ours["contiguous"].any()


def test_big_endian_storages_are_read_in_their_byte_order(tmp_path):
    little = tmp_path / "little.pth"
    torch.save(state_dict(), little)
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
        kinds = pickled_storage_kinds(src)
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename and not info.filename.endswith("serialization_id"):
                dtype = np.dtype(pth.STORAGE_DTYPES[kinds[info.filename.rsplit("/", 1)[1]]])
                data = np.frombuffer(data, dtype).astype(dtype.newbyteorder(">")).tobytes()
            dst.writestr(info, data)
    assert_same(pth.load(big), reference(big))
    assert_same(pth.load(big), reference(little))


def pickled_storage_kinds(archive):
    """{storage key: torch storage class name} of a zip-format file, from its pickle."""
    name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
    unpickler = pth._Unpickler(io.BytesIO(archive.read(name)))
    return {s.key: s.kind for s in pth._storages(unpickler.load())}


def test_a_checkpoint_with_plain_data_around_the_tensors(tmp_path):
    state = state_dict()
    checkpoint = {
        "model": state,
        "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2)}}, "param_groups": [
            {"lr": 0.01, "momentum": 0.9, "nesterov": False, "params": [0], "name": None}
        ]},
        "epoch": 3,
        "args": argparse.Namespace(lr=0.01, data="/data"),
        "rng": b"\x00\x01\xff",
    }  # fmt: skip
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    ours = pth.load(tmp_path / "checkpoint.pth")
    assert ours["epoch"] == 3 and ours["args"] == argparse.Namespace(lr=0.01, data="/data")
    assert ours["rng"] == b"\x00\x01\xff"
    assert ours["optimizer"]["param_groups"][0]["lr"] == 0.01
    np.testing.assert_array_equal(ours["optimizer"]["state"][0]["momentum_buffer"], np.ones(2))
    assert_same(ours["model"], reference_of(state, tmp_path))


def reference_of(state, tmp_path):
    """torch.load's view of `state` saved alone."""
    torch.save(state, tmp_path / "alone.pth")
    return reference(tmp_path / "alone.pth")


class Payload:
    """Unpickling this runs `touch` on a marker file: what a malicious .pth would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_file_that_would_run_code_is_refused_and_nothing_runs(tmp_path, zip_format):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save(
        {"w": torch.zeros(2), "x": Payload(marker)}, path, _use_new_zipfile_serialization=zip_format
    )
    marker.unlink(missing_ok=True)  # torch.save itself does not call it; be sure
    with pytest.raises(pth.RefusedGlobal, match=r"builtins\.open|io\.open"):
        pth.load(path)
    assert not marker.exists()


def test_a_view_past_its_storage_is_refused(tmp_path):
    path = tmp_path / "state.pth"
    torch.save({"w": torch.arange(6.0)}, path)
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        data = archive.read(name)
    # Size 6 -> 9 (pickle BININT1 opcodes 'K\x06' after the storage's persistent id).
    tampered = data.replace(b"K\x00K\x06\x85", b"K\x00K\x09\x85", 1)
    assert tampered != data
    out = tmp_path / "tampered.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, tampered if info.filename == name else src.read(info))
    with pytest.raises(pth.PthError, match="past its storage"):
        pth.load(out)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "not a readable PyTorch file"),
        (b"not a pickle at all", "not a readable PyTorch file"),
        (pickle.dumps({"a": 1}), "neither a zip nor a legacy PyTorch file"),
    ],
)
def test_files_that_are_not_pth_files_are_one_line_errors(tmp_path, content, message):
    (tmp_path / "x.pth").write_bytes(content)
    with pytest.raises(pth.PthError, match=message) as error:
        pth.load(tmp_path / "x.pth")
    assert "\n" not in str(error.value)


def test_a_truncated_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "state.pth"
    torch.save(state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(pth.PthError) as error:
        pth.load(path)
    assert "\n" not in str(error.value)
