"""Image decoding in Pillow + NumPy, without TensorFlow, and the evaluation preprocessing.

Decode to RGB, then the model's centre crop (`crop.EvalTransform`, the same steps as the
data pipeline's centre-crop protocol, to float32 rounding).

This decoder and the pipeline's (`decode_tf`) turn an image upright by its EXIF orientation
and take a 16-bit sample's high byte, with the shared `headers`. One known difference:
Pillow decodes JPEG with libjpeg's accurate integer IDCT, while `tf.io.decode_image` uses
the fast one, so JPEG pixels can differ from the pipeline's by a few levels
(`tf.io.decode_jpeg(..., dct_method="INTEGER_ACCURATE")` equals Pillow).
"""

import io
import warnings

import numpy as np
from PIL import Image

from keras_alexnet.errors import Error
from keras_alexnet.images import headers
from keras_alexnet.images.crop import EvalTransform

MAX_PIXELS = headers.UPLOAD_MAX_PIXELS  # a decoded image larger than this is refused
# Pillow's modes for 16-bit grayscale, whose convert("RGB") clips at 255 instead of scaling.
SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N")
# Formats TensorFlow decodes: their orientation is read by the same parser as in training.
_TF_FORMATS = ("JPEG", "PNG", "GIF", "BMP")
# Peak bytes per pixel of `preprocess` by Pillow mode: Pillow's decoded image (4 bytes a
# pixel for RGB), a conversion to RGB, the NumPy copy and a turn by the EXIF orientation;
# more where the decoder keeps a buffer of its own. Measured, rounded up; test_serve.py
# checks them against the peak RSS of decoding.
DECODE_BYTES_PER_PIXEL = {"L": 4, "I;16": 8, "I;16B": 8, "I;16L": 8, "I;16N": 8, "RGB": 14}
DECODER_BYTES_PER_PIXEL = {"WEBP": 8}
OTHER_MODE_BYTES_PER_PIXEL = 17  # P, RGBA, LA, CMYK, I, F, ...: converted to RGB first


class ImageError(Error, ValueError):
    """An upload that is not a readable image."""


class ImageTooLarge(ImageError):
    """An image too large, or too elongated, to decode and resize in bounded memory."""


def decode(data, max_pixels=MAX_PIXELS):
    """Decode image bytes (JPEG, PNG, GIF, BMP, ...) to an upright uint8 RGB array [H, W, 3].

    Grayscale becomes RGB and an alpha channel is dropped, as `tf.io.decode_image(...,
    channels=3)` does; an animation gives its first frame. Raises ImageTooLarge for more
    than `max_pixels` pixels or an aspect ratio over `headers.MAX_ASPECT`, before decoding.
    """
    return _decode(data, max_pixels, keep_grey=False)


def _decode(data, max_pixels, keep_grey):
    """`decode`; with `keep_grey`, a grey image as [H, W, 1] (a third of the memory)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            problem = headers.shape_problem(*image.size, max_pixels)
            if problem:
                raise ImageTooLarge(f"image {problem}")
            image.load()
            orientation = _orientation(image, data)
            pixels = _pixels(image, keep_grey)
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
        return headers.exif_orientation(data)
    return image.getexif().get(headers.ORIENTATION_TAG, 1)


def _pixels(image, keep_grey=False):
    """A loaded Pillow image as uint8 RGB [H, W, 3]; with `keep_grey`, a grey one as [H, W, 1].

    16-bit grayscale is scaled as TensorFlow scales it. Grey as RGB repeats it 3 times.
    """
    if image.mode in SIXTEEN_BIT_GRAY:
        # libpng's 16-to-8 strip, as in tf.io.decode_png(dtype=uint8): the high byte.
        gray = (np.asarray(image).astype(np.uint16, copy=False) >> 8).astype(np.uint8)[..., None]
    elif image.mode == "L":
        gray = np.asarray(image)[..., None]
    else:  # an RGB image as it is: convert("RGB") would copy it first
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    return gray if keep_grey else np.repeat(gray, 3, axis=-1)


def upright(pixels, orientation):
    """Turn an [H, W, C] array stored with EXIF `orientation` upright (headers' table)."""
    if not 0 <= orientation < len(headers.ORIENTATIONS):
        return pixels
    transpose, flip_rows, flip_cols = headers.ORIENTATIONS[orientation]
    if transpose:
        pixels = pixels.transpose(1, 0, 2)
    if flip_rows:
        pixels = pixels[::-1]
    if flip_cols:
        pixels = pixels[:, ::-1]
    return np.ascontiguousarray(pixels)


def preprocess(data, metadata, max_pixels=MAX_PIXELS):
    """Decode image bytes and apply `metadata`'s centre-crop preprocessing: [S, S, 3] float32.

    A grey image is resized as one channel and repeated after the crop: the same numbers
    (every channel is resized alike) from a third of the memory.
    """
    pixels = _decode(data, max_pixels, keep_grey=True)
    crop = EvalTransform.from_metadata(metadata).numpy(pixels)
    return np.repeat(crop, 3, axis=-1) if crop.shape[-1] == 1 else crop


def decode_cost(data, max_pixels=MAX_PIXELS):
    """About the most bytes `preprocess` holds at once for image bytes `data`, from its header.

    0 for what `preprocess` refuses before decoding (not an image, too large): it says why.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                (width, height), mode, fmt = image.size, image.mode, image.format
    except Exception:  # noqa: BLE001 - any unreadable header: preprocess names the problem
        return 0
    if headers.shape_problem(width, height, max_pixels):
        return 0
    per_pixel = DECODE_BYTES_PER_PIXEL.get(mode, OTHER_MODE_BYTES_PER_PIXEL)
    return width * height * (per_pixel + DECODER_BYTES_PER_PIXEL.get(fmt, 0))


__all__ = [
    "MAX_PIXELS",
    "ImageError",
    "ImageTooLarge",
    "decode",
    "decode_cost",
    "preprocess",
    "upright",
]
