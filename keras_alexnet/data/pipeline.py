"""tf.data pipelines for training and evaluation under the papers' protocols."""

import numpy as np
import tensorflow as tf

from keras_alexnet import protocols
from keras_alexnet.data import transforms
from keras_alexnet.images import crop_tf, decode_tf
from keras_alexnet.images.crop import EvalTransform

AUTOTUNE = tf.data.AUTOTUNE


def _mix(*values):
    """A 31-bit seed derived from several integers (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0] >> 1)


def _options():
    """One thread per image op: parallelism comes from the parallel map, not inside ops."""
    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1
    return options


def train_dataset(
    source,
    *,
    image_size,
    resize=256,
    batch_size,
    seed=None,
    epoch=0,
    pca_lighting=True,
    flip=True,
    subtract_mean=False,
    shuffle_buffer=10_000,
    cache=False,
    input_context=None,
):
    """Batches of augmented training crops: (float32 [B, S, S, 3] on 0-255, int32 [B]).

    AlexNet Section 4.1 / VGG Section 3.1: rescale the shorter side to `resize` (an int,
    or (lo, hi) for scale jittering with S drawn per image), take a random `image_size`
    crop, reflect it with probability 1/2, add PCA lighting noise drawn per image per
    presentation. Pixels stay on the 0-255 scale; the mean is subtracted in the model
    unless `subtract_mean`. One pass over the dataset is one epoch; every new pass is a
    new presentation (new order, crops, flips and lighting). With `seed` the passes are
    reproducible: pass k of a dataset built with (seed, epoch) is the same in every run.
    With `input_context` each input pipeline reads a disjoint shard, chosen before any
    shuffling (the pipelines together read every example once per pass), and `batch_size`
    (the global batch) becomes the per-replica batch. `shuffle_buffer` bounds the shuffle of
    TFDS records and of cached images; a folder's file list is shuffled whole.
    """
    scale_range = _scale_range(resize, image_size, source)
    shard = None
    if input_context is not None:
        shard = (input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    pipeline_id = 0 if shard is None else shard[1]
    order_seed = None if seed is None else _mix(seed, epoch, pipeline_id)
    ds = _training_records(source, shard, order_seed, shuffle_buffer, cache)
    element_seed = None if seed is None else _mix(seed, epoch, pipeline_id, 1)
    seeds = tf.data.Dataset.random(seed=element_seed, rerandomize_each_iteration=True).batch(2)
    # Per image: decode, rescale, crop, flip and the lighting draw; per batch: the cast and
    # the lighting and mean offsets, one vectorised op for the whole batch.
    augment = _augmentation(source, scale_range, image_size, decode=not cache, flip=flip)
    ds = tf.data.Dataset.zip(ds, seeds).map(augment, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    finish = _batch_finish(source.stats, pca_lighting=pca_lighting, subtract_mean=subtract_mean)
    ds = ds.map(finish, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
    return ds.with_options(_options())


def _scale_range(resize, image_size, source):
    """The training scales (lo, hi) from an int or a pair; ValueError for impossible ones."""
    lo, hi = (int(v) for v in np.broadcast_to(resize, [2]))
    if not 0 < lo <= hi:
        raise ValueError(f"resize must be an int or (lo, hi) with 0 < lo <= hi. Received: {resize}")
    if image_size > lo:
        raise ValueError(f"image_size {image_size} is larger than the resize size {lo}")
    _check_prepared_scale(source, hi)
    return lo, hi


def check_scales(source, *, image_size, resize):
    """ValueError for scales `train_dataset` and `eval_dataset` would refuse, without building."""
    _scale_range(resize, image_size, source)


def _check_prepared_scale(source, scale):
    """Refuse a scale above a prepared set's: it would up-sample images already down-sampled."""
    if source.layout is not None and scale > source.layout.size:
        raise ValueError(
            f"{source.name} was prepared at shorter side {source.layout.size}; scale {scale} needs "
            f"images prepared at {scale} or more (`keras-alexnet-prepare --size {scale}`)"
        )


def decoder(source):
    """The bytes-to-uint8-RGB decoder of a source's images (prepared ones are plain JPEG)."""
    return decode_tf.decode_prepared if source.kind == "prepared" else decode_tf.decode


def _training_records(source, shard, order_seed, shuffle_buffer, cache):
    """The shuffled training split: (decoded images when `cache`, else encoded bytes, label)."""
    if not cache:
        return source.encoded(
            "train",
            shuffle_seed=-1 if order_seed is None else order_seed,
            shuffle_buffer=shuffle_buffer,
            shard=shard,
        )
    # Cache decoded images before shuffling, so later passes are still reshuffled.
    decode = decoder(source)
    ds = source.encoded("train", shard=shard)
    ds = ds.map(lambda c, y: (decode(c), y), num_parallel_calls=AUTOTUNE).cache()
    return ds.shuffle(shuffle_buffer, seed=order_seed, reshuffle_each_iteration=True)


