"""Which Keras backend this process runs, and the one-line refusal of TensorFlow-only parts.

The models, the `.keras` runtime, evaluation of in-memory images and `model.fit` run on
every Keras 3 backend (TensorFlow, JAX, PyTorch). The tf.distribute training loop, the
tf.data pipeline and SavedModel / ONNX export are TensorFlow code: they call
`require_tensorflow`, which raises `BackendError` in one line on another backend. Importing
this module imports Keras only when asked which backend runs, never TensorFlow.
"""

from keras_alexnet.errors import Error

TENSORFLOW = "tensorflow"


class BackendError(Error, RuntimeError):
    """A TensorFlow-only part of keras_alexnet was called on another Keras backend."""


def name():
    """The Keras backend of this process ("tensorflow", "jax" or "torch")."""
    import keras

    return keras.backend.backend()


def is_tensorflow():
    """Whether Keras runs on TensorFlow in this process."""
    return name() == TENSORFLOW


def require_tensorflow(what, instead=None):
    """Raise BackendError naming `what`, the backend to set and `instead`, unless on TF."""
    backend = name()
    if backend != TENSORFLOW:
        other = f", or use {instead}" if instead else ""
        raise BackendError(
            f"{what} needs the TensorFlow backend; this process runs Keras on "
            f"{backend!r}: set KERAS_BACKEND=tensorflow{other}"
        )
