"""The seven published models, by name: `build_model("alexnet")`, `build_model("vgg16")`."""

import dataclasses
import functools

from keras_alexnet.models import alexnet as _alexnet
from keras_alexnet.models import vgg as _vgg
from keras_alexnet.models.alexnet import CAFFE_LRN, PAPER_LRN, alexnet
from keras_alexnet.models.common import IMAGENET_CLASSES
from keras_alexnet.models.vgg import CONFIGS, vgg


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What the data, training and evaluation stages need to know about a model."""

    name: str
    family: str  # "alexnet" or "vgg"
    input_size: int  # the training crop
    resize: int  # shorter side before cropping at test time (AlexNet 256, VGG Q=S=256)
    batch_size: int  # the paper's batch size
    epochs: int  # the paper's schedule length
    protocol: str  # the paper's test protocol: AlexNet ten_crop, VGG dense
    builder: object = dataclasses.field(repr=False, compare=False)
    # Training's default init. VGG: Glorot, which VGG Section 3.1 notes works without
    # pre-training; its N(0, 1e-2) init overflows the deeper nets' logits in float32.
    train_init: str = "paper"


def _vgg_spec(name, config):
    """Spec of a VGG configuration with the paper's recipe (Section 3.1)."""
    builder = functools.partial(vgg, config, name=name)
    return ModelSpec(
        name=name, family="vgg", input_size=_vgg.INPUT_SIZE, resize=256, batch_size=256,
        epochs=74, protocol="dense", builder=builder, train_init="glorot",
    )  # fmt: skip


MODELS = {
    "alexnet": ModelSpec(
        name="alexnet",
        family="alexnet",
        input_size=_alexnet.INPUT_SIZE,
        resize=256,
        batch_size=128,
        epochs=90,
        protocol="ten_crop",
        builder=alexnet,
    ),  # fmt: skip
    "vgg_a": _vgg_spec("vgg_a", "A"),
    "vgg_a_lrn": _vgg_spec("vgg_a_lrn", "A-LRN"),
    "vgg_b": _vgg_spec("vgg_b", "B"),
    "vgg_c": _vgg_spec("vgg_c", "C"),
    "vgg_d": _vgg_spec("vgg_d", "D"),
    "vgg_e": _vgg_spec("vgg_e", "E"),
}
ALIASES = {"vgg11": "vgg_a", "vgg13": "vgg_b", "vgg16": "vgg_d", "vgg19": "vgg_e"}
MODEL_NAMES = tuple(MODELS)


def get_spec(name):
    """Return the ModelSpec of a model name or alias; ValueError listing valid names."""
    key = str(name).lower()
    key = ALIASES.get(key, key)
    if key not in MODELS:
        valid = ", ".join([*MODELS, *ALIASES])
        raise ValueError(f"Unknown model {name!r}. Valid names: {valid}")
    return MODELS[key]


def build_model(
    name,
    *,
    classes=None,
    input_shape=None,
    include_top=True,
    classifier_activation="softmax",
    pooling=None,
    weights=None,
    **kwargs,
):
    """Build a published model by name as a `keras.Model` (see `alexnet` and `vgg` for kwargs).

    `weights`: None (initialised as `init` says) or the path of a published weight file
    (Keras Applications' .h5, torchvision's .pth / .safetensors, and the formats of
    `keras_alexnet.weights.FORMATS`), loaded with the source's preprocessing folded into the
    model, which still takes RGB pixels on the 0-255 scale. `classes` defaults to the file's
    classifier's outputs (1000 without weights); another `classes` keeps the classifier's
    initialisation; with `include_top=False` the FC layers are left out.
    """
    spec = get_spec(name)
    if weights is not None:
        from keras_alexnet.weights.importer import load

        return load(
            spec, weights, classes=classes, input_shape=input_shape, include_top=include_top,
            classifier_activation=classifier_activation, pooling=pooling, **kwargs,
        )  # fmt: skip
    if spec.family != "alexnet" and "towers" in kwargs:
        towers = kwargs.pop("towers")
        if towers != 1:
            raise ValueError(
                f"towers applies to AlexNet only; {spec.name} is one tower. Received: "
                f"towers={towers}"
            )
    return spec.builder(
        classes=IMAGENET_CLASSES if classes is None else classes,
        input_shape=input_shape,
        include_top=include_top,
        classifier_activation=classifier_activation,
        pooling=pooling,
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
