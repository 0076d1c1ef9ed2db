"""torchvision's AlexNet and VGG state dicts (`.pth` or `.safetensors`), as published.

Three layouts, told apart by their keys (`LAYOUTS`):
- VGG11 / 13 / 16 / 19 (`vgg16-397923af.pth`): `features.{i}.weight|bias`, where i counts
  every module of `features` (conv, ReLU, and a max-pool closing each block: two indices
  from one conv to the next in a block, three across a pool); `classifier.0`, `.3`, `.6`
  (fc1, fc2, predictions).
- the batch-norm VGGs (`vgg16_bn-6c64b313.pth`): conv, BatchNorm2d, ReLU (three indices
  in a block, four across a pool), the BatchNorm2d's weight, bias, running_mean and
  running_var (`num_batches_tracked` is not a weight); the same classifier.
- AlexNet (`alexnet-owt-7be5be79.pth`, the one-weird-trick net, our `alexnet_tv`): convs at
  features.0, 3, 6, 8, 10; `classifier.1`, `.4`, `.6` (fc6, fc7, fc8).
Kernels are (out, in, kh, kw) and a Linear's weight (out, in); the first Linear's inputs
are the flattened (c, h, w) map. Inputs are RGB / 255 with a per-channel mean and std
(presets.TORCHVISION). A `.pth` may also be a training checkpoint holding the state dict
(`WRAPPERS`), with the `module.` prefix DataParallel adds; it is read without PyTorch by
`keras_alexnet.weights.pth`, which rebuilds tensors and nothing else.
"""

import dataclasses
import re

import numpy as np

from keras_alexnet.weights import pth
from keras_alexnet.weights.importer import WeightsError, dense_from_chw
from keras_alexnet.weights.presets import TORCHVISION

FEATURE_KEY = re.compile(r"features\.(\d+)\.(weight|bias)")
RESNET_HINT = "conv1, bn1, layer1..4 and fc: a ResNet's layout"
# Where training checkpoints keep the state dict: Lightning and most scripts "state_dict",
# PyTorch's tutorial "model_state_dict", torchvision's references "model", DeepSpeed "module".
WRAPPERS = ("state_dict", "model_state_dict", "model", "module")
PARALLEL_PREFIX = "module."  # DataParallel / DistributedDataParallel
BATCH_NORM = ("weight", "bias", "running_mean", "running_var")  # Keras BN's weights' order
BATCH_NORM_COUNTER = "num_batches_tracked"
VGG_DEPTHS = {8: "11", 10: "13", 13: "16", 16: "19"}  # convolutions -> torchvision's name


@dataclasses.dataclass(frozen=True)
class Layout:
    """One torchvision state-dict layout: where its layers sit, and which model takes it."""

    name: str  # what the file is, for messages
    family: str  # registry family of the models it imports into
    classifier: dict  # classifier.N -> our layer
    conv_step: int  # features indices from one conv to the next within a block
    pool_step: int  # ... and across a max-pool
    batch_norm: bool  # a BatchNorm2d after each conv
    models: dict  # the registry names that take it, by number of convolutions
    conv_names: tuple = ()  # fixed names of the convs (AlexNet); empty: VGG's block names
    first_filters: int = 64  # the first conv's filters at width 1 (all three nets: 64)

    def fits(self, spec):
        """Whether the registry model `spec` takes this layout's weights."""
        return spec.family == self.family and (
            bool(spec.builder_args.get("batch_norm")) == self.batch_norm
        )


VGG_CLASSIFIER = {"classifier.0": "fc1", "classifier.3": "fc2", "classifier.6": "predictions"}
LAYOUTS = {
    "vgg": Layout("torchvision's VGG without batch norm", "vgg", VGG_CLASSIFIER, 2, 3, False,
                  models={n: f"vgg{depth}" for n, depth in VGG_DEPTHS.items()}),
    "vgg_bn": Layout("torchvision's batch-norm VGG", "vgg", VGG_CLASSIFIER, 3, 4, True,
                     models={n: f"vgg{depth}_bn" for n, depth in VGG_DEPTHS.items()}),
    "alexnet": Layout(
        "torchvision's AlexNet (the one-weird-trick net)", "alexnet_tv",
        {"classifier.1": "fc6", "classifier.4": "fc7", "classifier.6": "fc8"}, 3, 3, False,
        models={5: "alexnet_tv"}, conv_names=("conv1", "conv2", "conv3", "conv4", "conv5"),
    ),
}  # fmt: skip


def _layout(state, path):
    """The Layout of a state dict, from its keys; WeightsError for another net's."""
    if not any(FEATURE_KEY.fullmatch(k) for k in state):
        hint = RESNET_HINT if {"conv1.weight", "fc.weight"} <= set(state) else "no features.N"
        raise _not_torchvision(path, state, hint)
    if "classifier.1.weight" in state:
        return LAYOUTS["alexnet"]
    if any(key.endswith(".running_mean") for key in state):
        return LAYOUTS["vgg_bn"]
    return LAYOUTS["vgg"]


def _conv_indices(state, layout):
    """The features indices of the convolutions (a BatchNorm2d's are the index after one)."""
    indices = sorted({int(m[1]) for k in state if (m := FEATURE_KEY.fullmatch(k))})
    if layout.batch_norm:
        norms = {int(k.split(".")[1]) for k in state if k.endswith(".running_mean")}
        indices = [i for i in indices if i not in norms]
    return indices


