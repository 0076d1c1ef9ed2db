"""Open any saved model by its path: a prediction function, its Metadata, and the runtime.

A path is a Keras `.keras` file (metadata.json beside it), a training run directory (its
`best.keras`), a SavedModel directory (metadata in `assets/metadata.json`) or an `.onnx`
file (metadata in its metadata properties, run with onnxruntime). Every runtime takes
float32 RGB pixels on the 0-255 scale, [N, H, W, 3], and returns class probabilities
[N, classes]: crops of the model's input size, or (exports and Keras models alike) larger
whole images, whose class score map is averaged spatially (the VGG paper's dense
evaluation, see `keras_alexnet.models.dense`).

Importing this module loads neither TensorFlow nor onnxruntime; `load` imports what the
path needs. `.keras` files and ONNX files load on every Keras backend (TensorFlow, JAX,
PyTorch); a SavedModel needs the TensorFlow backend.
"""

import dataclasses
from collections.abc import Callable
from pathlib import Path

from keras_alexnet import backend
from keras_alexnet.artifacts import (
    KERAS_BEST,
    METADATA_FILENAME,
    OUTPUT_NAME,
    SAVEDMODEL_METADATA,
    SERVING_SIGNATURE,
    ModelPathError,
    check_class_count,
)
from keras_alexnet.backend import require_tensorflow
from keras_alexnet.metadata import Metadata
from keras_alexnet.onnx.session import AUTO, open_onnx, properties, read_metadata

RUNTIMES = ("keras", "savedmodel", "onnxruntime")
ACCEPTED = "a .keras file, a training run directory, a SavedModel directory or an .onnx file"


@dataclasses.dataclass
class Runtime:
    """A loaded model: `predict(images) -> probabilities`, its metadata and its runtime.

    `input_size` is the only spatial size the runtime accepts (None: any size of at least
    the crop, i.e. it can also run dense evaluation).
    """

    name: str  # one of RUNTIMES
    path: Path
    metadata: Metadata
    predict: Callable
    input_size: int | None = None

    @property
    def dense(self):
        """Whether the runtime takes whole images larger than the crop."""
        return self.input_size is None

    def classify(self, images, k=5):
        """Top-`k` classes, by name, of an image or a list of images.

        With the model's own preprocessing; file paths, encoded bytes, Pillow images or RGB
        arrays on the 0-255 scale, of any size (`keras_alexnet.classify`).
        """
        from keras_alexnet import classify

        return classify.classify(self.predict, self.metadata, images, k)


