"""torchvision's VGG11 / 13 / 16 / 19 state dicts (`vgg16-397923af.pth` or `.safetensors`).

Keys `features.{i}.weight|bias`, where i counts every module of `features` (conv, ReLU,
and a max-pool closing each block: two indices from one conv to the next in a block,
three across a pool), and `classifier.0`, `.3`, `.6` (fc1, fc2, predictions). Kernels
are (out, in, kh, kw) and a Linear's weight (out, in); classifier.0's inputs are the
flattened (c, h, w) map. Inputs are RGB / 255 with a per-channel mean and std
(presets.TORCHVISION). The batch-norm variants (vgg16_bn) have no counterpart here.
A `.pth` may also be a training checkpoint holding the state dict (`WRAPPERS`), with the
`module.` prefix DataParallel adds; it is read with PyTorch's safe loader only.
"""

import argparse
import re
import warnings

import numpy as np

from keras_alexnet.weights.importer import WeightsError, dense_from_chw, vgg_args
from keras_alexnet.weights.presets import TORCHVISION

CLASSIFIER = {"classifier.0": "fc1", "classifier.3": "fc2", "classifier.6": "predictions"}
LAYOUT = "features.N.weight|bias, classifier.0 / .3 / .6"
FEATURE_KEY = re.compile(r"features\.\d+\.(weight|bias)")
RESNET_HINT = "conv1, bn1, layer1..4 and fc: a ResNet's layout"
# Where training checkpoints keep the state dict: Lightning and most scripts "state_dict",
# PyTorch's tutorial "model_state_dict", torchvision's references "model", DeepSpeed "module".
WRAPPERS = ("state_dict", "model_state_dict", "model", "module")
PARALLEL_PREFIX = "module."  # DataParallel / DistributedDataParallel
# Plain-data classes checkpoints hold besides tensors (torchvision's references save their
# argparse arguments); the safe loader rebuilds them without running the file's code.
SAFE_GLOBALS = [argparse.Namespace]
UNSAFE_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")
CONV_STEP = 2  # conv, ReLU
POOL_STEP = 3  # conv, ReLU, max-pool


def _conv_names(indices):
    """Our names (block{i}_conv{j}) of the convolutions at `features` indices, in order."""
    names, block, conv = [], 1, 0
    for previous, index in zip([None, *indices], indices, strict=False):
        step = None if previous is None else index - previous
        if step == POOL_STEP:
            block, conv = block + 1, 0
        elif step not in (None, CONV_STEP):
            raise WeightsError(
                f"features.{previous} and features.{index}: not torchvision's VGG layout "
                "(conv, ReLU [, max-pool])"
            )
        conv += 1
        names.append(f"block{block}_conv{conv}")
    return names


def _fc1_kernel(weight, channels):
    """classifier.0's (out, c * h * w) weight as our fc1 kernel, (h * w * c, out)."""
    return dense_from_chw(weight, channels, "classifier.0")


def _strip_prefix(state):
    """Keys without the `module.` that DataParallel / DistributedDataParallel put on each."""
    if state and all(key.startswith(PARALLEL_PREFIX) for key in state):
        return {key.removeprefix(PARALLEL_PREFIX): value for key, value in state.items()}
    return state


def _not_vgg(path, keys, why):
    """The WeightsError for a state dict that is not torchvision's VGG layout."""
    shown = ", ".join(sorted(keys)[:4])
    return WeightsError(
        f"{path}: not a torchvision VGG state dict ({why}; keys {shown} ...): read are "
        f"torchvision's VGG11 / 13 / 16 / 19 ({LAYOUT}), without batch norm"
    )


