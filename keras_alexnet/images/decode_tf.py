"""The TensorFlow decoders of the data pipeline, as graph ops for `Dataset.map`.

They give what the Pillow decoder (`decode`) gives: upright uint8 RGB, with the EXIF
orientation read by the shared `headers` parser. TensorFlow is imported at the top: the
server and predict never load this module.
"""

import numpy as np
import tensorflow as tf

from keras_alexnet.images import headers


def decode(contents, orientation=None):
    """Decode JPEG/PNG/GIF/BMP bytes to upright uint8 RGB (grayscale -> RGB, alpha dropped).

    TensorFlow's decoders ignore EXIF orientation; it is applied here as the Pillow decoder
    of predict and the server applies it (read from the bytes unless `orientation`, an
    int32 scalar, is given). 16-bit PNG samples become their high byte.
    """
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    if orientation is None:
        orientation = exif_orientation(contents)
    return upright(image, orientation)


def decode_prepared(contents):
    """Decode a prepared image (baseline JPEG, upright, no EXIF) to uint8 RGB."""
    image = tf.io.decode_jpeg(contents, channels=3)
    image.set_shape([None, None, 3])
    return image


def _orientation_of(head):
    """headers.exif_orientation for a numpy_function argument (bytes, or a 0-d array)."""
    return np.int32(headers.exif_orientation(np.asarray(head).item()))


def exif_orientation(contents):
    """The EXIF orientation (1-8) of encoded bytes as an int32 scalar tensor; 1 when absent."""
    # No TensorFlow op reads EXIF: the pure-Python parser shared with the Pillow decoder
    # reads the first bytes, so both decoders agree by construction.
    head = tf.strings.substr(contents, 0, headers.EXIF_HEAD)
    orientation = tf.numpy_function(_orientation_of, [head], tf.int32, stateful=False)
    return tf.ensure_shape(orientation, [])


def upright(image, orientation):
    """Turn an [H, W, C] image stored with EXIF `orientation` upright (headers' table)."""
    transpose, flip_rows, flip_cols = tf.unstack(
        tf.gather(tf.constant(headers.ORIENTATIONS), orientation)
    )
    image = tf.cond(transpose, lambda: _transpose(image), lambda: image)
    image = tf.cond(flip_rows, lambda: tf.reverse(image, axis=[0]), lambda: image)
    return tf.cond(flip_cols, lambda: tf.reverse(image, axis=[1]), lambda: image)


def _transpose(image):
    """Swap an image's rows and columns by a gather.

    Not `tf.transpose`: oneDNN's uint8 Transpose logs an error line on CPUs without
    AVX-512 whenever the op is built, rotated image or not (and grappler moves a transpose
    in int32 back to uint8).
    """
    shape = tf.shape(image)
    rows, cols = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]))  # [W, H] each
    return tf.gather_nd(image, tf.stack([rows, cols], axis=-1))
