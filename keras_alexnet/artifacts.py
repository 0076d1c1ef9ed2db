"""The artifact contract: the names every saved model and its readers agree on.

Training writes a run directory (`best.keras` and `metadata.json`); export writes an ONNX
file (the metadata in its metadata properties, keys prefixed `keras_alexnet.`) and a
SavedModel (the metadata in `assets/metadata.json`, signatures `serving_default` for
float32 and `serving_uint8` for uint8 pixels). Every artifact takes one input "images",
float32 RGB on the 0-255 scale [N, H, W, 3], and returns "probabilities" [N, classes].
Writers and readers take the names from here; the tests spell them out to check them.
"""

from pathlib import Path

from keras_alexnet.errors import Error

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
METADATA_FILENAME = "metadata.json"
KERAS_BEST = "best.keras"
SAVEDMODEL_METADATA = Path("assets") / METADATA_FILENAME
SERVING_SIGNATURE = "serving_default"
UINT8_SIGNATURE = "serving_uint8"
PROPERTY_PREFIX = "keras_alexnet."
ONNX_SOURCE = "the ONNX file's metadata properties"


class ModelPathError(Error, ValueError):
    """A model path that does not exist, is not a model, or lacks its metadata."""

    @classmethod
    def unreadable(cls, path, kind, error):
        """`{path} is not a readable {kind}: {first line of error}`, chained by the caller."""
        return cls(f"{path} is not a readable {kind}: {first_line(error)}")


class ExportError(Error, RuntimeError):
    """An export that failed or did not verify; nothing was written at the target."""


def first_line(error):
    """The first non-empty line of an exception's message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def check_class_count(classes, metadata, model_path, source):
    """Refuse a model whose output size is not its metadata's number of class names.

    `classes` is the model's output size (None or -1 when the graph leaves it free) and
    `source` names where the metadata came from, for the message.
    """
    names = len(metadata.class_names)
    if classes not in (None, -1, names):
        raise ModelPathError(
            f"{model_path} outputs {classes} classes but its metadata ({source}) has {names} "
            f"class names: give the model its own training run's {METADATA_FILENAME}"
        )
