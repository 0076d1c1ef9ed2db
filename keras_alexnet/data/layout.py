"""How a prepared set's images are rescaled for a model, and the sizes worth preparing.

Without TensorFlow, so that `prepare --help` can state the bounds.
"""

import dataclasses

from keras_alexnet.registry import VGG_MAX_SCALE, get_spec

SHARD_SIZE = 1024  # images per shard file (about 25-60 MB at 256x256)
QUALITY = 90  # JPEG quality of the prepared images
# The largest shorter side: twice the largest scale of either paper (VGG's 512). Images are
# rescaled in float32 on every core at once; sides far above it only spend memory (100000
# is an OOM).
MAX_SIZE = 2 * VGG_MAX_SCALE


@dataclasses.dataclass(frozen=True)
class Layout:
    """How prepared images were rescaled: shorter side `size`; `square`: central size x size."""

    size: int
    square: bool


def layout_for(model, size=None):
    """The model's family's layout: AlexNet 256x256; VGG shorter side 512 (or `size`)."""
    family = get_spec(model).family_spec
    return Layout(size or family.prepared_size, square=family.square_layout)


def size_bounds(model):
    """The (smallest, largest) shorter side worth preparing for `model`.

    The smallest is the model's smallest input (its crop must fit); the largest MAX_SIZE.
    """
    return get_spec(model).family_spec.smallest_input, MAX_SIZE
