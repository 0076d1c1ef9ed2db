"""Serving with onnxruntime: the KServe v2 HTTP server and the image preprocessing it uses.

Nothing here imports TensorFlow or Keras, so the server starts fast and stays small.
"""

from keras_alexnet.serving.app import ServeConfig, create_app, serve
from keras_alexnet.serving.model import OnnxModel, top_k

__all__ = ["OnnxModel", "ServeConfig", "create_app", "serve", "top_k"]
