"""AlexNet and VGG as published, in Keras 3 on the TensorFlow backend."""

import os

# The custom layers call tf.nn directly (grouped conv, LRN); pin the backend before Keras
# is first imported so a user's global setting cannot break them. Keras itself is imported
# only by the modules that need it (layers, models, ...), so the ONNX side (serving,
# metadata, graph rewrites) starts without loading TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
