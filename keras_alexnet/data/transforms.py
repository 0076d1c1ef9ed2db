"""The papers' training augmentation and mean subtraction as TensorFlow ops for `Dataset.map`.

Images are float32 RGB on the 0-255 scale. Random transforms are stateless and take an
explicit `seed` (a shape-[2] int tensor), so a pipeline is reproducible from one seed.
Decoding and the evaluation crops, shared with predict and the server, live in
`keras_alexnet.images` (`decode_tf`, `crop_tf`).
"""

import tensorflow as tf

PCA_STD = 0.1  # AlexNet Section 4.1: alpha_i ~ N(0, 0.1)


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
