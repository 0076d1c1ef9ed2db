"""Serving with onnxruntime: the KServe v2 HTTP server.

Nothing here imports TensorFlow or Keras, so the server starts fast and stays small; it
decodes uploads with `keras_alexnet.images.decode` (Pillow), as `predict` does. The names
below load on first use, so `serving.config` loads no FastAPI.
"""

from keras_alexnet._lazy import lazy_exports

# exported name -> "module:attribute"
_EXPORTS = {
    "OnnxModel": "keras_alexnet.serving.model:OnnxModel",
    "ServeConfig": "keras_alexnet.serving.config:ServeConfig",
    "create_app": "keras_alexnet.serving.app:create_app",
    "serve": "keras_alexnet.serving.app:serve",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
