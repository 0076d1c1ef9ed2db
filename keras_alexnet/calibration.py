"""The crops int8 quantisation is calibrated and checked on, cut from a data source.

Centre crops, as the model's Metadata says, of the training split (calibration) and of the
validation split, or of training images not used to calibrate when there is none (the
held-out crops, on which int8's top-1 is compared with fp32's).
"""

import dataclasses

import numpy as np

from keras_alexnet.artifacts import ExportError
from keras_alexnet.images.crop import EvalTransform


@dataclasses.dataclass(frozen=True)
class CalibrationImages:
    """Calibration crops, held-out crops with their labels, and what they were cut from."""

    calibration: np.ndarray  # float32 [N, S, S, 3], 0-255
    held_out: np.ndarray
    labels: np.ndarray
    held_out_name: str  # e.g. "364 validation images of digits"
    source: str  # the data source's name


def center_crops(source, metadata, split, count, batch_size=16):
    """Up to `count` centre crops of `split`, float32 [N, S, S, 3] on 0-255, and labels."""
    from keras_alexnet.data import eval_dataset

    transform = EvalTransform.from_metadata(metadata)
    ds = eval_dataset(
        source, protocol="center", image_size=transform.crop, resize=transform.resize,
        batch_size=batch_size, split=split,
    )  # fmt: skip
    images, labels, total = [], [], 0
    for x, y in ds:
        images.append(x.numpy())
        labels.append(y.numpy())
        total += len(y)
        if total >= count:
            break
    return np.concatenate(images)[:count], np.concatenate(labels)[:count]


def calibration_images(source, metadata, calibration_count, agreement_count):
    """The CalibrationImages of `source` for a model with `metadata`; ExportError if empty."""
    if not source.num_train:
        raise ExportError(f"{source.name} has no training images to calibrate on")
    calibration, _ = center_crops(source, metadata, "train", calibration_count)
    if source.num_val:
        held_out, labels = center_crops(source, metadata, "val", agreement_count)
        name = f"{len(held_out)} validation images of {source.name}"
    else:
        rest, labels = center_crops(source, metadata, "train", calibration_count + agreement_count)
        held_out, labels = rest[len(calibration) :], labels[len(calibration) :]
        name = f"{len(held_out)} training images of {source.name} not used to calibrate"
    if not len(held_out):
        raise ExportError(f"{source.name} has no images left to measure the int8 agreement on")
    return CalibrationImages(calibration, held_out, labels, name, source.name)
