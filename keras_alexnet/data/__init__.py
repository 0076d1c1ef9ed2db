"""The input pipeline: sources (folders, TFDS, the demo set), statistics, transforms.

The names below are imported on first use, so that a light module of the package
(`keras_alexnet.data.layout`) loads without TensorFlow.
"""

from keras_alexnet._lazy import lazy_exports

# Public name -> "module:attribute".
API = {
    "DEMO_NAME": "keras_alexnet.data.demo:DEMO_NAME",
    "ensure_demo_set": "keras_alexnet.data.demo:ensure_demo_set",
    "eval_dataset": "keras_alexnet.data.pipeline:eval_dataset",
    "train_dataset": "keras_alexnet.data.pipeline:train_dataset",
    "Source": "keras_alexnet.data.source:Source",
    "directory_source": "keras_alexnet.data.folders:directory_source",
    "load_source": "keras_alexnet.data.sources:load_source",
    "source_stats": "keras_alexnet.data.sources:source_stats",
    "tfds_source": "keras_alexnet.data.tfds_sets:tfds_source",
    "IMAGENET_STATS": "keras_alexnet.data.stats:IMAGENET_STATS",
    "DatasetStats": "keras_alexnet.data.stats:DatasetStats",
    "data_kind": "keras_alexnet.data.kinds:data_kind",
    "compute_stats": "keras_alexnet.data.stats:compute_stats",
}
__all__ = sorted(API)


__getattr__, __dir__ = lazy_exports(__name__, API)
