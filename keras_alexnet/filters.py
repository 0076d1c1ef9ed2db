"""Look inside conv1: the AlexNet paper's Figure 3 per tower, and how colour-specific each tower is.

AlexNet (NIPS 2012, Figure 3 and Section 6.1) shows its 96 conv1 kernels with the 48 of
GPU 1 above the 48 of GPU 2 and reports that the first are "largely color-agnostic" and
the second "largely color-specific". `conv1_picture` draws that figure for any number of
towers. Pure NumPy; Pillow only to write the PNG.
"""

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np

from keras_alexnet import fileio, runtime
from keras_alexnet.artifacts import first_line
from keras_alexnet.data.kinds import as_path, is_local
from keras_alexnet.data.stats import colour_in_data
from keras_alexnet.onnx.session import read_metadata

BACKGROUND = (255, 255, 255)  # between kernels and between towers
GAP = 8  # pixels between towers
PAD = 1  # pixels around each kernel
TILE = 44  # display pixels a kernel's side is enlarged to at least: Figure 3's 11 x 4
GREY = 128  # a kernel with one value everywhere has no range to scale: drawn mid-grey


def display_kernel(kernel):
    """One [kh, kw, 3] kernel as uint8 RGB, min-max scaled over all its values together.

    One range for the three channels keeps the kernel's colour balance (a kernel equal in
    R, G and B is drawn grey); a constant kernel is drawn mid-grey.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    low, high = kernel.min(), kernel.max()
    if high <= low:
        return np.full(kernel.shape, GREY, dtype=np.uint8)
    return np.round((kernel - low) / (high - low) * 255.0).astype(np.uint8)


def grid_columns(per_tower):
    """Kernels per row of a tower: Figure 3's 16 for 48 kernels (rows about 3/16 of the width)."""
    return max(1, min(per_tower, math.ceil(math.sqrt(per_tower * 16 / 3))))


def display_scale(kernel_size):
    """Display pixels per kernel pixel: enough for TILE-pixel kernels (AlexNet 4, VGG 15)."""
    return max(1, math.ceil(TILE / max(kernel_size)))


