"""Top-5 predictions for image files with any saved model: Keras, SavedModel or ONNX.

Images go through the model's own preprocessing (`Metadata`: shorter side to `resize`,
centre `input_size` crop, RGB 0-255; the mean is inside the model), done with Pillow and
NumPy as the server does it (`keras_alexnet.images.decode`).
"""

import os
import stat
from pathlib import Path

import numpy as np

from keras_alexnet import runtime
from keras_alexnet.classify import top_k
from keras_alexnet.images import decode
from keras_alexnet.progress import Progress

# A file larger than this is refused unread: the server's default request limit
# (ServeConfig.max_body_mb, 64 MiB); no image a model of this package classifies comes near.
MAX_FILE_BYTES = 64 * 2**20


def load_predictor(path, threads=None, provider=runtime.AUTO):
    """Open any saved model (see `keras_alexnet.runtime`): return (predict, Metadata).

    Raises `keras_alexnet.runtime.ModelPathError` with a one-line reason for a bad path.
    """
    loaded = runtime.load(path, threads=threads, provider=provider)
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


def read_image_file(path, max_bytes=MAX_FILE_BYTES):
    """The bytes of a regular file of at most `max_bytes`; OSError/ValueError saying why not."""
    # Opening a FIFO waits for a writer, and a device such as /dev/zero never ends.
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError("not a regular file")
    # O_NONBLOCK: should a FIFO replace the file after the check, opening it must not hang.
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes / 2**20:g} MiB")
    return data


def predict_files(predict_fn, metadata, paths, *, batch_size=32, k=5, progress=True):
    """Classify each file; return one dict per path: {"file", "top5"} or {"file", "error"}.

    Only regular files are read (a FIFO, socket or device is an error "not a regular
    file"), and none larger than MAX_FILE_BYTES.
    """
    results, batch = [], []

    def flush():
        if batch:
            probabilities = np.asarray(predict_fn(np.stack([crop for _, crop in batch])))
            for (index, _), p in zip(batch, probabilities, strict=True):
                results[index]["top5"] = top_k(p, metadata.class_names, k)
            batch.clear()

    with Progress(len(paths), "images", "img", enabled=progress) as bar:
        for path in paths:
            results.append({"file": str(path)})
            try:
                data = read_image_file(path)
                batch.append((len(results) - 1, decode.preprocess(data, metadata)))
            except (OSError, ValueError) as e:
                results[-1]["error"] = str(e)
            if len(batch) == batch_size:
                flush()
            bar.add()
        flush()
    return results


def predict(
    model_path, inputs, *, batch_size=32, k=5, progress=False, threads=None, provider=runtime.AUTO
):
    """Top-`k` classes of every image in `inputs` (files, folders) with any saved model."""
    predict_fn, metadata = load_predictor(model_path, threads, provider)
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
