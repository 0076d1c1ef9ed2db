"""The models' builders, by name: `build_model("alexnet")`, `build_model("vgg16")`.

Which models exist, and their recipes, is the registry's (`keras_alexnet.registry`);
building one with published or trained weights is `keras_alexnet.build_model`'s.
"""

from keras_alexnet.models.alexnet import CAFFE_LRN, PAPER_LRN, alexnet
from keras_alexnet.models.vgg import CONFIGS, vgg
from keras_alexnet.registry import (
    ALIASES,
    IMAGENET_CLASSES,
    MODEL_NAMES,
    MODELS,
    ModelSpec,
    all_options,
    get_spec,
)


def build_model(
    name,
    *,
    classes=None,
    input_shape=None,
    include_top=True,
    classifier_activation="softmax",
    pooling=None,
    **kwargs,
):
    """Build a model by name as a `keras.Model` (see its family's builder for kwargs).

    `classes` defaults to ImageNet's 1000. A family's architecture option (AlexNet's
    `towers`, `use_lrn`, `pool`) is checked against the family: another family's is refused
    in one line. For published or trained weights, `keras_alexnet.build_model(weights=...)`.
    """
    if "weights" in kwargs:
        raise TypeError(
            "keras_alexnet.models.build_model builds architectures; for weights, "
            "keras_alexnet.build_model(name, weights=...)"
        )
    spec = get_spec(name)
    family = spec.family_spec
    options = {o.name for o in all_options()}
    given = {k: kwargs.pop(k) for k in list(kwargs) if k in options}
    if given:
        family.resolve(given)  # ValueError naming the flag for another family's option
    return spec.builder(
        classes=IMAGENET_CLASSES if classes is None else classes,
        input_shape=input_shape,
        include_top=include_top,
        classifier_activation=classifier_activation,
        pooling=pooling,
        **given,
        **kwargs,
    )


__all__ = [
    "ALIASES",
    "CAFFE_LRN",
    "CONFIGS",
    "MODELS",
    "MODEL_NAMES",
    "PAPER_LRN",
    "ModelSpec",
    "alexnet",
    "build_model",
    "get_spec",
    "vgg",
]
