"""Serving with onnxruntime: the KServe v2 HTTP server and the image preprocessing it uses.

Nothing here imports TensorFlow or Keras, so the server starts fast and stays small. The
names below load on first use, so `keras_alexnet.serving.images` (used by `predict`) and
`serving.config` load no FastAPI.
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
