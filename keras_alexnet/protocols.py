"""The papers' test protocols in one table: how views are made, how their scores reduce.

Pure Python (no TensorFlow): the data pipeline makes the views (`data.eval_dataset`), the
evaluation reduces the scores (`keras_alexnet.evaluation`), both reading the same entry.
"""

import dataclasses

import numpy as np

from keras_alexnet.registry import PAPER_RECIPES


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A test protocol: the views of one image, at which scales Q, and where it comes from."""

    name: str
    # The views `data.eval_dataset` cuts from each image rescaled to Q: "center" (one crop),
    # "ten_crop" (corners, centre and reflections) or "dense" (the whole image and its
    # reflection, which the model scores as convolutions, averaging its class score map).
    views: str
    views_per_image: int  # their scores are averaged
    multi_scale: bool  # views at every test scale Q, their scores averaged; else Q = resize
    paper: str

    @property
    def whole_image(self):
        """Whether the views are whole images (shapes differ: one image per element)."""
        return self.views == "dense"

    def test_scales(self, resize, scales):
        """The shorter sides Q the images are rescaled to: `scales` or just `resize`."""
        return tuple(scales) if self.multi_scale else (resize,)

    def reduce(self, scores, count):
        """[count * views_per_image, classes] scores -> [count, classes], views averaged."""
        scores = np.asarray(scores)
        return scores.reshape(count, self.views_per_image, -1).mean(axis=1)


PROTOCOLS = {
    p.name: p
    for p in (
        Protocol(
            name="center",
            views="center",
            views_per_image=1,
            multi_scale=False,
            paper="the single centre crop of the image rescaled to Q",
        ),
        Protocol(
            name="ten_crop",
            views="ten_crop",
            views_per_image=10,
            multi_scale=False,
            paper="AlexNet Section 4.1: four corner and centre crops and their reflections",
        ),
        Protocol(
            name="dense",
            views="dense",
            views_per_image=2,
            multi_scale=False,
            paper="VGG Section 3.2: FC layers as convolutions over the whole image and its "
            "reflection",
        ),
        Protocol(
            name="multi_scale",
            views="dense",
            views_per_image=2,
            multi_scale=True,
            paper="VGG Section 4.2: dense evaluation at several Q",
        ),
    )
}
# The protocol a model's metadata records (training.py), which evaluation uses unless told:
# the paper's, whose views include reflections, for a model trained with reflections
# (models.ModelSpec.protocol, by family), the centre crop for one trained without (the
# demo's digits).
# Each family's paper protocol (its recipe's, in the registry).
PAPER_PROTOCOLS = {family: recipe["protocol"] for family, recipe in PAPER_RECIPES.items()}
WITHOUT_REFLECTIONS = "center"
# VGG Section 4.2: a model trained at a fixed S is tested at Q = {S - 32, S, S + 32}.
SCALE_STEP = 32


def trained_protocol(paper, flip):
    """The protocol of a model trained with (`flip`) or without reflections: `paper` or center."""
    return paper if flip else WITHOUT_REFLECTIONS


def default_protocol_help():
    """How the default protocol is chosen, for --help, from PAPER_PROTOCOLS."""
    papers = ", ".join(f"{family} {name}" for family, name in PAPER_PROTOCOLS.items())
    return (
        f"the model's metadata's: the paper's for a model trained with reflections ({papers}), "
        f"{WITHOUT_REFLECTIONS} for one trained without (the demo's)"
    )


def paper_scales(smin, smax=None):
    """VGG Section 4.2's test scales Q for a model trained at S = smin or S in [smin, smax].

    A fixed S is tested at Q = {S - 32, S, S + 32}, a jittered S at
    Q = {Smin, (Smin + Smax) / 2, Smax} (halves rounded down).
    """
    if smax is None or smax == smin:
        return (smin - SCALE_STEP, smin, smin + SCALE_STEP)
    return (smin, (smin + smax) // 2, smax)


def fit_scales(scales, crop):
    """`scales` with each Q below `crop` raised to it, each Q once: a view needs one crop."""
    return tuple(dict.fromkeys(max(int(q), crop) for q in scales))


def default_scales_help():
    """VGG Section 4.2's rule for --help, with paper_scales' own examples."""

    def show(scales):
        return ",".join(str(q) for q in scales)

    return (
        "VGG Section 4.2's, from the training scale S in the model's metadata: S-32,S,S+32 "
        f"for a fixed S (S=256: {show(paper_scales(256))}), Smin,(Smin+Smax)/2,Smax for S "
        f"jittered in [Smin, Smax] ([256, 512]: {show(paper_scales(256, 512))}); a Q below "
        "the input size is raised to it, which the results note"
    )


def get(name):
    """The protocol called `name`; ValueError naming the choices for any other."""
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {tuple(PROTOCOLS)}. Received: protocol={name!r}")
    return PROTOCOLS[name]
