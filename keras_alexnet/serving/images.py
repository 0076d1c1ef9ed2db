"""Image decoding in Pillow + NumPy, without TensorFlow, and the evaluation preprocessing.

Decode to RGB, then the model's centre crop (`keras_alexnet.preprocess.EvalTransform`, the
same steps as the data pipeline's centre-crop protocol, to float32 rounding).

Both decoders turn an image upright by its EXIF orientation and take a 16-bit sample's
high byte, with the shared `keras_alexnet.imageinfo`. One known difference: Pillow decodes
JPEG with libjpeg's accurate integer IDCT, while `tf.io.decode_image` uses the fast one, so
JPEG pixels can differ from the pipeline's by a few levels
(`tf.io.decode_jpeg(..., dct_method="INTEGER_ACCURATE")` equals Pillow).
"""

import io
import warnings

import numpy as np
from PIL import Image

from keras_alexnet import imageinfo
from keras_alexnet.preprocess import UPLOAD_MAX_PIXELS, EvalTransform, center_crop_resized

MAX_PIXELS = UPLOAD_MAX_PIXELS  # a decoded image larger than this is refused
# Pillow's modes for 16-bit grayscale, whose convert("RGB") clips at 255 instead of scaling.
SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N")
# Formats TensorFlow decodes: their orientation is read by the same parser as in training.
_TF_FORMATS = ("JPEG", "PNG", "GIF", "BMP")


class ImageError(ValueError):
    """An upload that is not a readable image."""


class ImageTooLarge(ImageError):
    """An image too large, or too elongated, to decode and resize in bounded memory."""


def decode(data, max_pixels=MAX_PIXELS):
    """Decode image bytes (JPEG, PNG, GIF, BMP, ...) to an upright uint8 RGB array [H, W, 3].

    Grayscale becomes RGB and an alpha channel is dropped, as `tf.io.decode_image(...,
    channels=3)` does; an animation gives its first frame. Raises ImageTooLarge for more
    than `max_pixels` pixels or an aspect ratio over `imageinfo.MAX_ASPECT`, before decoding.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            problem = imageinfo.shape_problem(*image.size, max_pixels)
            if problem:
                raise ImageTooLarge(f"image {problem}")
            image.load()
            orientation = _orientation(image, data)
            pixels = _rgb(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(str(e)) from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image (Pillow recognises no image format in it)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot decode the image ({e})") from None
    return upright(pixels, orientation)


def _orientation(image, data):
    """The EXIF orientation: TensorFlow's formats through the pipeline's parser, others Pillow's."""
    if image.format in _TF_FORMATS:
        return imageinfo.exif_orientation(data)
    return image.getexif().get(imageinfo.ORIENTATION_TAG, 1)


def _rgb(image):
    """A loaded Pillow image as uint8 RGB, 16-bit grayscale scaled as TensorFlow scales it."""
    if image.mode in SIXTEEN_BIT_GRAY:
        # libpng's 16-to-8 strip, as in tf.io.decode_png(dtype=uint8): the high byte.
        gray = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def upright(pixels, orientation):
    """Turn an [H, W, C] array stored with EXIF `orientation` upright (imageinfo's table)."""
    if not 0 <= orientation < len(imageinfo.ORIENTATIONS):
        return pixels
    transpose, flip_rows, flip_cols = imageinfo.ORIENTATIONS[orientation]
    if transpose:
        pixels = pixels.transpose(1, 0, 2)
    if flip_rows:
        pixels = pixels[::-1]
    if flip_cols:
        pixels = pixels[:, ::-1]
    return np.ascontiguousarray(pixels)


def preprocess(data, metadata, max_pixels=MAX_PIXELS):
    """Decode image bytes and apply `metadata`'s centre-crop preprocessing: [S, S, 3] float32."""
    return EvalTransform.from_metadata(metadata).numpy(decode(data, max_pixels))


__all__ = [
    "MAX_PIXELS",
    "ImageError",
    "ImageTooLarge",
    "center_crop_resized",  # from keras_alexnet.preprocess: the server's one image module
    "decode",
    "preprocess",
    "upright",
]
