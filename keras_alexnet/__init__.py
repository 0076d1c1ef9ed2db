"""AlexNet and VGG as published, in Keras 3 on the TensorFlow backend."""

import os

# The custom layers call tf.nn directly (grouped conv, LRN); pin the backend before Keras
# is first imported so a user's global setting cannot break them. Keras itself is imported
# only by the modules that need it (layers, models, ...), so the ONNX side (serving,
# metadata, graph rewrites) starts without loading TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow turns oneDNN on by default only on CPUs with AVX-512 VNNI/BF16 or AMX. On an
# AVX2 CPU its Eigen kernels are much slower for training (benchmarks/RESULTS.md: Eigen's
# transposed MatMul of fc6's gradient ran at 26 GFLOP/s, oneDNN's at 117; the AlexNet step
# 1.4x faster), and oneDNN differentiates grouped convolutions natively. Must be set
# before TensorFlow is first imported; TF_ENABLE_ONEDNN_OPTS=0 still turns it off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from keras_alexnet import _quiet  # noqa: E402

_quiet.install()

__version__ = "0.1.0"
