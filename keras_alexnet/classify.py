"""Classify images with a loaded model: its own preprocessing, readable top-k class names.

What `keras_alexnet.load(path).classify(...)` runs (timm's `create_transform` + model,
keras-hub's classifier `predict` in one call): each image, given as a file path, encoded
bytes, a Pillow image or an RGB array on the 0-255 scale of any size, is decoded and cut as
the model's Metadata says (shorter side to `resize`, central `input_size` crop, the same
steps as `predict`, the server and the data pipeline's centre crop), then the model's
probabilities become the `k` most probable classes, by name. `top_k` is the one maker of
those answers, for `predict` and the server too.
"""

import os

import numpy as np

from keras_alexnet.images import decode as decoding
from keras_alexnet.images.crop import EvalTransform

BATCH = 32  # crops per model call


def top_k(probabilities, class_names, k=5):
    """The `k` most probable classes of one probability vector, most probable first."""
    probabilities = np.asarray(probabilities)
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {"index": int(i), "class": class_names[i], "probability": float(probabilities[i])}
        for i in order
    ]


def crop(image, metadata):
    """One image (path, bytes, Pillow image or [H, W(, C)] array) as the model's input crop."""
    if isinstance(image, str | os.PathLike):
        with open(image, "rb") as f:
            image = f.read()
    if isinstance(image, bytes | bytearray):
        return decoding.preprocess(bytes(image), metadata)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a Pillow image
        image = np.asarray(image.convert("RGB"))
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3) or pixels.dtype.kind not in "uif":
        raise ValueError(
            "an image must be a path, bytes, a Pillow image or an RGB array [H, W, 3] on the "
            f"0-255 scale. Received: an array of shape {list(pixels.shape)} ({pixels.dtype})"
        )
    out = EvalTransform.from_metadata(metadata).numpy(pixels)
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


def classify(predict, metadata, images, k=5):
    """Top-`k` classes of one image, or of each image of a list (see `crop` for the kinds)."""
    single = not isinstance(images, list | tuple)
    items = [images] if single else list(images)
    answers = []  # an empty list answers an empty list
    for start in range(0, len(items), BATCH):
        crops = np.stack([crop(image, metadata) for image in items[start : start + BATCH]])
        probabilities = np.asarray(predict(crops))
        answers += [top_k(p, metadata.class_names, k) for p in probabilities]
    return answers[0] if single else answers
