"""Top-5 predictions for image files with a trained Keras model or an exported ONNX model.

Images go through the model's own preprocessing (`Metadata`: shorter side to `resize`,
centre `input_size` crop, RGB 0-255; the mean is inside the model), done with Pillow and
NumPy exactly as the data pipeline does it.
"""

import os
from pathlib import Path

import numpy as np

from keras_alexnet.metadata import FILENAME, Metadata
from keras_alexnet.serving import images
from keras_alexnet.serving.model import OnnxModel, top_k


class PredictError(ValueError):
    """A model path that cannot be used."""


def _keras_predictor(path):
    """The predict function of a .keras file (custom layers registered first)."""
    import keras

    import keras_alexnet.layers  # noqa: F401  (registers GroupedConv2D, LRN, ...)

    try:
        model = keras.saving.load_model(path)
    except Exception as e:  # Keras raises ValueError, OSError, zipfile errors, ...
        raise PredictError(f"Keras cannot load {path}: {e}") from None
    return model.predict_on_batch


def load_predictor(path, threads=0):
    """Load a run dir, .keras file or .onnx file: return (predict(batch) -> probs, Metadata).

    A .keras file's metadata is `metadata.json` beside it; a run directory's model is its
    `best.keras`; an ONNX file carries its metadata in its metadata properties.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "best.keras").is_file():
            raise PredictError(f"{path} is a directory without best.keras (not a run directory)")
        path = path / "best.keras"
    if not path.is_file():
        raise PredictError(f"no model at {path}")
    if path.suffix == ".onnx":
        try:
            model = OnnxModel(path, threads=threads)
        except ValueError as e:
            raise PredictError(str(e)) from None
        if model.metadata is None:
            raise PredictError(f"{path} has no keras_alexnet metadata (class names, sizes)")
        name = model.inputs[0].name
        return (lambda x: model.run({name: x})[model.probabilities]), model.metadata
    if path.suffix == ".keras":
        meta = path.with_name(FILENAME)
        if not meta.is_file():
            raise PredictError(f"no {FILENAME} beside {path} (class names, sizes)")
        return _keras_predictor(path), Metadata.load(meta)
    raise PredictError(f"{path}: expected a run directory, a .keras file or an .onnx file")


def image_paths(inputs):
    """Expand files and directories (searched recursively, hidden files skipped), in order."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                paths += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
        else:
            paths.append(item)
    return paths


def predict_files(predict, metadata, paths, *, batch_size=32, k=5, progress=True):
    """Classify each file; return one dict per path: {"file", "top5"} or {"file", "error"}."""
    from tqdm import tqdm

    results, batch = [], []

    def flush():
        if batch:
            probabilities = np.asarray(predict(np.stack([crop for _, crop in batch])))
            for (index, _), p in zip(batch, probabilities, strict=True):
                results[index]["top5"] = top_k(p, metadata.class_names, k)
            batch.clear()

    for path in tqdm(paths, desc="images", unit="img", disable=not progress or None):
        results.append({"file": str(path)})
        try:
            data = Path(path).read_bytes()
            batch.append((len(results) - 1, images.preprocess(data, metadata)))
        except (OSError, ValueError) as e:
            results[-1]["error"] = str(e)
        if len(batch) == batch_size:
            flush()
    flush()
    return results
