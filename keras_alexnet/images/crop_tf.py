"""The evaluation crops in TensorFlow ops, for `Dataset.map`: shorter side, centre, ten, dense.

Images are float32 RGB on the 0-255 scale. `crop.EvalTransform.tensorflow` is the centre
crop from Metadata; `crop.center_crop_resized` computes the same in NumPy for predict and
the server. Training's scale jittering rescales with `resize_shorter` too.
"""

import tensorflow as tf


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
