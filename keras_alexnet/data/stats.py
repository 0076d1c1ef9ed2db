"""Dataset statistics the papers' preprocessing needs: the RGB mean and the PCA of RGB."""

import dataclasses

import numpy as np

from keras_alexnet import fileio


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    """Per-channel RGB mean and the eigen-decomposition of the 3x3 RGB covariance.

    `mean` is on the 0-255 scale. `eigval` follows the convention of the widely used
    ImageNet values (55.46, 4.794, 1.148): eigenvalues of the covariance of pixels scaled
    to [0, 1], times 255, so that `eigvec @ (alpha * eigval)` is a colour offset on the
    0-255 scale (a few units for alpha ~ N(0, 0.1)). `eigvec` holds the eigenvectors as
    columns (eigvec[i][j] is component i of eigenvector j), `eigval` sorted decreasing.
    """

    mean: tuple[float, float, float]
    eigval: tuple[float, float, float]
    eigvec: tuple[tuple[float, float, float], ...]

    def to_json(self):
        """Return a JSON-serialisable dict."""
        return {
            "mean": list(self.mean),
            "eigval": list(self.eigval),
            "eigvec": [list(r) for r in self.eigvec],
        }

    @classmethod
    def from_json(cls, obj):
        """Build from a dict written by `to_json`."""
        return cls(
            mean=tuple(float(v) for v in obj["mean"]),
            eigval=tuple(float(v) for v in obj["eigval"]),
            eigvec=tuple(tuple(float(v) for v in row) for row in obj["eigvec"]),
        )

    def save(self, path):
        """Write as JSON atomically."""
        fileio.write_json(path, self.to_json())

    @classmethod
    def load(cls, path):
        """Read a JSON file written by `save`."""
        return cls.from_json(fileio.read_json(path))


# AlexNet's ImageNet statistics as widely used (0-255; PCA as in fb.resnet.torch's Lighting).
IMAGENET_STATS = DatasetStats(
    mean=(123.68, 116.779, 103.939),
    eigval=(55.46, 4.794, 1.148),
    eigvec=(
        (-0.5675, 0.7192, 0.4009),
        (-0.5808, -0.0045, -0.8140),
        (-0.5836, -0.6948, 0.4203),
    ),
)


class StatsAccumulator:
    """Streaming first and second moments of RGB pixels, in float64."""

    def __init__(self):
        self.count = 0
        self.total = np.zeros(3)
        self.outer = np.zeros((3, 3))

    def add(self, image):
        """Add the pixels of one (H, W, 3) image (any numeric dtype, 0-255 scale)."""
        pixels = np.asarray(image, dtype=np.float64).reshape(-1, 3)
        self.count += len(pixels)
        self.total += pixels.sum(axis=0)
        self.outer += pixels.T @ pixels

    def result(self):
        """Return the DatasetStats of everything added so far."""
        if not self.count:
            raise ValueError("cannot compute statistics of zero pixels")
        mean = self.total / self.count
        cov = self.outer / self.count - np.outer(mean, mean)
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1]
        # Covariance on the 0-255 scale is 255^2 times that on [0, 1]; see DatasetStats.
        eigval, eigvec = np.maximum(eigval[order], 0.0) / 255.0, eigvec[:, order]
        return DatasetStats(
            mean=tuple(float(v) for v in mean),
            eigval=tuple(float(v) for v in eigval),
            eigvec=tuple(tuple(float(v) for v in row) for row in eigvec),
        )


def compute_stats(images):
    """Mean RGB and PCA of the 3x3 RGB covariance of a set of training images.

    AlexNet Section 4.1: "perform PCA on the set of RGB pixel values throughout the
    ImageNet training set". `images` is a `Source` (its training split is decoded), a
    `tf.data.Dataset` of (encoded image bytes, label), or an iterable of (H, W, 3)
    images (NumPy arrays or eager tensors, 0-255 scale). Sums are kept in float64.
    """
    if hasattr(images, "encoded"):  # a Source
        images = images.encoded("train")
    import tensorflow as tf

    if isinstance(images, tf.data.Dataset):
        return _stats_of_dataset(images)
    acc = StatsAccumulator()
    for image in images:
        acc.add(image)
    return acc.result()


def pixel_moments(image):
    """An [H, W, 3] image's (pixel count, RGB sum [3], sum of outer products [3, 3]), float64."""
    import tensorflow as tf

    x = tf.reshape(tf.cast(image, tf.float64), [-1, 3])
    return tf.cast(tf.shape(x)[0], tf.float64), tf.reduce_sum(x, 0), tf.matmul(x, x, True)


def _stats_of_dataset(dataset):
    """Moments of every decoded image of a (bytes, label) dataset, summed in float64."""
    import tensorflow as tf

    from keras_alexnet.images import decode_tf

    def moments(contents, _):
        return pixel_moments(decode_tf.decode(contents))

    acc = StatsAccumulator()
    for count, total, outer in dataset.map(moments, num_parallel_calls=tf.data.AUTOTUNE):
        acc.count += int(count)
        acc.total += total.numpy()
        acc.outer += outer.numpy()
    return acc.result()


GREY_SHARE = 0.999  # data whose first RGB principal component carries more is grey


def colour_in_data(stats):
    """Whether training data with DatasetStats `stats` has colour conv1 could learn.

    Grey data (R = G = B at every pixel) has one RGB principal component: when the first
    eigenvalue carries more than GREY_SHARE of the variance, {"colour": False, ...}.
    """
    eigval = np.maximum(np.asarray(stats.eigval, dtype=np.float64), 0.0)
    total = eigval.sum()
    share = float(eigval.max() / total) if total > 0 else 1.0
    colour = share <= GREY_SHARE
    reason = f"the first RGB principal component carries {share:.4%} of the variance"
    if not colour:
        reason += ": the data is grey, conv1 cannot learn colour from it"
    return {"colour": colour, "first_component_share": share, "reason": reason}