def _augmentation(source, scale_range, image_size, *, decode, flip):
    """The per-image map of training: ((image, label), seeds) -> (crop, lighting alpha, label).

    A prepared image already at the training scale is not decoded whole: its random crop is
    decoded directly from the JPEG (`decode_and_crop_jpeg`; the same pixels as decoding and
    cropping, since prepared JPEGs keep full-resolution chroma) and stays uint8.
    """
    lo, hi = scale_range
    if decode and source.layout is not None and lo == hi == source.layout.size:
        return _prepared_crop(image_size, source.layout, flip)
    decode_fn = decoder(source)

    def augment(example, seeds):
        image, label = example
        if decode:
            image = decode_fn(image)
        s = tf.random.experimental.stateless_split(seeds, 4)
        size = transforms.random_scale(lo, hi, s[0]) if hi > lo else lo
        image = crop_tf.resize_shorter(image, size)
        top, left, mirror = transforms.random_crop_params(
            tf.shape(image)[:2], image_size, s[1], s[2]
        )
        image = transforms.crop(image, top, left, image_size)
        if flip:
            image = transforms.flip_if(image, mirror)
        return image, transforms.lighting_alpha(s[3]), label

    return augment


def _prepared_crop(image_size, layout, flip):
    """The training map of prepared JPEGs at the training scale: crop while decoding.

    A square layout's images all have its size: their shape is not read from each header.
    """

    def augment(example, seeds):
        contents, label = example
        s = tf.random.experimental.stateless_split(seeds, 4)  # s[0]: the scale, fixed here
        if layout.square:
            shape = tf.constant([layout.size, layout.size])
        else:
            shape = tf.io.extract_jpeg_shape(contents)[:2]
        top, left, mirror = transforms.random_crop_params(shape, image_size, s[1], s[2])
        window = tf.stack([top, left, image_size, image_size])
        image = tf.io.decode_and_crop_jpeg(contents, window, channels=3)
        image.set_shape([image_size, image_size, 3])
        if flip:
            image = transforms.flip_if(image, mirror)
        return image, transforms.lighting_alpha(s[3]), label

    return augment


def _batch_finish(stats, *, pca_lighting, subtract_mean):
    """The per-batch map: (crops, alphas, labels) -> (float32 crops + offsets, labels).

    AlexNet Section 4.1's lighting offset eigvec @ (alpha * eigval) is drawn per image (the
    alphas come from the per-image map) and added here to the whole batch at once, with the
    mean when `subtract_mean`.
    """

    def finish(images, alphas, labels):
        images = tf.cast(images, tf.float32)
        offsets = tf.zeros_like(alphas)
        if pca_lighting:
            offsets = transforms.lighting_offsets(alphas, stats.eigval, stats.eigvec)
        if subtract_mean:
            offsets -= tf.constant(stats.mean, tf.float32)
        if pca_lighting or subtract_mean:
            images = transforms.add_per_image_channel(images, offsets)
        return images, labels

    return finish


def eval_dataset(
    source,
    *,
    protocol="center",
    image_size,
    resize=256,
    batch_size=32,
    split="val",
    subtract_mean=False,
):
    """Evaluation views of `split` at one scale `resize` under a protocol, with int32 labels.

    The views are `keras_alexnet.protocols.PROTOCOLS[protocol].views`: center, ([B, S, S, 3],
    [B]) the centre crop (`EvalTransform`) of the image rescaled to `resize`; ten_crop,
    ([B, 10, S, S, 3], [B]) AlexNet's four corners + centre and reflections; dense (also
    multi_scale's views at one Q), ([2, Qh, Qw, 3], [1]) VGG's whole rescaled image and its
    reflection, one image per element (images differ in shape).
    """
    views = protocols.get(protocol).views
    if views != "dense" and image_size > resize:
        raise ValueError(f"image_size {image_size} is larger than the resize size {resize}")
    _check_prepared_scale(source, resize)
    transform = EvalTransform(resize=resize, crop=image_size)
    mean = source.stats.mean
    decode = decoder(source)

    def centred(image):
        return transforms.subtract_mean(image, mean) if subtract_mean else image

    def view(contents, label):
        image = decode(contents)
        if views == "center":
            # The mean is per pixel: subtracting it after the crop gives the same values.
            return centred(transform.tensorflow(image)), label
        image = centred(crop_tf.resize_shorter(image, resize))
        if views == "ten_crop":
            return crop_tf.ten_crop(image, image_size), label
        return crop_tf.dense_views(image), tf.reshape(label, [1])

    ds = source.encoded(split).map(view, num_parallel_calls=AUTOTUNE)
    if views != "dense":
        ds = ds.batch(batch_size)
    return ds.prefetch(AUTOTUNE).with_options(_options())
