import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Before any test module imports TensorFlow: keras_alexnet's settings (oneDNN on) must be
# in place at TensorFlow's first import, as they are in the commands.
import keras_alexnet  # noqa: E402, F401
