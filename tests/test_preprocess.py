"""The evaluation centre crop's two implementations agree: TensorFlow and NumPy."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_alexnet.images import decode, decode_tf
from keras_alexnet.images.crop import EvalTransform
from keras_alexnet.metadata import Metadata


@pytest.mark.parametrize(
    "shape,resize,crop",
    [((37, 53), 32, 28), ((90, 41), 40, 40), ((9, 150), 12, 11), ((256, 256), 256, 227)],
    ids=["landscape", "portrait-crop-equals-resize", "elongated-16-to-1", "square-227"],
)
def test_tensorflow_and_numpy_center_crops_agree_on_a_png(shape, resize, crop):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    metadata = Metadata(
        model="alexnet", class_names=("a", "b"), input_size=227, resize=256, mean=(0, 0, 0)
    )
    transform = EvalTransform.from_metadata(metadata, resize=resize, crop=crop)
    want = transform.tensorflow(decode_tf.decode(tf.constant(buffer.getvalue()))).numpy()
    got = transform.numpy(decode.decode(buffer.getvalue()))
    assert got.dtype == want.dtype == np.float32 and got.shape == (crop, crop, 3)
    # Float32 rounding of a bilinear blend on the 0-255 scale: well under a level.
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
