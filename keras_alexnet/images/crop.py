"""The evaluation preprocessing, resolved once from a model's Metadata, in TF and in NumPy.

`EvalTransform.from_metadata` (as timm's `resolve_data_config`, torchvision's
`ImageClassification` preset) fixes the centre-crop protocol: rescale the shorter side to
`resize` (bilinear, half-pixel centres, no antialiasing), cut the central `crop` square,
float32 on the 0-255 scale. The mean and scale are applied inside the model, so nothing else
is done here. Its two implementations stand side by side: `tensorflow` (`crop_tf`'s ops,
for `Dataset.map`) and `numpy` (predict and the server), equal to float32 rounding.

TensorFlow is imported only by `tensorflow`, never at import time: the server loads this
module and must not load TensorFlow.
"""

import dataclasses

import numpy as np

INTERPOLATIONS = ("bilinear",)  # the one both implementations compute identically


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """Shorter side to `resize`, then the central `crop` x `crop` square, float32 on 0-255."""

    resize: int
    crop: int
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {INTERPOLATIONS}. "
                f"Received: interpolation={self.interpolation!r}"
            )

    @classmethod
    def from_metadata(cls, metadata, *, resize=None, crop=None):
        """The model's preprocessing (`resize`, `input_size`), overridden where given."""
        return cls(resize=int(resize or metadata.resize), crop=int(crop or metadata.input_size))

    def numpy(self, image):
        """The centre crop of a uint8 [H, W, 3] array, in NumPy: float32 [crop, crop, 3]."""
        return center_crop_resized(image, self.resize, self.crop)

    def tensorflow(self, image):
        """The centre crop of an [H, W, 3] tensor, with the data pipeline's TensorFlow ops."""
        from keras_alexnet.images import crop_tf

        return crop_tf.center_crop(crop_tf.resize_shorter(image, self.resize), self.crop)


def shorter_side_shape(height, width, size):
    """The (height, width) with shorter side `size` and the aspect ratio of the input.

    Computed in float32 and rounded half to even, as `crop_tf.shorter_side_shape` does.
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
        near = _gather(image, y, x0).astype(np.float32)
        return near + (_gather(image, y, x1) - near) * fx[None, :, None]

    # Columns first, then rows, as TensorFlow's kernel blends.
    upper = corners(y0)
    return upper + (corners(y1) - upper) * fy[:, None, None]


def _gather(image, rows, cols):
    """`image[rows][:, cols]` for index vectors, reading only the pixels it returns.

    Whole source rows would make a 1-pixel high, 1,000,000 wide image cost 227 x 1,000,000
    x 3. A contiguous image is read by flat pixel index (`take` on [H * W, C], faster than
    `np.ix_`: benchmarks/RESULTS.md, "Figures that used to live in docstrings"), any other
    through `np.ix_`.
    """
    if not image.flags.c_contiguous:
        return image[np.ix_(rows, cols)]
    flat = image.reshape(-1, image.shape[-1])
    index = (rows[:, None] * image.shape[1] + cols[None, :]).ravel()
    return flat.take(index, axis=0).reshape(len(rows), len(cols), image.shape[-1])


def center_crop_resized(image, resize, size):
    """Rescale the shorter side to `resize`, then cut the central `size` square (float32)."""
    height, width = shorter_side_shape(image.shape[0], image.shape[1], resize)
    if size > min(height, width):
        raise ValueError(f"crop {size} is larger than the resized image {height}x{width}")
    top, left = (height - size) // 2, (width - size) // 2
    return resize_bilinear(image, height, width, top=top, left=left, crop=size)
