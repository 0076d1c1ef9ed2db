"""torchvision's VGG11 / 13 / 16 / 19 state dicts (`vgg16-397923af.pth` or `.safetensors`).

Keys `features.{i}.weight|bias`, where i counts every module of `features` (conv, ReLU,
and a max-pool closing each block: two indices from one conv to the next in a block,
three across a pool), and `classifier.0`, `.3`, `.6` (fc1, fc2, predictions). Kernels
are (out, in, kh, kw) and a Linear's weight (out, in); classifier.0's inputs are the
flattened (c, h, w) map. Inputs are RGB / 255 with a per-channel mean and std
(presets.TORCHVISION). The batch-norm variants (vgg16_bn) have no counterpart here.
"""

import numpy as np

from keras_alexnet.weights.importer import WeightsError, dense_from_chw
from keras_alexnet.weights.presets import TORCHVISION

CLASSIFIER = {"classifier.0": "fc1", "classifier.3": "fc2", "classifier.6": "predictions"}
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


def convert_state_dict(state):
    """A torchvision VGG state dict (name -> NumPy array) as {our layer: [kernel, bias]}."""
    if any(key.endswith("running_mean") for key in state):
        raise WeightsError("a batch-norm VGG (vgg*_bn): our VGGs have no batch normalisation")
    expected = {f"{k}.{p}" for k in CLASSIFIER for p in ("weight", "bias")}
    indices = sorted(int(k.split(".")[1]) for k in state if k.startswith("features."))
    indices = sorted(set(indices))
    if not indices:
        raise WeightsError("not a torchvision VGG state dict: no features.N convolutions")
    expected |= {f"features.{i}.{p}" for i in indices for p in ("weight", "bias")}
    if set(state) != expected:
        odd = sorted(set(state) ^ expected)[:4]
        raise WeightsError(f"not a torchvision VGG state dict (keys {', '.join(odd)} ...)")
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


def _check_vgg(spec):
    """Refuse a target other than VGG: torchvision's AlexNet is not the paper's."""
    if spec.family != "vgg":
        raise WeightsError(
            "torchvision's weights import into VGG (vgg11, vgg13, vgg16, vgg19); its AlexNet "
            f"is the one-weird-trick net, not the paper's. Received: model={spec.name!r}"
        )


def read_pth(path, spec):
    """Read a torchvision VGG `.pth` state dict with PyTorch: (weights, Preset)."""
    import torch

    _check_vgg(spec)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, ...
        raise WeightsError(f"{path} is not a readable PyTorch file: {e}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    arrays = {k: v.detach().float().numpy() for k, v in state.items()}
    return convert_state_dict(arrays), TORCHVISION


def read_safetensors(path, spec):
    """Read a torchvision VGG `.safetensors` file without PyTorch: (weights, Preset)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    _check_vgg(spec)
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file: {e}") from None
    return convert_state_dict(state), TORCHVISION
