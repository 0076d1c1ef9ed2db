"""tf.data pipelines for training and evaluation under the papers' protocols."""

import tensorflow as tf

from keras_alexnet.data import transforms

PROTOCOLS = ("center", "ten_crop", "dense")
AUTOTUNE = tf.data.AUTOTUNE


def _element_seeds(seed, epoch):
    """A dataset of fresh shape-[2] seeds, one per element, fixed by (seed, epoch)."""
    if seed is None:
        return tf.data.Dataset.random().batch(2)
    return tf.data.Dataset.random(seed=seed * 100_003 + epoch).batch(2)


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
    cache=False,
    input_context=None,
):
    """Batches of augmented training crops: (float32 [B, S, S, 3] on 0-255, int32 [B]).

    AlexNet Section 4.1 / VGG Section 3.1: rescale the shorter side to `resize` (an int,
    or (lo, hi) for scale jittering with S drawn per image), take a random `image_size`
    crop, reflect it with probability 1/2, add PCA lighting noise drawn per image per
    presentation. Pixels stay on the 0-255 scale; the mean is subtracted in the model
    unless `subtract_mean`. `seed` and `epoch` fix the order and every random draw, so a
    resumed run sees the same data. With `input_context` the data is sharded per input
    pipeline and `batch_size` is the global batch.
    """
    if isinstance(resize, int):
        resize = (resize, resize)
    lo, hi = resize
    if image_size > lo:
        raise ValueError(f"image_size {image_size} is larger than the resize size {lo}")
    stats = source.stats
    order_seed = None if seed is None else seed * 100_003 + epoch
    ds = source.encoded("train", shuffle_seed=order_seed if seed is not None else 0)
    if seed is None:
        ds = ds.shuffle(4096)
    if input_context is not None:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    if cache:
        ds = ds.map(lambda c, y: (transforms.decode(c), y), num_parallel_calls=AUTOTUNE).cache()
        decode = False
    else:
        decode = True

    def augment(example, seeds):
        image, label = example
        if decode:
            image = transforms.decode(image)
        s = tf.random.experimental.stateless_split(tf.cast(seeds, tf.int64), 4)
        size = transforms.random_scale(lo, hi, s[0]) if hi > lo else lo
        image = transforms.resize_shorter(image, size)
        image = transforms.random_crop(image, image_size, s[1])
        if flip:
            image = transforms.random_flip(image, s[2])
        if pca_lighting:
            image = transforms.pca_lighting(image, stats.eigval, stats.eigvec, s[3])
        if subtract_mean:
            image = transforms.subtract_mean(image, stats.mean)
        return image, label

    ds = tf.data.Dataset.zip(ds, _element_seeds(seed, epoch))
    ds = ds.map(augment, num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


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
    """Evaluation views of `split` under a paper's protocol, with int32 labels.

    center: ([B, S, S, 3], [B]) the centre crop of the image rescaled to `resize`;
    ten_crop: ([B, 10, S, S, 3], [B]) AlexNet's four corners + centre and reflections;
    dense: ([2, Qh, Qw, 3], [1]) VGG's whole rescaled image and its reflection, one image
    per element (images differ in shape).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}. Received: protocol={protocol!r}")
    if protocol != "dense" and image_size > resize:
        raise ValueError(f"image_size {image_size} is larger than the resize size {resize}")
    mean = source.stats.mean

    def view(contents, label):
        image = transforms.resize_shorter(transforms.decode(contents), resize)
        if subtract_mean:
            image = transforms.subtract_mean(image, mean)
        if protocol == "center":
            return transforms.center_crop(image, image_size), label
        if protocol == "ten_crop":
            return transforms.ten_crop(image, image_size), label
        return transforms.dense_views(image), tf.reshape(label, [1])

    ds = source.encoded(split).map(view, num_parallel_calls=AUTOTUNE)
    if protocol != "dense":
        ds = ds.batch(batch_size)
    return ds.prefetch(AUTOTUNE)