def resolve(path):
    """Return (runtime name, model file or directory, metadata path or None) for `path`."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelPathError(f"{path} does not exist: pass {ACCEPTED}")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel", path, path / SAVEDMODEL_METADATA
        if (path / KERAS_BEST).is_file():
            return "keras", path / KERAS_BEST, path / METADATA_FILENAME
        raise ModelPathError(
            f"{path} is a directory with neither {KERAS_BEST} (a run directory) nor "
            f"saved_model.pb (a SavedModel): pass {ACCEPTED}"
        )
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime", path, None
    if suffix == ".keras":
        return "keras", path, path.with_name(METADATA_FILENAME)
    raise ModelPathError(f"{path} is not a model file: pass {ACCEPTED}")


def _read_metadata(metadata_path, model_path):
    """Read a metadata.json, or say where it should have been."""
    if not metadata_path.is_file():
        raise ModelPathError(
            f"{model_path} has no {metadata_path.name} at {metadata_path}: copy the training "
            f"run's {METADATA_FILENAME} there (it holds the classes and preprocessing)"
        )
    try:
        return Metadata.load(metadata_path)
    except (ValueError, KeyError, TypeError) as e:
        raise ModelPathError(f"{metadata_path} is not a valid {METADATA_FILENAME}: {e}") from e


def load_keras_model(path):
    """Return (keras.Model, Metadata) of a `.keras` file or run directory."""
    kind, model_path, metadata_path = resolve(path)
    if kind != "keras":
        raise ModelPathError(f"{path} is not a Keras model: pass a .keras file or a run directory")
    metadata = _read_metadata(metadata_path, model_path)
    import keras

    import keras_alexnet.layers  # noqa: F401  (registers the custom layers for loading)

    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as e:  # a corrupt or foreign file: say so in one line
        raise ModelPathError.unreadable(model_path, "Keras model", e) from e
    check_class_count(model.output_shape[-1], metadata, model_path, metadata_path)
    return model, metadata


def _load_keras(path):
    """Runtime of a Keras model: the model itself on crops, its dense twin on larger images."""
    import numpy as np

    from keras_alexnet.models.dense import fully_convolutional

    model, metadata = load_keras_model(path)
    size = tuple(model.input_shape[1:3])
    crop_fn = _compiled(model, [None, *size, 3])
    dense_fn = None

    def predict(images):
        nonlocal dense_fn
        images = np.asarray(images, np.float32)
        if tuple(images.shape[1:3]) == size:
            return crop_fn(images)
        if dense_fn is None:
            # One trace for every image size (dense evaluation sees many).
            dense_fn = _compiled(fully_convolutional(model), [None, None, None, 3])
        return dense_fn(images)

    return Runtime("keras", resolve(path)[1], metadata, predict)


def _compiled(model, shape):
    """`images -> probabilities` (NumPy) of `model` in inference mode, compiled once per backend.

    TensorFlow: a tf.function over `shape`, one trace for every batch; JAX and PyTorch:
    Keras's own predict function (jit-compiled on JAX, per input shape).
    """
    if not backend.is_tensorflow():
        return model.predict_on_batch
    import tensorflow as tf

    fn = tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)]
    )
    return lambda images: fn(tf.convert_to_tensor(images)).numpy()


def _load_savedmodel(path):
    """Runtime of a SavedModel written by `keras_alexnet.export.export_savedmodel`."""
    import numpy as np

    require_tensorflow(f"loading the SavedModel {path}")
    import tensorflow as tf

    _, model_path, metadata_path = resolve(path)
    metadata = _read_metadata(metadata_path, model_path)
    try:
        loaded = tf.saved_model.load(str(model_path))
        signature = loaded.signatures[SERVING_SIGNATURE]
    except Exception as e:
        raise ModelPathError.unreadable(model_path, "SavedModel", e) from e
    (input_name,) = signature.structured_input_signature[1]
    spec = signature.structured_input_signature[1][input_name]
    size = spec.shape[1:3].as_list()
    input_size = size[0] if None not in size else None
    outputs = signature.structured_outputs
    output = OUTPUT_NAME if OUTPUT_NAME in outputs else next(iter(outputs))
    check_class_count(outputs[output].shape[-1], metadata, model_path, metadata_path)

    def predict(images):
        images = tf.convert_to_tensor(np.asarray(images, np.float32))
        return signature(**{input_name: images})[output].numpy()

    # `loaded` must stay alive while the signature is used.
    predict.saved_model = loaded
    return Runtime("savedmodel", model_path, metadata, predict, input_size)


def _load_onnx(path, threads=None, provider=AUTO):
    """Runtime of an ONNX file, run with onnxruntime (see `open_onnx`)."""
    import numpy as np

    _, model_path, _ = resolve(path)
    opened = open_onnx(model_path, threads, provider)
    session, output = opened.session, opened.probabilities
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ModelPathError(f"{model_path} must take one [N, H, W, 3] image input")
    input_name = inputs[0].name
    h, w = inputs[0].shape[1:3]
    input_size = h if isinstance(h, int) and isinstance(w, int) else None

    def predict(images):
        images = np.ascontiguousarray(images, np.float32)
        return session.run([output], {input_name: images})[0]

    predict.session = session
    return Runtime("onnxruntime", model_path, opened.metadata, predict, input_size)


def load(path, *, threads=None, provider=AUTO):
    """Open the model at `path` (see the module docstring) as a Runtime.

    `threads` and `provider` (see `onnx_session`) apply to ONNX files only.
    """
    kind = resolve(path)[0]
    if kind == "onnxruntime":
        return _load_onnx(path, threads, provider)
    if kind == "savedmodel":
        return _load_savedmodel(path)
    return _load_keras(path)


def load_metadata(path):
    """Read only the Metadata of the model at `path` (no TensorFlow for ONNX files)."""
    kind, model_path, metadata_path = resolve(path)
    if kind == "onnxruntime":
        return read_metadata(properties(model_path), model_path)
    return _read_metadata(metadata_path, model_path)
