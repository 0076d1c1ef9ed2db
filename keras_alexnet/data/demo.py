"""The bundled real demo set: the UCI handwritten digits, shipped in this package.

1,797 real 8x8 grayscale scans of handwritten digits (10 classes) from the UCI Machine
Learning Repository ("Optical Recognition of Handwritten Digits", Alpaydin & Kaynak,
CC BY 4.0), in digits.npz next to this module (taken from scikit-learn's copy; see
digits.NOTICE.md), so nothing is downloaded. Written once as a class-folder tree of PNGs
and then read through the ordinary directory source.
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_alexnet import fileio
from keras_alexnet.data.cache import cache_dir as resolve_cache_dir

DEMO_NAME = "digits"
VERSION = "v1"
VAL_EVERY = 5  # every 5th image of each class (in scikit-learn's order) is validation: 20 %
DIGITS_FILE = Path(__file__).with_name("digits.npz")


class Digits(NamedTuple):
    """The digits as scikit-learn's `load_digits` returns them: float64 0..16 images, labels."""

    images: np.ndarray  # [1797, 8, 8] float64, counts 0..16
    target: np.ndarray  # [1797] int64, 0..9


def load_digits():
    """Return the bundled digits, equal to scikit-learn's `load_digits()` images and target."""
    with np.load(DIGITS_FILE) as archive:
        return Digits(archive["images"].astype(np.float64), archive["target"].astype(np.int64))


def demo_split(labels):
    """Return a boolean mask of validation images: the fixed, stratified 20 % split."""
    labels = np.asarray(labels)
    is_val = np.zeros(len(labels), bool)
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        is_val[members[::VAL_EVERY]] = True
    return is_val


def ensure_demo_set(cache_dir=None):
    """Write the digits once as <cache>/digits-v1/{train,val}/<digit>/<index>.png; return it.

    The default cache is $KERAS_ALEXNET_CACHE or ~/.cache/keras_alexnet. The tree is
    written to a temporary directory and renamed into place, so a killed write never
    leaves half a tree.
    """
    root = resolve_cache_dir(cache_dir) / f"{DEMO_NAME}-{VERSION}"
    if (root / "train").is_dir():
        return root
    digits = load_digits()
    # The images hold counts 0..16 of a 4x4 block; rescale to 0..255.
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    is_val = demo_split(digits.target)
    with fileio.atomic_path(root) as tmp:
        for index, (image, label, val) in enumerate(
            zip(pixels, digits.target, is_val, strict=True)
        ):
            folder = tmp / ("val" if val else "train") / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            png = tf.io.encode_png(image[..., None]).numpy()
            (folder / f"{index:04d}.png").write_bytes(png)
    return root
