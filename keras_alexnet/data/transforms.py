"""The papers' image transforms as pure TensorFlow ops, for use inside `Dataset.map`.

Images are float32 RGB on the 0-255 scale. Random transforms are stateless and take an
explicit `seed` (a shape-[2] int tensor), so a pipeline is reproducible from one seed.
"""

import numpy as np
import tensorflow as tf

from keras_alexnet.images import headers

PCA_STD = 0.1  # AlexNet Section 4.1: alpha_i ~ N(0, 0.1)


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


def shorter_side_shape(shape, size):
    """The (height, width) with shorter side `size` and the aspect ratio of `shape`."""
    shape = tf.cast(shape, tf.float32)
    size = tf.cast(size, tf.float32)
    new = tf.round(shape * size / tf.reduce_min(shape))
    return tf.cast(tf.maximum(new, size), tf.int32)


def resize_shorter(image, size):
    """Rescale so the shorter side is `size` (a scalar, may be a tensor), keeping the aspect.

    AlexNet Section 2: "rescaled the image such that the shorter side was of length 256";
    VGG Section 3.1: the training scale S (fixed, or drawn per image when jittering).
    Bilinear with half-pixel centres, float32 out.
    """
    new = shorter_side_shape(tf.shape(image)[:2], size)
    # Bilinear resizing reads uint8 directly and writes float32: no full-size cast pass.
    return tf.image.resize(image, new, method="bilinear")


def crop(image, top, left, size):
    """The `size` x `size` patch at (top, left)."""
    return image[top : top + size, left : left + size]


def flip_if(image, flip):
    """Reflect horizontally when the boolean tensor `flip` is true."""
    return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)


def random_scale(lo, hi, seed):
    """Draw the training scale S uniformly from [lo, hi] (VGG's scale jittering)."""
    return tf.random.stateless_uniform([], seed, minval=lo, maxval=hi + 1, dtype=tf.int32)


def random_crop_params(resized_shape, size, crop_seed, flip_seed):
    """Draw a crop position in an image of `resized_shape`, and a reflection.

    AlexNet Section 4.1: random 224 (here 227) patches, uniformly placed, "and their
    horizontal reflections" (probability 1/2). Returns (top, left, flip).
    """
    room = resized_shape - size + 1
    offset = tf.random.stateless_uniform([2], crop_seed, maxval=tf.int32.max, dtype=tf.int32)
    top, left = tf.unstack(offset % room)
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    return top, left, flip


def lighting_alpha(seed, std=PCA_STD):
    """One image's PCA lighting coefficients alpha ~ N(0, std), shape [3].

    AlexNet Section 4.1: alpha is drawn once per image each time the image is used (the
    caller passes a fresh seed per image per presentation); the offset added to every
    pixel is [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T (`lighting_offsets`).
    """
    return tf.random.stateless_normal([3], seed, stddev=std)


def lighting_offsets(alphas, eigval, eigvec):
    """The RGB offsets eigvec @ (alpha * eigval) of a batch of alphas [B, 3], as [B, 3].

    p_i, l_i are the eigenvectors (columns of `eigvec`) and eigenvalues of the RGB
    covariance (`DatasetStats`).
    """
    weights = alphas * tf.constant(eigval, tf.float32)  # [B, 3]
    return tf.reduce_sum(tf.constant(eigvec, tf.float32)[None] * weights[:, None, :], axis=2)


def subtract_mean(image, mean):
    """Subtract the training set's per-channel mean (AlexNet Section 2, VGG Section 2.1)."""
    return add_per_channel(image, -tf.constant(mean, tf.float32))


def add_per_channel(image, values):
    """`image + values` for an [H, W, 3] image and 3 values.

    Broadcasting over a last axis of 3 is slow on CPU; as [H, W*3] plus the values tiled W
    times it is several times faster (figures in benchmarks/RESULTS.md).
    """
    shape = tf.shape(image)
    flat = tf.reshape(image, [shape[0], shape[1] * 3])
    return tf.reshape(flat + tf.tile(values, [shape[1]]), shape)


def add_per_image_channel(images, values):
    """`images + values[:, None, None, :]` for a batch [B, H, W, 3] and values [B, 3].

    Laid out as [B, H, W*3] plus the values tiled W times, like `add_per_channel`.
    """
    shape = tf.shape(images)
    flat = tf.reshape(images, [shape[0], shape[1], shape[2] * 3])
    return tf.reshape(flat + tf.tile(values, [1, shape[2]])[:, None, :], shape)


def center_crop(image, size):
    """The central `size` x `size` patch."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def ten_crop(image, size):
    """Four corner and centre crops and their reflections, stacked as [10, size, size, 3].

    AlexNet Section 4.1: "extracting five 224x224 patches (the four corner patches and the
    center patch) as well as their horizontal reflections". Order: top-left, top-right,
    bottom-left, bottom-right, centre, then the reflections of those five in that order.
    """
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    crops = [
        image[:size, :size],
        image[:size, w - size :],
        image[h - size :, :size],
        image[h - size :, w - size :],
        center_crop(image, size),
    ]
    crops = tf.stack(crops)
    return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


def dense_views(image):
    """The whole image and its reflection, [2, H, W, 3] (VGG Section 3.2, dense evaluation)."""
    return tf.stack([image, tf.reverse(image, axis=[1])])
