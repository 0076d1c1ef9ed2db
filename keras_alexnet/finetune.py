"""Fine-tuning: where a run's first weights come from, and what it keeps of them.

`--weights` (a published file, a publisher's name or a run of ours: `read_start`, a
`Start`), `--init-from` (VGG Section 3.1: net A's first four convs and its FC layers start
a deeper net), `--freeze-up-to`, and the architecture the starting weights were built
with, which the run must keep (`architecture`).
"""

import dataclasses
from pathlib import Path

import numpy as np

from keras_alexnet import runtime
from keras_alexnet.artifacts import METADATA_FILENAME
from keras_alexnet.errors import field
from keras_alexnet.metadata import Metadata
from keras_alexnet.registry import get_spec, same_model
from keras_alexnet.train_config import TrainingError
from keras_alexnet.weights.hub import HubError
from keras_alexnet.weights.importer import WeightsError, read, set_weights, weighted_layers
from keras_alexnet.weights.presets import Preset

# The paper's recipe for B-E (VGG Section 3.1): these layers of a trained net A start the
# deeper net ("the first four convolutional layers and the last three fully-connected
# layers"); the rest is initialised as usual.
NET_A_CONVS = 4
NET_A_FC = ("fc1", "fc2", "predictions")


@dataclasses.dataclass(frozen=True)
class Start:
    """Weights to start from, by layer name, and the Preset they expect (their input)."""

    weights: dict
    preset: Preset


def read_start(path, spec):
    """The Start to fine-tune from: a published file (`read`), or a run directory of ours.

    A run directory or `.keras` file gives its weights by layer name and a Preset made from
    its metadata (its mean and scale, sizes and protocol).
    """
    try:
        kind = runtime.resolve(path)[0]
    except runtime.ModelPathError:
        kind = None
    if kind != "keras":
        return Start(*read(path, spec))
    model, metadata = runtime.load_keras_model(path)
    if not same_model(metadata.model, spec.name):
        raise WeightsError(f"{path} holds a {metadata.model}, not a {spec.name}")
    scale = np.broadcast_to(np.asarray(metadata.scale, np.float64), [3])
    preset = Preset(
        name=f"run {path}", bgr=False, mean=tuple(metadata.mean),
        std=tuple(float(1 / s) for s in scale), input_size=metadata.input_size,
        resize=metadata.resize, protocol=metadata.protocol, documented_at=str(path),
        model_args=metadata.architecture(),
    )  # fmt: skip
    weights = {name: layer.get_weights() for name, layer in weighted_layers(model).items()}
    return Start(weights, preset)


def starting_point(config, spec):
    """`--weights`: the Start to fine-tune from; None to start afresh."""
    if not config.weights:
        return None

    try:
        return read_start(config.weights, spec)
    except (WeightsError, HubError) as e:
        raise TrainingError(f"`weights` {config.weights}: {e}") from None


def _recorded_architecture(config, start):
    """The builder arguments the starting weights were built with, and where they come from.

    `--weights` (a file's needs, a run's metadata), `--init-from`'s run, or, resuming, this
    run's own metadata.
    """
    if start is not None:
        return dict(start.preset.model_args), f"`weights` {config.weights}"
    if config.init_from is None:
        own = Path(config.output) / METADATA_FILENAME
        if not own.is_file():
            return {}, None
        try:
            return Metadata.load(own).architecture(), f"the run {config.output}"
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TrainingError(f"{own} is not a valid {METADATA_FILENAME}: {e}") from None
    try:
        metadata = runtime.load_metadata(config.init_from)
    except runtime.ModelPathError as e:
        raise TrainingError(f"`init_from`: {e}") from None
    return metadata.architecture(), f"`init_from` {config.init_from}"


def architecture(config, spec, start):
    """build_model's architecture arguments: the flags', and those the weights were built with.

    Weights are built as they were trained (Caffe's LRN constants across all maps, a run's
    towers or width): a recorded setting replaces a flag left at the paper's default, and a
    flag that asks for something else is refused in one line.
    """
    ours = {"width": config.width, **config.model_args}
    published = {"width": 1.0, **spec.family_spec.defaults()}
    theirs, source = _recorded_architecture(config, start)
    for key, value in theirs.items():
        if key in ours and ours[key] != value and ours[key] != published[key]:
            raise TrainingError(
                f"{_flag(spec, key, ours[key])} does not fit {source}, built with {key} "
                f"{value}: leave the flag out"
            )
    return {**ours, **theirs}


def _flag(spec, key, value):
    """How an architecture setting reads on the command line (--no-lrn has no value)."""
    option = spec.family_spec.option(key)
    return option.show(value) if option else f"{field(key)} {value}"


def load_start(model, start, config, log):
    """Set `--weights` into the model; a head of another class count keeps its init."""
    weights, preset = start.weights, start.preset
    try:
        set_weights(model, weights, preset, get_spec(config.model))
    except WeightsError as e:
        raise TrainingError(f"`weights` {config.weights}: {e}") from None
    built = "".join(f", {k} {v}" for k, v in preset.model_args.items())
    log(
        f"Started from {config.weights} ({preset.name}): mean {preset.mean}, scale "
        f"{preset.scale}{built}"
    )


def freeze_up_to(model, name):
    """Make every layer up to and including `name` untrainable (fine-tuning the rest)."""
    names = [layer.name for layer in model.layers]
    if name not in names:
        weighted = ", ".join(layer.name for layer in model.layers if layer.weights)
        raise TrainingError(f"`freeze_up_to`: {model.name} has no layer {name!r} ({weighted})")
    for layer in model.layers[: names.index(name) + 1]:
        layer.trainable = False
    return names[: names.index(name) + 1]


def init_from_net_a(model, path, log=print):
    """Copy a trained VGG A's first four conv layers and its three FC layers into `model`.

    VGG Section 3.1: the deeper nets B-E started from net A's "first four convolutional
    layers and the last three fully-connected layers"; the rest keeps its own init. Layers
    match by name (A's block1_conv1, block2_conv1, block3_conv1, block3_conv2 exist with the
    same shapes in every configuration). Returns the names of the layers copied.
    """
    import keras

    try:
        source, metadata = runtime.load_keras_model(path)
    except runtime.ModelPathError as e:
        raise TrainingError(f"`init_from`: {e}") from None
    if get_spec(metadata.model).name not in ("vgg_a", "vgg_a_lrn"):
        raise TrainingError(f"`init_from` needs a trained VGG A; {path} is {metadata.model}")
    convs = [layer.name for layer in source.layers if isinstance(layer, keras.layers.Conv2D)]
    names = [*convs[:NET_A_CONVS], *NET_A_FC]
    for name in names:
        theirs = source.get_layer(name).get_weights()
        try:
            ours = model.get_layer(name)
        except ValueError:
            raise TrainingError(f"`init_from`: {model.name} has no layer {name}") from None
        shapes = [w.shape for w in ours.get_weights()]
        if [w.shape for w in theirs] != shapes:
            raise TrainingError(
                f"`init_from`: {name} is {[w.shape for w in theirs]} in {path} but {shapes} "
                "here (same `width`, `image_size` and classes needed)"
            )
        ours.set_weights(theirs)
    log(f"Initialised {', '.join(names)} from {path}")
    return names
