"""Top-5 predictions for image files with any saved model: Keras, SavedModel or ONNX.

Images go through the model's own preprocessing (`Metadata`: shorter side to `resize`,
centre `input_size` crop, RGB 0-255; the mean is inside the model), done with Pillow and
NumPy as the server does it (`keras_alexnet.serving.images`).
"""

import os
from pathlib import Path

import numpy as np

from keras_alexnet import runtime
from keras_alexnet.serving import images
from keras_alexnet.serving.model import top_k


def load_predictor(path, threads=None):
    """Open any saved model (see `keras_alexnet.runtime`): return (predict, Metadata).

    Raises `keras_alexnet.runtime.ModelPathError` with a one-line reason for a bad path.
    """
    loaded = runtime.load(path, threads=threads)
    return loaded.predict, loaded.metadata


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


def predict_files(predict_fn, metadata, paths, *, batch_size=32, k=5, progress=True):
    """Classify each file; return one dict per path: {"file", "top5"} or {"file", "error"}."""
    from tqdm import tqdm

    results, batch = [], []

    def flush():
        if batch:
            probabilities = np.asarray(predict_fn(np.stack([crop for _, crop in batch])))
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


def predict(model_path, inputs, *, batch_size=32, k=5, progress=False, threads=None):
    """Top-`k` classes of every image in `inputs` (files, folders) with any saved model."""
    predict_fn, metadata = load_predictor(model_path, threads)
    paths = image_paths(inputs)
    return predict_files(predict_fn, metadata, paths, batch_size=batch_size, k=k, progress=progress)


def format_text(results):
    """Human-readable lines: each classified file, then one `probability  class` line per class."""
    lines = []
    for result in results:
        if "top5" in result:
            lines.append(result["file"])
            lines += [f"  {c['probability']:.4f}  {c['class']}" for c in result["top5"]]
    return "\n".join(lines)
