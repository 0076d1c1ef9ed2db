"""A TFDS mock whose examples are a test's dark/bright PNG tree, for subprocess scripts.

`tfds.testing.mock_data`'s own examples are random, so a loss cannot fall on them; this one
fills any builder's features with `root/{train,val}/{dark,bright}/*.png` (labels 0 and 1).
"""

from pathlib import Path

SPLITS = {"train": "train", "validation": "val"}
CLASSES = ("dark", "bright")


def mock_tfds_from_tree(root):
    """A `tfds.testing.mock_data` context serving the tree's PNGs as (image, label) examples."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    root = Path(root)

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        files = [(p.read_bytes(), label)
                 for label, name in enumerate(CLASSES)
                 for p in sorted((root / SPLITS[str(split)] / name).iterdir())]  # fmt: skip
        return tf.data.Dataset.from_tensor_slices({
            "image": [f for f, _ in files], "label": tf.constant([y for _, y in files], tf.int64),
        })  # fmt: skip

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)
