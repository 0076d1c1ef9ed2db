"""AlexNet and VGG as published, in Keras 3 on the TensorFlow backend."""

import os

# The custom layers call tf.nn directly (grouped conv, LRN); pin the backend
# before Keras is first imported so a user's global setting cannot break them.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "keras_alexnet needs Keras on the TensorFlow backend; "
        f"Received: KERAS_BACKEND={keras.backend.backend()!r}. Unset it or set it to 'tensorflow'."
    )

__version__ = "0.1.0"
