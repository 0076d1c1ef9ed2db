"""The `Source` type: what every data source hands the pipeline, whatever it reads.

A `Source` is one `tf.data.Dataset` of (encoded image bytes, int32 label) per split, plus
the class names and the training set's statistics. `keras_alexnet.data.sources.load_source`
opens one from what `--data` names.
"""

import dataclasses

from keras_alexnet.data.stats import DatasetStats


@dataclasses.dataclass
class Source:
    """A dataset's splits as (encoded bytes, label) datasets, its classes and statistics.

    `skipped` lists (path, reason) for every file left out because it cannot be used;
    `kind` is "directory" (folders and the demo set) or "tfds".
    """

    name: str
    class_names: list[str]
    stats: DatasetStats
    sizes: dict[str, int]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    kind: str = "directory"  # or "tfds", "prepared"
    layout: object = None  # a prepared set's `layout.Layout` (how its images were rescaled)
    _factories: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def num_train(self):
        """Number of training images."""
        return self.sizes.get("train", 0)

    @property
    def num_val(self):
        """Number of validation images."""
        return self.sizes.get("val", 0)

    def encoded(self, split, *, shuffle_seed=None, shuffle_buffer=10_000, shard=None):
        """Return a Dataset of (encoded image bytes, int32 label) for `split`.

        `shard=(num_shards, index)` keeps a disjoint 1/num_shards of the examples, chosen
        before any shuffling, so the shards together hold every example once: every
        num_shards-th file (folders) or an even subsplit (TFDS).
        With `shuffle_seed` (an int, or -1 for an unseeded shuffle) the order is shuffled,
        anew on every iteration: a whole file list at once, TFDS records through their
        shuffled files and a `shuffle_buffer`-long buffer.
        """
        if split not in self._factories:
            raise ValueError(
                f"{self.name} has no split {split!r}; it has {sorted(self._factories)}"
            )
        if not self.sizes.get(split):
            raise ValueError(f"{self.name}: split {split!r} is empty")
        return self._factories[split](shuffle_seed, shuffle_buffer, shard)


def shuffle_each_pass(ds, buffer, seed):
    """Shuffle anew each iteration; seed -1 means unseeded."""
    seed = None if seed == -1 else seed
    return ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
