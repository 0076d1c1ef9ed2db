"""AlexNet and VGG as published, in Keras 3: models on every backend, training on TensorFlow.

The public API is reachable from here and loaded on first use, so `import keras_alexnet`
imports neither Keras nor TensorFlow::

    import keras_alexnet
    keras_alexnet.list_models()                        # the registry's model names
    model = keras_alexnet.build_model("vgg16", classes=10)
    runtime = keras_alexnet.load("runs/alexnet")       # a run, SavedModel or ONNX file
    results = keras_alexnet.evaluate("runs/alexnet", protocol="ten_crop")
    keras_alexnet.train(keras_alexnet.TrainConfig(model="vgg_a", data="/data/photos"))

Importing the package changes nothing global: the commands set their TensorFlow defaults
(the TensorFlow backend, oneDNN on) in `keras_alexnet.cli.prepare_process`. Keras itself
is imported only by the modules that need it (layers, models, ...), so the ONNX side
(serving, metadata, graph rewrites) starts without loading TensorFlow.
"""

from keras_alexnet._lazy import lazy_exports

__version__ = "0.1.0"

# Public name -> "module:attribute", imported when first used.
API = {
    "build_model": "keras_alexnet.api:build_model",
    "list_models": "keras_alexnet.registry:list_models",
    "get_spec": "keras_alexnet.registry:get_spec",
    "load": "keras_alexnet.runtime:load",
    "evaluate": "keras_alexnet.evaluation:evaluate",
    "train": "keras_alexnet.training:train",
    "TrainConfig": "keras_alexnet.train_config:TrainConfig",
    "Metadata": "keras_alexnet.metadata:Metadata",
}
__all__ = [*API, "__version__"]


__getattr__, __dir__ = lazy_exports(__name__, API)
