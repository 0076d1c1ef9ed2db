"""The optional parts of keras_alexnet, each an extra of the package, and the check for one.

    pip install 'keras_alexnet[server]'   # the HTTP server (scripts/serve.py)
    pip install 'keras_alexnet[int8]'     # int8 ONNX export (export_onnx --quantize int8)
    pip install 'keras_alexnet[plots]'    # training curves (curves.png, scripts/plot.py)
    pip install 'keras_alexnet[weights]'  # torchvision .safetensors weights (import_weights)
    pip install 'keras_alexnet[torch]'    # Keras's PyTorch backend (.pth files need no PyTorch)

`require("server")` raises `MissingExtraError` (an ImportError) in one line naming the
extra to install when one of its modules is missing; the commands print that line.
"""

import importlib.util

from keras_alexnet.errors import Error

# extra -> (what needs it, the modules it installs, as imported)
EXTRAS = {
    "server": ("the server", ("fastapi", "uvicorn", "python_multipart", "prometheus_client")),
    # onnxruntime's quant_pre_process (symbolic shape inference) imports it.
    "int8": ("int8 export", ("sympy",)),
    "plots": ("drawing curves (curves.png, plot)", ("matplotlib",)),
    "weights": ("reading .safetensors weights", ("safetensors",)),
    "torch": ("Keras's PyTorch backend", ("torch",)),
}


class MissingExtraError(Error, ImportError):
    """An optional part of keras_alexnet is used without its extra installed."""


def require(extra):
    """Raise MissingExtraError, naming the pip command, if a module of `extra` is missing."""
    what, modules = EXTRAS[extra]
    if not all(importlib.util.find_spec(m) is not None for m in modules):
        raise MissingExtraError(
            f"{what} needs the {extra!r} extra: pip install 'keras_alexnet[{extra}]'"
        )