def _conv_names(indices, layout, path):
    """Our names of the convolutions at `features` indices, in order."""
    if layout.conv_names:
        if len(indices) != len(layout.conv_names):
            raise _not_torchvision(path, [f"features.{i}" for i in indices], "conv count")
        return list(layout.conv_names)
    names, block, conv = [], 1, 0
    for previous, index in zip([None, *indices], indices, strict=False):
        step = None if previous is None else index - previous
        if step == layout.pool_step:
            block, conv = block + 1, 0
        elif step not in (None, layout.conv_step):
            raise WeightsError(
                f"features.{previous} and features.{index}: not {layout.name}'s layout"
            )
        conv += 1
        names.append(f"block{block}_conv{conv}")
    return names


def _expected_keys(indices, layout):
    """Every key the layout's state dict has, given its conv indices."""
    keys = {f"{k}.{p}" for k in layout.classifier for p in ("weight", "bias")}
    keys |= {f"features.{i}.{p}" for i in indices for p in ("weight", "bias")}
    if layout.batch_norm:
        norms = (*BATCH_NORM, BATCH_NORM_COUNTER)
        keys |= {f"features.{i + 1}.{p}" for i in indices for p in norms}
    return keys


def _strip_prefix(state):
    """Keys without the `module.` that DataParallel / DistributedDataParallel put on each."""
    if state and all(key.startswith(PARALLEL_PREFIX) for key in state):
        return {key.removeprefix(PARALLEL_PREFIX): value for key, value in state.items()}
    return state


def _not_torchvision(path, keys, why):
    """The WeightsError for a state dict in none of torchvision's layouts read here."""
    shown = ", ".join(sorted(keys)[:4])
    return WeightsError(
        f"{path}: not a torchvision AlexNet or VGG state dict ({why}; keys {shown} ...): "
        "read are features.N.weight|bias (with BatchNorm2d's running_mean / running_var) "
        "and classifier.N"
    )


def _model_for(layout, indices):
    """The registry name that takes a file of this layout with these convolutions."""
    return layout.models.get(len(indices)) or " or ".join(layout.models.values())


def _check_target(layout, indices, spec, path):
    """Refuse a model of another layout in one line, naming the one that takes the file."""
    if not layout.fits(spec):
        raise WeightsError(
            f"{path} holds {layout.name}: import it into {_model_for(layout, indices)}, "
            f"not {spec.name}"
        )


def convert_state_dict(state, path, spec):
    """A torchvision state dict (name -> NumPy array) as {our layer: its weights}."""
    state = _strip_prefix(state)
    layout = _layout(state, path)
    indices = _conv_indices(state, layout)
    _check_target(layout, indices, spec, path)
    if set(state) != _expected_keys(indices, layout):
        odd = sorted(set(state) ^ _expected_keys(indices, layout))[:4]
        raise _not_torchvision(path, odd, "unexpected or missing keys")
    weights = {}
    for index, name in zip(indices, _conv_names(indices, layout, path), strict=True):
        kernel = np.asarray(state[f"features.{index}.weight"])
        weights[name] = [kernel.transpose(2, 3, 1, 0), np.asarray(state[f"features.{index}.bias"])]
        if layout.batch_norm:
            norm = name.replace("_conv", "_bn")
            weights[norm] = [np.asarray(state[f"features.{index + 1}.{p}"]) for p in BATCH_NORM]
    channels = weights[name][0].shape[-1]
    for i, (key, ours) in enumerate(layout.classifier.items()):
        weight = np.asarray(state[f"{key}.weight"])
        kernel = dense_from_chw(weight, channels, key) if i == 0 else weight.T
        weights[ours] = [kernel, np.asarray(state[f"{key}.bias"])]
    return weights


def _preset(weights, spec):
    """The torchvision Preset with the width the first convolution's filter count implies."""
    layout = next(layout for layout in LAYOUTS.values() if layout.fits(spec))
    width = next(iter(weights.values()))[0].shape[-1] / layout.first_filters
    return TORCHVISION.replace(model_args={} if width == 1 else {"width": width})


def _checkpoint_state(obj, path):
    """The state dict in what the file holds: itself, or the one a checkpoint holds.

    Checkpoints: `{"state_dict": ..., "epoch": 3}`, torchvision references' `{"model": ...}`,
    the other WRAPPERS.
    """
    while isinstance(obj, dict) and not all(isinstance(v, np.ndarray) for v in obj.values()):
        inner = next((k for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = obj[inner]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
    for key, value in obj.items():
        if not isinstance(value, np.ndarray):
            raise WeightsError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor: neither a "
                f"state dict nor a checkpoint holding one under {', '.join(WRAPPERS)}"
            )
    return obj


def _refusal(path, error):
    """The reader's refusal of a file, in one line that says what the file holds."""
    if isinstance(error, pth.RefusedGlobal):
        return WeightsError(
            f"{path} holds {error}, Python code that loading would run, not only "
            "tensors: refused; save model.state_dict() with torch.save, or as .safetensors"
        )
    return WeightsError(f"{path} is not a readable PyTorch file: {error}")


def read_pth(path, spec):
    """Read a torchvision AlexNet or VGG `.pth` (state dict or checkpoint), without PyTorch."""
    try:
        state = pth.load(path)
    except pth.PthError as e:
        raise _refusal(path, e) from None
    except OSError as e:
        raise WeightsError(f"{path} is not readable: {e.strerror}") from None
    state = _checkpoint_state(state, path)
    arrays = {k: np.asarray(v, np.float32) for k, v in state.items()}
    weights = convert_state_dict(arrays, path, spec)
    return weights, _preset(weights, spec)


def read_safetensors(path, spec):
    """Read a torchvision AlexNet or VGG `.safetensors` file without PyTorch: (weights, Preset)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file: {e}") from None
    weights = convert_state_dict(state, path, spec)
    return weights, _preset(weights, spec)
