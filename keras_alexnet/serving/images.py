"""Image decoding and the evaluation preprocessing in Pillow + NumPy, without TensorFlow.

The same steps as the data pipeline's centre-crop protocol (`keras_alexnet.data`): decode to
RGB, rescale so the shorter side is `metadata.resize` (bilinear, half-pixel centres, no
antialiasing: `tf.image.resize(..., "bilinear")` to float32 rounding), cut the central
`metadata.input_size` square, float32 on the 0-255 scale. The mean is subtracted inside the
model, so nothing else is done here.

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

MAX_PIXELS = 40_000_000  # a decoded image larger than this is refused (decompression bombs)
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


def shorter_side_shape(height, width, size):
    """The (height, width) with shorter side `size` and the aspect ratio of the input.

    Computed in float32 and rounded half to even, as the data pipeline does.
    """
    shape = np.array([height, width], np.float32)
    new = np.round(shape * np.float32(size) / shape.min())
    return tuple(int(v) for v in np.maximum(new, size))


def _taps(in_size, out_size, start, count):
    """Source indices and weights of output rows start..start+count of a bilinear resize."""
    scale = np.float32(in_size) / np.float32(out_size)
    x = (np.arange(start, start + count, dtype=np.float32) + np.float32(0.5)) * scale
    x = x - np.float32(0.5)
    floor = np.floor(x)
    frac = (x - floor).astype(np.float32)
    lo = np.clip(floor, 0, in_size - 1).astype(np.intp)
    hi = np.clip(floor + 1, 0, in_size - 1).astype(np.intp)
    return lo, hi, frac


def resize_bilinear(image, height, width, *, top=0, left=0, crop=None):
    """Bilinear resize to (height, width) like `tf.image.resize`, returning only a window.

    Returns the `crop` x `crop` window at (top, left) of the resized image (the whole image
    when `crop` is None) as float32, computing only the pixels in that window: memory
    follows the window, whatever the input's shape.
    """
    rows, cols = (height, width) if crop is None else (crop, crop)
    image = np.asarray(image)
    y0, y1, fy = _taps(image.shape[0], height, top, rows)
    x0, x1, fx = _taps(image.shape[1], width, left, cols)

    def corners(y):
        # Only the source pixels the window reads: whole source rows would make a 1-pixel
        # high, 1,000,000 wide image cost 227 x 1,000,000 x 3 float32 (2.7 GB).
        near = image[np.ix_(y, x0)].astype(np.float32)
        return near + (image[np.ix_(y, x1)] - near) * fx[None, :, None]

    # Columns first, then rows, as TensorFlow's kernel blends.
    upper = corners(y0)
    return upper + (corners(y1) - upper) * fy[:, None, None]


def center_crop_resized(image, resize, size):
    """Rescale the shorter side to `resize`, then cut the central `size` square (float32)."""
    height, width = shorter_side_shape(image.shape[0], image.shape[1], resize)
    if size > min(height, width):
        raise ValueError(f"crop {size} is larger than the resized image {height}x{width}")
    top, left = (height - size) // 2, (width - size) // 2
    return resize_bilinear(image, height, width, top=top, left=left, crop=size)


def preprocess(data, metadata, max_pixels=MAX_PIXELS):
    """Decode image bytes and apply `metadata`'s centre-crop preprocessing: [S, S, 3] float32."""
    return center_crop_resized(decode(data, max_pixels), metadata.resize, metadata.input_size)