def picture_shape(kernel_size, count, towers, *, scale=None, columns=None, pad=None, gap=GAP):
    """(height, width) of `conv1_picture` for `count` kernels of `kernel_size` (kh, kw)."""
    scale = scale or display_scale(kernel_size)
    pad = max(PAD, scale // 5) if pad is None else pad
    per_tower = _per_tower(count, towers)
    columns = columns or grid_columns(per_tower)
    rows = math.ceil(per_tower / columns)
    kh, kw = kernel_size
    tower_height = rows * kh * scale + (rows + 1) * pad
    return towers * tower_height + (towers - 1) * gap, columns * kw * scale + (columns + 1) * pad


def _per_tower(count, towers):
    """Kernels per tower; ValueError when they do not split evenly."""
    if towers < 1 or count % towers:
        raise ValueError(f"{count} kernels do not split into {towers} towers")
    return count // towers


def conv1_picture(
    kernels, towers=1, *, scale=None, columns=None, pad=None, gap=GAP, background=BACKGROUND
):
    """Figure 3: conv1's [kh, kw, 3, N] kernels as uint8 RGB [H, W, 3], tower 1 on top.

    Tower t holds kernels t*N/towers ... (t+1)*N/towers - 1 (the conv1 outputs that the
    grouped conv2 of tower t reads). Each kernel is min-max scaled on its own
    (`display_kernel`), enlarged `scale` times (nearest neighbour; default `display_scale`,
    so VGG's 3x3 kernels are as large as AlexNet's 11x11) and placed in a grid of
    `columns` (default `grid_columns`) with `pad` background pixels around it (default: a
    fifth of `scale`, at least PAD); the towers' grids are stacked with `gap` background
    rows between them (size: `picture_shape`).
    """
    kernels = np.asarray(kernels)
    if kernels.ndim != 4 or kernels.shape[2] != 3:
        raise ValueError(f"conv1 kernels must be [kh, kw, 3, N]. Received shape {kernels.shape}")
    scale = scale or display_scale(kernels.shape[:2])
    pad = max(PAD, scale // 5) if pad is None else pad
    if scale < 1 or pad < 0 or gap < 0:
        raise ValueError(f"scale must be >= 1, pad and gap >= 0. Received {scale}, {pad}, {gap}")
    kh, kw, _, count = kernels.shape
    per_tower = _per_tower(count, towers)
    columns = columns or grid_columns(per_tower)
    height, width = picture_shape(
        (kh, kw), count, towers, scale=scale, columns=columns, pad=pad, gap=gap
    )
    picture = np.empty((height, width, 3), dtype=np.uint8)
    picture[:] = background
    tower_height = (height - (towers - 1) * gap) // towers
    for index in range(count):
        tower, slot = divmod(index, per_tower)
        row, column = divmod(slot, columns)
        top = tower * (tower_height + gap) + pad + row * (kh * scale + pad)
        left = pad + column * (kw * scale + pad)
        tile = display_kernel(kernels[..., index]).repeat(scale, axis=0).repeat(scale, axis=1)
        picture[top : top + kh * scale, left : left + kw * scale] = tile
    return picture


def write_png(path, picture):
    """Write a uint8 [H, W, 3] picture as a PNG, atomically."""
    from PIL import Image

    with fileio.atomic_path(path) as tmp:
        Image.fromarray(np.asarray(picture, dtype=np.uint8), "RGB").save(tmp, format="PNG")


def colour_scores(kernels):
    """Each [kh, kw, 3, N] kernel's share of energy off the grey axis, in [0, 1].

    With k the kernel minus its mean over (h, w, c) and g = (k_R + k_G + k_B) / 3 per
    pixel (its projection on the grey axis (1, 1, 1) / sqrt(3)), the score is
    sum((k_c - g)^2) / sum(k_c^2): 0 for a kernel equal in R, G and B, 1 for one whose
    channels cancel at every pixel (R = -G, B = 0). A constant kernel scores 0.
    """
    kernels = np.asarray(kernels, dtype=np.float64)
    if kernels.ndim != 4 or kernels.shape[2] != 3:
        raise ValueError(f"conv1 kernels must be [kh, kw, 3, N]. Received shape {kernels.shape}")
    k = kernels - kernels.mean(axis=(0, 1, 2), keepdims=True)
    grey = k.mean(axis=2, keepdims=True)
    total = (k**2).sum(axis=(0, 1, 2))
    off_grey = ((k - grey) ** 2).sum(axis=(0, 1, 2))
    safe = np.where(total > 0, total, 1.0)
    return np.where(total > 0, off_grey / safe, 0.0)


def _ranks(values):
    """Average ranks (1-based, ties share their mean rank) and the tie term sum(t^3 - t)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks, float((counts**3 - counts).sum())


def mann_whitney(a, b):
    """Two-sided Mann-Whitney U (rank-sum) test: (U of `a`, p-value).

    Normal approximation with the tie correction of the variance and a continuity
    correction of 0.5: mu = n1 n2 / 2, sigma^2 = n1 n2 / 12 ((n + 1) - sum(t^3 - t) /
    (n (n - 1))); p = erfc(|z| / sqrt(2)). p = 1 when every value is tied.
    """
    a, b = np.ravel(a), np.ravel(b)
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        raise ValueError(f"the rank-sum test needs two non-empty samples. Received {n1}, {n2}")
    ranks, ties = _ranks(np.concatenate([a, b]))
    n = n1 + n2
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    variance = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return float(u), 1.0
    z = max(abs(u - n1 * n2 / 2.0) - 0.5, 0.0) / math.sqrt(variance)
    return float(u), math.erfc(z / math.sqrt(2.0))


def chi2_sf(x, df):
    """P(X > x) for a chi-square variable with integer `df` degrees of freedom (closed form)."""
    if x <= 0:
        return 1.0
    half = x / 2.0
    if df % 2 == 0:  # exp(-x/2) sum_{i < df/2} (x/2)^i / i!
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= half / i
            total += term
        return min(1.0, math.exp(-half) * total)
    # Odd df: erfc(sqrt(x/2)) + exp(-x/2) sum_{i=1}^{(df-1)/2} x^(i-1/2) / (2^(i-1/2) Gamma(i+1/2)).
    term = math.sqrt(half) * 2.0 / math.sqrt(math.pi)
    total = 0.0
    for i in range(1, (df - 1) // 2 + 1):
        total += term
        term *= half / (i + 0.5)
    return min(1.0, math.erfc(math.sqrt(half)) + math.exp(-half) * total)


def kruskal_wallis(groups):
    """Kruskal-Wallis H test over k >= 2 samples: (H, p-value from chi-square with k-1 df).

    H = (12 / (n (n + 1)) sum R_i^2 / n_i - 3 (n + 1)) / (1 - sum(t^3 - t) / (n^3 - n)),
    R_i the rank sum of sample i; p = 1 when every value is tied.
    """
    groups = [np.ravel(g) for g in groups]
    if len(groups) < 2 or any(not len(g) for g in groups):
        raise ValueError("the Kruskal-Wallis test needs at least two non-empty samples")
    ranks, ties = _ranks(np.concatenate(groups))
    n = len(ranks)
    bounds = np.cumsum([0] + [len(g) for g in groups])
    sums = [ranks[lo:hi].sum() ** 2 / (hi - lo) for lo, hi in itertools.pairwise(bounds)]
    correction = 1.0 - ties / (n**3 - n)
    if correction <= 0:
        return 0.0, 1.0
    h = (12.0 / (n * (n + 1)) * sum(sums) - 3.0 * (n + 1)) / correction
    return float(h), chi2_sf(h, len(groups) - 1)


def tower_scores(scores, towers):
    """Per-tower kernels, mean, std, median of `scores`, and whether the towers differ.

    The test is Mann-Whitney's rank-sum test for two towers, Kruskal-Wallis for more
    (`mann_whitney`, `kruskal_wallis`); None for one tower.
    """
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.split(scores, towers) if len(scores) % towers == 0 else None
    if groups is None:
        raise ValueError(f"{len(scores)} kernels do not split into {towers} towers")
    summary = [
        {
            "tower": i,
            "kernels": len(g),
            "mean": float(g.mean()),
            "std": float(g.std(ddof=1)) if len(g) > 1 else 0.0,
            "median": float(np.median(g)),
        }
        for i, g in enumerate(groups, start=1)
    ]
    test = None
    if towers == 2:
        u, p = mann_whitney(*groups)
        test = {"name": "Mann-Whitney U, two-sided", "statistic": u, "p_value": p}
    elif towers > 2:
        h, p = kruskal_wallis(groups)
        test = {"name": f"Kruskal-Wallis H, {towers - 1} df", "statistic": h, "p_value": p}
    return {"per_tower": summary, "test": test}


@dataclasses.dataclass(frozen=True)
class Conv1:
    """A model's first convolution: kernels [kh, kw, 3, N], towers, metadata (None if unknown)."""

    kernels: np.ndarray
    towers: int
    metadata: object = None


def conv1_kernels(model):
    """Conv1 of a keras.Model, a run directory, a `.keras` file or an fp32 `.onnx` export.

    The tower count is the group count of the model's grouped convolutions (AlexNet's
    conv2, conv4, conv5), else 1. An ONNX export whose input mean and scale were folded
    into conv1 (`keras_alexnet.onnx.graph.fold_input_normalization`) holds the kernel times
    the scale; it is divided back, so both paths give the Keras kernel.
    """
    if not isinstance(model, str | Path):
        return _keras_conv1(model, None)

    kind, path, _ = runtime.resolve(model)
    if kind == "onnxruntime":
        return _onnx_conv1(path)
    if kind != "keras":
        raise ValueError(f"{model} is a SavedModel: pass its run directory, .keras or .onnx")
    return _keras_conv1(*runtime.load_keras_model(model))


def _keras_conv1(model, metadata):
    """Conv1 of a keras.Model: the first layer with a [kh, kw, 3, N] kernel."""
    from keras_alexnet.layers import GroupedConv2D

    kernels = [
        layer.kernel
        for layer in model.layers
        if getattr(layer, "kernel", None) is not None
        and len(layer.kernel.shape) == 4
        and layer.kernel.shape[2] == 3
    ]
    if not kernels:
        raise ValueError(f"model {model.name} has no convolution on 3 (RGB) input channels")
    groups = [layer.groups for layer in model.layers if isinstance(layer, GroupedConv2D)]
    towers = max(groups, default=1)
    return Conv1(np.asarray(kernels[0].numpy(), dtype=np.float32), towers, metadata)


def _onnx_conv1(path):
    """Conv1 of an fp32 ONNX export, with the input normalisation folded back out."""
    import onnx

    from keras_alexnet.onnx.graph import input_conv_kernel

    proto = onnx.load(str(path))
    metadata = read_metadata({p.key: p.value for p in proto.metadata_props}, path, required=False)
    scale = None if metadata is None else metadata.scale
    try:
        kernel, groups = input_conv_kernel(proto, scale)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    kernels = kernel.transpose(2, 3, 1, 0).astype(np.float32)  # OIHW -> HWIO (Keras)
    return Conv1(kernels, groups, metadata)


UNKNOWN = "unknown"


def data_colour(metadata, cache=None):
    """`colour_in_data` of the data a model was trained on, or colour "unknown" with why.

    The statistics are the source's (`keras_alexnet.data.load_source`): the bundled
    demo set, a class-folder directory that exists here, or a prepared TFDS set.
    """
    if metadata is None:
        return {"colour": UNKNOWN, "reason": "the model has no metadata naming its data"}
    data = metadata.data
    if is_local(data) and not as_path(data).exists():
        return {"colour": UNKNOWN, "reason": f"its training data {data} is not on this machine"}
    from keras_alexnet.data.sources import load_source

    try:
        source = load_source(metadata.data, metadata.data_dir, cache=cache)
    except (OSError, ValueError) as e:
        why = first_line(e)
        return {"colour": UNKNOWN, "reason": f"its training data is not readable here: {why}"}
    return {"source": source.name, **colour_in_data(source.stats)}


def colour_report(conv1, cache=None):
    """Per-kernel colour scores, their per-tower summary and test, and the data's colour."""
    scores = colour_scores(conv1.kernels)
    return {
        "towers": conv1.towers,
        "kernel_shape": list(conv1.kernels.shape),
        "scores": [float(s) for s in scores],
        **tower_scores(scores, conv1.towers),
        "data": data_colour(conv1.metadata, cache),
    }


def format_table(report):
    """The per-tower colour scores, the test and the data's colour as printable lines."""
    lines = [f"{'tower':>5}  {'kernels':>7}  {'mean':>6}  {'std':>6}  {'median':>6}"]
    for row in report["per_tower"]:
        lines.append(
            f"{row['tower']:>5}  {row['kernels']:>7}  {row['mean']:6.3f}  {row['std']:6.3f}  "
            f"{row['median']:6.3f}"
        )
    test = report["test"]
    if test is not None:
        lines.append(
            f"{test['name']}: statistic {test['statistic']:.4g}, p = {test['p_value']:.3g}"
        )
    data = report["data"]
    lines.append(f"training data colour: {data['colour']} ({data['reason']})")
    return "\n".join(lines)
