"""AlexNet and VGG as published, in Keras 3: models on every backend, training on TensorFlow.

Importing the package changes nothing global: the commands set their TensorFlow defaults
(the TensorFlow backend, oneDNN on) in `keras_alexnet.cli.prepare_process`. Keras itself
is imported only by the modules that need it (layers, models, ...), so the ONNX side
(serving, metadata, graph rewrites) starts without loading TensorFlow.
"""

__version__ = "0.1.0"
