"""An ONNX model under onnxruntime, described in the KServe v2 / Open Inference Protocol terms."""

import dataclasses
from pathlib import Path

import numpy as np

from keras_alexnet.artifacts import ModelPathError
from keras_alexnet.onnx.session import AUTO, open_onnx

# onnxruntime element type -> (protocol datatype, NumPy dtype)
DATATYPES = {
    "tensor(float)": ("FP32", np.float32),
    "tensor(double)": ("FP64", np.float64),
    "tensor(float16)": ("FP16", np.float16),
    "tensor(int8)": ("INT8", np.int8),
    "tensor(int16)": ("INT16", np.int16),
    "tensor(int32)": ("INT32", np.int32),
    "tensor(int64)": ("INT64", np.int64),
    "tensor(uint8)": ("UINT8", np.uint8),
    "tensor(uint16)": ("UINT16", np.uint16),
    "tensor(uint32)": ("UINT32", np.uint32),
    "tensor(uint64)": ("UINT64", np.uint64),
    "tensor(bool)": ("BOOL", np.bool_),
}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, protocol datatype, shape (-1 for a free dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self):
        """The NumPy dtype of this datatype."""
        return {d: t for d, t in DATATYPES.values()}[self.datatype]

    def to_json(self):
        """The protocol's `{"name", "datatype", "shape"}` object."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _spec(node):
    """TensorSpec of an onnxruntime NodeArg."""
    if node.type not in DATATYPES:
        raise ValueError(f"tensor {node.name!r} has type {node.type}, which is not supported")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorSpec(node.name, DATATYPES[node.type][0], shape)


class OnnxModel:
    """An onnxruntime session with its tensor specs and keras_alexnet Metadata (if any)."""

    def __init__(self, path, *, name=None, threads=0, provider=AUTO):
        path = Path(path)
        if path.is_dir() or path.suffix == ".keras":
            raise ModelPathError(
                f"{path} is a Keras model, and the server runs ONNX files: export it with "
                f"`keras-alexnet-export-onnx --model {path} --output {path.with_suffix('')}"
                ".onnx`, then serve that file"
            )
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX model at {path}")
        opened = open_onnx(path, threads, provider, spin=False, required=False)
        self.session, self.metadata = opened.session, opened.metadata
        self.probabilities = opened.probabilities
        self.path = path
        self.name = name or path.stem
        self.inputs = [_spec(n) for n in self.session.get_inputs()]
        self.outputs = [_spec(n) for n in self.session.get_outputs()]
        # Requests can be merged only along a free leading (batch) dimension.
        self.batchable = all(spec.shape and spec.shape[0] == -1 for spec in self.inputs)

    def too_small(self, spec, shape):
        """Why an image of `shape` is below the model's crop size, or None if it is not.

        keras_alexnet exports take whole images of any size of at least the crop (dense
        evaluation); smaller ones would fail inside the model.
        """
        if self.metadata is None or len(spec.shape) != 4 or spec.shape[-1] != 3:
            return None
        size = self.metadata.input_size
        if min(shape[1:3]) < size:
            return f"image sides {list(shape[1:3])} are smaller than the model's crop {size}"
        return None

    def example_shape(self, spec):
        """A runnable shape for `spec`: one row; free image sides at the model's crop size."""
        size = self.metadata.input_size if self.metadata is not None else 1
        shape = [1 if d == -1 else d for d in spec.shape]
        if len(shape) == 4 and shape[-1] == 3:  # NHWC image input
            shape[1:3] = [size if d == -1 else d for d in spec.shape[1:3]]
        return shape

    def run(self, feeds):
        """Run the model on a dict of input arrays; return a dict of output arrays."""
        values = self.session.run([o.name for o in self.outputs], feeds)
        return dict(zip([o.name for o in self.outputs], values, strict=True))

    def metadata_json(self):
        """The protocol's model metadata object (plus our preprocessing, when known)."""
        body = {
            "name": self.name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
        }
        if self.metadata is not None:
            body["parameters"] = {"keras_alexnet": self.metadata.to_json()}
        return body
