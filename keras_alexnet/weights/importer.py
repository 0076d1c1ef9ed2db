"""Published weights into our models: the file's format, its reader, the fold, the run directory.

A reader is a function ``read_<format>(path, spec) -> (weights, preset)``: `spec` is the
target's `ModelSpec`; `weights` maps our layer names (``block1_conv1`` ... ``predictions``;
``conv1`` ... ``fc8``) to ``[kernel, bias]`` NumPy arrays in our layout: convolution
kernels (kh, kw, in / groups, out), dense kernels (in, out) with fc6's rows in (h, w, c)
order; the first layer's input channels still in the source's order (`preset.bgr`: the
importer reverses them). `preset` is the source's `Preset`. Each format is a row of
FORMATS; its reader is imported only when a file of that format is read.
"""

import dataclasses
import math
from pathlib import Path

import numpy as np

from keras_alexnet import extras, fileio
from keras_alexnet._lazy import resolve
from keras_alexnet.artifacts import KERAS_BEST
from keras_alexnet.errors import Error, field
from keras_alexnet.metadata import Metadata
from keras_alexnet.registry import ALIASES, IMAGENET_CLASSES, MODELS, recorded_name
from keras_alexnet.rundir import RunDirectory
from keras_alexnet.weights import hub

CLASS_NAMES_FILE = Path(__file__).resolve().parent.parent / "data" / "imagenet_classes.txt"
IMAGENET = "imagenet2012"  # what the published weights were trained on (TFDS's name)


class WeightsError(Error, ValueError):
    """A weight file that cannot be read, or does not fit the model it is imported into."""


@dataclasses.dataclass(frozen=True)
class Format:
    """A weight file format: its file name endings, its reader, the families it reads."""

    name: str
    suffixes: tuple[str, ...]
    reader: str  # "module:function", imported on first use
    families: tuple[str, ...]  # registry family names the files hold
    holds: str  # what such files are, for the refusal of a model of another family
    extra: str | None = None  # keras_alexnet.extras name, checked before the reader loads


TORCHVISION_HOLDS = (
    "torchvision's weights are its VGGs and its AlexNet, the one-weird-trick net (alexnet_tv),"
    " not the paper's"
)
FORMATS = [
    Format("keras_h5", (".h5", ".hdf5"), "keras_alexnet.weights.keras_h5:read_keras_h5",
           ("vgg",), "Keras Applications' .h5 weights are VGG16 / VGG19"),
    Format("torchvision", (".pth", ".pt"), "keras_alexnet.weights.torchvision:read_pth",
           ("vgg", "alexnet_tv"), TORCHVISION_HOLDS),
    Format("torchvision_safetensors", (".safetensors",),
           "keras_alexnet.weights.torchvision:read_safetensors", ("vgg", "alexnet_tv"),
           TORCHVISION_HOLDS, "weights"),
    Format("caffe", (".caffemodel",), "keras_alexnet.weights.caffe:read_caffemodel",
           ("alexnet",), "a .caffemodel is Caffe's bvlc_alexnet"),
    Format("onnx_zoo", (".onnx",), "keras_alexnet.weights.onnx_zoo:read_onnx_zoo",
           ("alexnet", "vgg"), "the ONNX model zoo's files are its AlexNet and VGGs"),
]  # fmt: skip


def detect_format(path):
    """Return the Format of a weight file from its name; WeightsError listing the known ones."""
    name = Path(path).name.lower()
    for fmt in FORMATS:
        if name.endswith(fmt.suffixes):
            return fmt
    known = ", ".join(s for fmt in FORMATS for s in fmt.suffixes)
    raise WeightsError(f"{path}: unknown weight file format; known endings: {known}")


def read(path, spec):
    """Read a weight file with its format's reader: (weights by layer name, Preset).

    `path` may name a publisher instead ("torchvision", "keras", "caffe", "imagenet"): its
    file for `spec`'s model, from the cache or downloaded (`keras_alexnet.weights.hub`).
    """
    path = Path(hub.resolve(path, spec.name))
    if not path.is_file():
        raise WeightsError(f"{path} is not a file")
    fmt = detect_format(path)
    check_family(fmt, spec)
    if fmt.extra is not None:
        extras.require(fmt.extra)
    return resolve(fmt.reader)(path, spec)


