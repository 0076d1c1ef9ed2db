"""Serving with onnxruntime: the KServe v2 HTTP server and the image preprocessing it uses.

Nothing here imports TensorFlow or Keras, so the server starts fast and stays small. The
names below load on first use, so `keras_alexnet.serving.images` (used by `predict`) and
`serving.config` load no FastAPI.
"""

import importlib

# exported name -> the module that defines it
_EXPORTS = {
    "OnnxModel": "keras_alexnet.serving.model",
    "ServeConfig": "keras_alexnet.serving.config",
    "create_app": "keras_alexnet.serving.app",
    "serve": "keras_alexnet.serving.app",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    """Import an exported name's module when the name is first asked for (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
