"""The papers' test protocols in one table: how views are made, how their scores reduce.

Pure Python (no TensorFlow): the data pipeline makes the views (`data.eval_dataset`), the
evaluation reduces the scores (`keras_alexnet.evaluate`), both reading the same entry.
"""

import dataclasses

import numpy as np


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
DEFAULT_SCALES = (256, 384, 512)  # VGG Section 4.2's Q for models trained with jittered S


def get(name):
    """The protocol called `name`; ValueError naming the choices for any other."""
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {tuple(PROTOCOLS)}. Received: protocol={name!r}")
    return PROTOCOLS[name]
