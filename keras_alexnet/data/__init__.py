"""The input pipeline: sources (folders, TFDS, the demo set), statistics, transforms."""

from keras_alexnet.data.demo import DEMO_NAME, ensure_demo_set
from keras_alexnet.data.pipeline import eval_dataset, train_dataset
from keras_alexnet.data.sources import (
    Source,
    directory_source,
    load_source,
    source_stats,
    tfds_source,
)
from keras_alexnet.data.stats import IMAGENET_STATS, DatasetStats, compute_stats
from keras_alexnet.protocols import PROTOCOLS

__all__ = [
    "DEMO_NAME",
    "IMAGENET_STATS",
    "PROTOCOLS",
    "DatasetStats",
    "Source",
    "compute_stats",
    "directory_source",
    "ensure_demo_set",
    "eval_dataset",
    "load_source",
    "source_stats",
    "tfds_source",
    "train_dataset",
]
