"""PyTorch versions of the paper's AlexNet and VGG: a benchmark baseline and a test reference.

Written independently of the Keras builders (NCHW, PyTorch's own layers) so that a test
can copy weights across and compare outputs. PyTorch is optional: nothing in the package
imports this module; the benchmarks put tests/ on their path to import it.

torchvision's own layout of VGG (its modules, so its state-dict keys) follows the paper's
nets, for the tests that import torchvision's files.
"""

import functools

import numpy as np
import torch
from torch import nn

VGG_CONFIGS = {  # Simonyan & Zisserman, Table 1; (c, 1) is a 1x1 conv, "L" an LRN.
    "vgg_a": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg_a_lrn": [64, "L", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg_b": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg_c": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M",
              512, 512, (512, 1), "M"],
    "vgg_d": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg_e": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}  # fmt: skip


class TowerLRN(nn.Module):
    """PyTorch's LocalResponseNorm (alpha/n convention) applied within each tower."""

    def __init__(self, towers, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__()
        self.towers = towers
        # The paper's alpha multiplies the plain sum; PyTorch divides its alpha by size.
        self.lrn = nn.LocalResponseNorm(size, alpha=alpha * size, beta=beta, k=k)

    def forward(self, x):
        """Normalise each tower's channels on their own."""
        return torch.cat([self.lrn(t) for t in x.chunk(self.towers, dim=1)], dim=1)


class AlexNet(nn.Module):
    """The NIPS 2012 AlexNet: conv2/4/5 grouped in two towers, LRN per tower, 227 input."""

    def __init__(self, classes=1000, towers=2, width=1.0, input_size=227):
        super().__init__()
        side = (input_size - 11) // 4 + 1
        for _ in range(3):
            side = (side - 3) // 2 + 1

        def w(c):
            return max(towers, int(round(c * width / towers)) * towers)

        c1, c2, c3, c4, c5, fc = w(96), w(256), w(384), w(384), w(256), w(4096)
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 11, stride=4), nn.ReLU(), TowerLRN(towers), nn.MaxPool2d(3, 2),
            nn.Conv2d(c1, c2, 5, padding=2, groups=towers), nn.ReLU(), TowerLRN(towers),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c3, c4, 3, padding=1, groups=towers), nn.ReLU(),
            nn.Conv2d(c4, c5, 3, padding=1, groups=towers), nn.ReLU(), nn.MaxPool2d(3, 2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c5 * side * side, fc), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(fc, fc), nn.ReLU(), nn.Dropout(0.5), nn.Linear(fc, classes),
        )  # fmt: skip

    def forward(self, x):
        """Return logits for an NCHW batch."""
        return self.classifier(self.features(x))


class VGG(nn.Module):
    """A VGG configuration from VGG_CONFIGS, 224 input (`width` scales every layer)."""

    def __init__(self, name, classes=1000, width=1.0, input_size=224):
        super().__init__()

        def w(c):
            return max(1, int(round(c * width)))

        layers, channels = [], 3
        for cell in VGG_CONFIGS[name]:
            if cell == "M":
                layers.append(nn.MaxPool2d(2, 2))
            elif cell == "L":
                layers.append(TowerLRN(1))
            else:
                out, k = cell if isinstance(cell, tuple) else (cell, 3)
                layers += [nn.Conv2d(channels, w(out), k, padding=k // 2), nn.ReLU()]
                channels = w(out)
        side, fc = input_size // 32, w(4096)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * side * side, fc), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(fc, fc), nn.ReLU(), nn.Dropout(0.5), nn.Linear(fc, classes),
        )  # fmt: skip

    def forward(self, x):
        """Return logits for an NCHW batch."""
        return self.classifier(self.features(x))


def build(name, classes=1000, width=1.0, input_size=None):
    """Build the PyTorch reference of a registry name ("alexnet", "vgg_a" ... "vgg_e")."""
    net = AlexNet if name == "alexnet" else functools.partial(VGG, name)
    size = {} if input_size is None else {"input_size": input_size}
    return net(classes, width=width, **size)


def load_keras_weights(torch_model, keras_model):
    """Copy a Keras model's conv/dense weights into the PyTorch reference, in layer order.

    Conv kernels go (kh, kw, in, out) -> (out, in, kh, kw); the first FC layer's rows are
    permuted from Keras's NHWC flatten order to PyTorch's NCHW one.
    """
    keras_layers = [layer for layer in keras_model.layers if hasattr(layer, "kernel")]
    torch_layers = [m for m in torch_model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if len(keras_layers) != len(torch_layers):
        raise ValueError(f"{len(keras_layers)} Keras layers vs {len(torch_layers)} PyTorch")
    first_fc = True
    for k_layer, t_layer in zip(keras_layers, torch_layers, strict=True):
        kernel, bias = (np.asarray(w) for w in k_layer.get_weights())
        if isinstance(t_layer, nn.Conv2d):
            weight = kernel.transpose(3, 2, 0, 1)
        else:
            weight = kernel.T
            if first_fc:
                c = t_layer.in_features // int(np.prod(prev_hw := previous_hw(keras_model)))
                h, w = prev_hw
                weight = weight.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(-1, h * w * c)
                first_fc = False
        with torch.no_grad():
            t_layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            t_layer.bias.copy_(torch.from_numpy(bias))
    return torch_model


def previous_hw(keras_model):
    """Spatial size of the maps that the Keras model flattens."""
    return tuple(keras_model.get_layer("flatten").input.shape[1:3])


# --- torchvision's layout, for the weight-import tests ------------------------------------

TORCHVISION_NAMES = {"vgg11": "vgg_a", "vgg16": "vgg_d"}  # the same Table 1 columns


class TorchVGG(nn.Module):
    """torchvision's VGG written out (models/vgg.py): the same modules, so the same keys.

    `batch_norm`: the vgg*_bn variant (make_layers' BatchNorm2d between conv and ReLU).
    """

    def __init__(self, cfg, width, fc, classes, batch_norm=False):
        super().__init__()
        layers, channels = [], 3
        for cell in cfg:
            if cell == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out = int(cell * width)
                layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))
                layers += [nn.BatchNorm2d(out)] if batch_norm else []
                layers.append(nn.ReLU(inplace=True))
                channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, fc), nn.ReLU(True), nn.Dropout(),
            nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(),
            nn.Linear(fc, classes),
        )  # fmt: skip

    def forward(self, x):
        """Return logits for an NCHW batch."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def torch_vgg(name, width, seed, classes=1000):
    """A torchvision-layout VGG with random weights and biases, in eval mode."""
    torch.manual_seed(seed)
    cfg = VGG_CONFIGS[TORCHVISION_NAMES[name]]
    model = TorchVGG(cfg, width, int(4096 * width), classes).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0, (2 / fan_in) ** 0.5)
                module.bias.normal_(0, 0.1)
    return model


def torchvision_forward(model, crops):
    """torchvision's ImageClassification after the crop: /255, mean, std; then softmax."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = ((crops / 255.0 - mean) / std).astype(np.float32).transpose(0, 3, 1, 2)
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(x.copy())), dim=1).numpy()