def convert_state_dict(state, path):
    """A torchvision VGG state dict (name -> NumPy array) as {our layer: [kernel, bias]}."""
    state = _strip_prefix(state)
    indices = sorted({int(k.split(".")[1]) for k in state if FEATURE_KEY.fullmatch(k)})
    if not indices:
        hint = RESNET_HINT if {"conv1.weight", "fc.weight"} <= set(state) else "no features.N"
        raise _not_vgg(path, state, hint)
    if any(key.endswith("running_mean") for key in state):
        raise WeightsError(
            f"{path}: a batch-norm VGG (vgg*_bn): our VGGs have no batch normalisation; read "
            f"are torchvision's VGG11 / 13 / 16 / 19 without it ({LAYOUT})"
        )
    expected = {f"{k}.{p}" for k in CLASSIFIER for p in ("weight", "bias")}
    expected |= {f"features.{i}.{p}" for i in indices for p in ("weight", "bias")}
    if set(state) != expected:
        odd = sorted(set(state) ^ expected)[:4]
        raise _not_vgg(path, odd, "unexpected or missing keys")
    weights = {}
    for index, name in zip(indices, _conv_names(indices), strict=True):
        kernel = np.asarray(state[f"features.{index}.weight"])
        weights[name] = [kernel.transpose(2, 3, 1, 0), np.asarray(state[f"features.{index}.bias"])]
    channels = weights[name][0].shape[-1]
    for key, ours in CLASSIFIER.items():
        weight = np.asarray(state[f"{key}.weight"])
        kernel = _fc1_kernel(weight, channels) if ours == "fc1" else weight.T
        weights[ours] = [kernel, np.asarray(state[f"{key}.bias"])]
    return weights


def _preset(weights):
    """The torchvision Preset with the width block1_conv1's filter count implies."""
    return TORCHVISION.replace(model_args=vgg_args(weights["block1_conv1"][0].shape[-1]))


def _check_vgg(spec):
    """Refuse a target other than VGG: torchvision's AlexNet is not the paper's."""
    if spec.family != "vgg":
        raise WeightsError(
            "torchvision's weights import into VGG (vgg11, vgg13, vgg16, vgg19); its AlexNet "
            f"is the one-weird-trick net, not the paper's. Received: model={spec.name!r}"
        )


def _checkpoint_state(obj, path):
    """The state dict in what torch.load returned: itself, or the one a checkpoint holds.

    Checkpoints: `{"state_dict": ..., "epoch": 3}`, torchvision references' `{"model": ...}`,
    the other WRAPPERS.
    """
    import torch

    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((k for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = obj[inner]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor: neither a "
                f"state dict nor a checkpoint holding one under {', '.join(WRAPPERS)}"
            )
    return obj


def _refusal(path, error):
    """PyTorch's refusal of a file, in our words.

    It says what the file holds, never PyTorch's advice to load it with weights_only=False
    (which would run the file's code).
    """
    found = UNSAFE_GLOBAL.search(str(error))
    if found:
        return WeightsError(
            f"{path} holds {found.group(1)}, Python code that loading would run, not only "
            "tensors: refused; save model.state_dict() with torch.save, or as .safetensors"
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "weights_only" in first:
        first = "PyTorch's safe loader refuses it"
    return WeightsError(f"{path} is not a readable PyTorch file: {first}")


def read_pth(path, spec):
    """Read a torchvision VGG `.pth` state dict or checkpoint, safely: (weights, Preset)."""
    import torch

    _check_vgg(spec)
    try:
        # Its warnings (deprecations, storage notices) would precede our one-line answer.
        with warnings.catch_warnings(), torch.serialization.safe_globals(SAFE_GLOBALS):
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, ...
        raise _refusal(path, e) from None
    state = _checkpoint_state(state, path)
    weights = convert_state_dict({k: v.detach().float().numpy() for k, v in state.items()}, path)
    return weights, _preset(weights)


def read_safetensors(path, spec):
    """Read a torchvision VGG `.safetensors` file without PyTorch: (weights, Preset)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    _check_vgg(spec)
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file: {e}") from None
    weights = convert_state_dict(state, path)
    return weights, _preset(weights)
