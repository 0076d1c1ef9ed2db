"""tf.data pipelines for training and evaluation under the papers' protocols."""

import numpy as np
import tensorflow as tf

from keras_alexnet import protocols
from keras_alexnet.data import transforms
from keras_alexnet.preprocess import EvalTransform

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
    scale_range = _scale_range(resize, image_size)
    shard = None
    if input_context is not None:
        shard = (input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    pipeline_id = 0 if shard is None else shard[1]
    order_seed = None if seed is None else _mix(seed, epoch, pipeline_id)
    ds = _training_records(source, shard, order_seed, shuffle_buffer, cache)
    element_seed = None if seed is None else _mix(seed, epoch, pipeline_id, 1)
    seeds = tf.data.Dataset.random(seed=element_seed, rerandomize_each_iteration=True).batch(2)
    augment = _augmentation(
        source.stats, scale_range, image_size, decode=not cache, flip=flip,
        pca_lighting=pca_lighting, subtract_mean=subtract_mean,
    )  # fmt: skip
    ds = tf.data.Dataset.zip(ds, seeds).map(augment, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)
    return ds.with_options(_options())


def _scale_range(resize, image_size):
    """The training scales (lo, hi) from an int or a pair; ValueError for impossible ones."""
    lo, hi = (int(v) for v in np.broadcast_to(resize, [2]))
    if not 0 < lo <= hi:
        raise ValueError(f"resize must be an int or (lo, hi) with 0 < lo <= hi. Received: {resize}")
    if image_size > lo:
        raise ValueError(f"image_size {image_size} is larger than the resize size {lo}")
    return lo, hi


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
    ds = source.encoded("train", shard=shard)
    ds = ds.map(lambda c, y: (transforms.decode(c), y), num_parallel_calls=AUTOTUNE).cache()
    return ds.shuffle(shuffle_buffer, seed=order_seed, reshuffle_each_iteration=True)


def _augmentation(stats, scale_range, image_size, *, decode, flip, pca_lighting, subtract_mean):
    """The per-image map of training: ((image, label), seeds) -> (augmented crop, label)."""
    lo, hi = scale_range

    def augment(example, seeds):
        image, label = example
        if decode:
            image = transforms.decode(image)
        s = tf.random.experimental.stateless_split(seeds, 4)
        size = transforms.random_scale(lo, hi, s[0]) if hi > lo else lo
        image = transforms.resize_shorter(image, size)
        top, left, mirror = transforms.random_crop_params(
            tf.shape(image)[:2], image_size, s[1], s[2]
        )
        image = transforms.crop(image, top, left, image_size)
        if flip:
            image = transforms.flip_if(image, mirror)
        if pca_lighting:
            image = transforms.pca_lighting(image, stats.eigval, stats.eigvec, s[3])
        if subtract_mean:
            image = transforms.subtract_mean(image, stats.mean)
        return image, label

    return augment


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
    transform = EvalTransform(resize=resize, crop=image_size)
    mean = source.stats.mean

    def centred(image):
        return transforms.subtract_mean(image, mean) if subtract_mean else image

    def view(contents, label):
        image = transforms.decode(contents)
        if views == "center":
            # The mean is per pixel: subtracting it after the crop gives the same values.
            return centred(transform.tensorflow(image)), label
        image = centred(transforms.resize_shorter(image, resize))
        if views == "ten_crop":
            return transforms.ten_crop(image, image_size), label
        return transforms.dense_views(image), tf.reshape(label, [1])

    ds = source.encoded(split).map(view, num_parallel_calls=AUTOTUNE)
    if views != "dense":
        ds = ds.batch(batch_size)
    return ds.prefetch(AUTOTUNE).with_options(_options())