def check_family(fmt, spec):
    """Refuse in one line a model whose family `fmt`'s files do not hold, naming those that fit."""
    if spec.family in fmt.families:
        return

    fits = [n for n, s in MODELS.items() if s.family in fmt.families]
    fits += [a for a, n in ALIASES.items() if n in fits]
    raise WeightsError(
        f"{fmt.holds}, which import into {', '.join(fits)}. Received: model={spec.name!r}"
    )


def dense_from_chw(weight, channels, layer):
    """A (out, c * h * w) weight over a flattened (c, h, w) map as our (h * w * c, out) kernel."""
    out, inputs = weight.shape
    side = math.isqrt(inputs // channels)
    if side * side * channels != inputs:
        raise WeightsError(
            f"{layer} takes {inputs} inputs, not a square map of {channels} channels"
        )
    return weight.reshape(out, channels, side, side).transpose(2, 3, 1, 0).reshape(-1, out)


def vgg_args(first_filters):
    """A VGG's builder arguments: the width its block1_conv1's filter count implies."""
    from keras_alexnet.models.vgg import CONFIGS

    width = first_filters / CONFIGS["A"][0]  # every configuration's block1_conv1 at width 1
    return {} if width == 1 else {"width": width}


def file_classes(weights):
    """The number of outputs of the file's classifier (its last layer); None without one."""
    kernel = list(weights.values())[-1][0] if weights else None
    return kernel.shape[-1] if kernel is not None and np.ndim(kernel) == 2 else None


def read_class_names(path, classes):
    """One class name per line of `path` (blank lines ignored); `classes` of them, or an error."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise WeightsError(f"cannot read the class names {path}: {e}") from None
    names = tuple(line.strip() for line in lines if line.strip())
    if len(names) != classes:
        raise WeightsError(
            f"{path} has {len(names)} class names; the weights' classifier has {classes} "
            "outputs: give one name per output, one a line"
        )
    if len(set(names)) != len(names):
        raise WeightsError(f"{path} names a class twice: each of its {classes} lines must differ")
    return names


def imagenet_class_names():
    """The 1000 ILSVRC-2012 class names in WordNet-ID order (package data, see its NOTICE)."""
    lines = CLASS_NAMES_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(line.split("\t", 1)[1] for line in lines if line and not line.startswith("#"))


def weighted_layers(model):
    """The model's layers that hold weights, by name, in order."""
    return {layer.name: layer for layer in model.layers if layer.weights}


def _check_names(model, weights, head, spec):
    """Refuse weights that miss one of the model's layers or have layers it lacks."""
    ours = weighted_layers(model)
    missing = [name for name in ours if name not in weights and name != head]
    if missing:
        raise WeightsError(
            f"the file has no weights for {spec.name}'s {', '.join(missing)} "
            f"(it has {', '.join(weights)}): is it another model's file?"
        )
    extra = [name for name in weights if name not in ours]
    top = model.layers[-1].name == head
    if extra and top:
        raise WeightsError(
            f"the file has layers {spec.name} lacks: {', '.join(extra)}: "
            "is it another model's file?"
        )


def set_weights(model, weights, preset, spec):
    """Load `weights` into `model` by layer name, folding the source's BGR order into conv1.

    The last layer (the classifier) is left as initialised when its shape differs (another
    number of classes); every other mismatch is a WeightsError. Layers the file has and a
    headless model lacks (fc1, fc2, predictions) are skipped.
    """
    ours = weighted_layers(model)
    head = list(ours)[-1]
    _check_names(model, weights, head, spec)
    first = next(iter(ours))
    for name, layer in ours.items():
        if name not in weights:
            continue
        arrays = [np.asarray(a, np.float32) for a in weights[name]]
        if name == first and preset.bgr:
            arrays[0] = arrays[0][:, :, ::-1, :]  # BGR inputs -> RGB inputs
        expected = [tuple(w.shape) for w in layer.weights]
        got = [a.shape for a in arrays]
        if got != expected:
            if name == head and len(got) == len(expected):
                continue  # another number of classes: the head keeps its initialisation
            raise WeightsError(
                f"{spec.name}'s {name} has weights of shapes {expected}; the file's are {got}"
            )
        layer.set_weights(arrays)


def build(spec, weights, preset, **kwargs):
    """Build `spec`'s model with the preset's normalisation in-graph and load `weights`.

    `kwargs` go to `build_model` (include_top, classes, input_shape, pooling, ...); the
    input shape defaults to the preset's crop.
    """
    from keras_alexnet.models import build_model

    given = sorted(key for key in ("mean", "scale") if kwargs.get(key) is not None)
    if given:
        raise ValueError(
            f"weights come with their source's preprocessing; override it with the Preset, "
            f"not {' and '.join(given)}. Received: {', '.join(f'{k}={kwargs[k]!r}' for k in given)}"
        )
    if kwargs.get("input_shape") is None:
        kwargs["input_shape"] = (preset.input_size, preset.input_size, 3)
    kwargs = {**preset.model_args, **{k: v for k, v in kwargs.items() if k not in given}}
    model = build_model(spec.name, mean=preset.mean, scale=preset.scale, **kwargs)
    set_weights(model, weights, preset, spec)
    return model


def load(spec, path, **kwargs):
    """`build_model(name, weights=path, **kwargs)`: read the file, build, load, fold."""
    weights, preset = read(path, spec)
    if kwargs.get("classes") is None:  # the file's head, never a random one under its place
        kwargs["classes"] = file_classes(weights) or IMAGENET_CLASSES
    return build(spec, weights, preset, **kwargs)


def _class_names(classes, class_names):
    """The run's class names: from the file `class_names`, else ImageNet's, else "0" .. "N-1".

    ImageNet's go with 1000 outputs; a file fine-tuned on other classes does not hold their
    names, so they are numbered unless given.
    """
    if class_names is not None:
        return read_class_names(class_names, classes)
    names = imagenet_class_names()
    return names if classes == len(names) else tuple(str(i) for i in range(classes))


def _metadata(model, spec, preset, names):
    """The run directory's Metadata: names, the preset's sizes, normalisation and model_args."""
    # the family's options as built (their defaults unless the weights need others)
    args = {**spec.family_spec.defaults(), **preset.model_args}
    return Metadata(
        model=recorded_name(model),
        class_names=names,
        input_size=preset.input_size,
        resize=preset.resize,
        mean=preset.mean,
        scale=preset.scale,
        protocol=preset.protocol,
        data=IMAGENET,
        model_args=args or None,
    )


def import_weights(source_path, model, output, argv=None, class_names=None, **overrides):
    """Import a published weight file into `model` and write a run directory at `output`.

    The model keeps the file's classifier and its number of classes, named by the file
    `class_names` (one a line) if given, else ImageNet's names for 1000, else "0" .. "N-1".
    `overrides` replace the source's Preset fields (bgr, mean, std, input_size, resize,
    protocol). The run directory holds best.keras, metadata.json and command.json, written
    atomically; an output that exists and is not empty is refused. Returns `output`.
    """
    from keras_alexnet.models import get_spec

    spec = get_spec(model)
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise WeightsError(
            f"{output} exists and is not an empty directory: choose another {field('output')}"
        )
    fileio.check_writable(output / KERAS_BEST)
    source_path = hub.resolve(source_path, spec.name)
    weights, preset = read(source_path, spec)
    classes = file_classes(weights)
    if classes is None:
        raise WeightsError(
            f"{source_path} has no classifier (no {spec.name} top layers): a run directory "
            "needs one; fine-tune from the file with train --weights instead"
        )
    names = _class_names(classes, class_names)
    preset = preset.replace(**overrides)
    keras_model = build(spec, weights, preset, classes=classes)
    metadata = _metadata(model, spec, preset, names)
    run = RunDirectory(output)
    with fileio.atomic_path(run.best) as tmp:
        keras_model.save(tmp)
    run.start(
        metadata, argv, source=str(source_path), format=detect_format(source_path).name,
        class_names=None if class_names is None else str(class_names),
        preset=dataclasses.asdict(preset),
    )  # fmt: skip
    return output
