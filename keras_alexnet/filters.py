"""Look inside conv1: the AlexNet paper's Figure 3 per tower, and how colour-specific each tower is.

AlexNet (NIPS 2012, Figure 3 and Section 6.1) shows its 96 conv1 kernels with the 48 of
GPU 1 above the 48 of GPU 2 and reports that the first are "largely color-agnostic" and
the second "largely color-specific". `conv1_picture` draws that figure for any number of
towers. Pure NumPy; Pillow only to write the PNG.
"""

import math

import numpy as np

BACKGROUND = (255, 255, 255)  # between kernels and between towers
GAP = 8  # pixels between towers
PAD = 1  # pixels around each kernel
SCALE = 4  # each kernel pixel becomes SCALE x SCALE display pixels
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


def picture_shape(kernel_size, count, towers, *, scale=SCALE, columns=None, pad=PAD, gap=GAP):
    """(height, width) of `conv1_picture` for `count` kernels of `kernel_size` (kh, kw)."""
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
    kernels, towers=1, *, scale=SCALE, columns=None, pad=PAD, gap=GAP, background=BACKGROUND
):
    """Figure 3: conv1's [kh, kw, 3, N] kernels as uint8 RGB [H, W, 3], tower 1 on top.

    Tower t holds kernels t*N/towers ... (t+1)*N/towers - 1 (the conv1 outputs that the
    grouped conv2 of tower t reads). Each kernel is min-max scaled on its own
    (`display_kernel`), enlarged `scale` times (nearest neighbour) and placed in a grid of
    `columns` (default `grid_columns`) with `pad` background pixels around it; the towers'
    grids are stacked with `gap` background rows between them (size: `picture_shape`).
    """
    kernels = np.asarray(kernels)
    if kernels.ndim != 4 or kernels.shape[2] != 3:
        raise ValueError(f"conv1 kernels must be [kh, kw, 3, N]. Received shape {kernels.shape}")
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
