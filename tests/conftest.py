import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Before any test module imports TensorFlow: the commands' settings (oneDNN on) must be in
# place at TensorFlow's first import, as they are in the commands; subprocesses inherit them.
from keras_alexnet import cli  # noqa: E402

cli.prepare_process()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Two classes of 16 train / 4 val 40x40 PNGs: dark blobs vs bright blobs."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("val", 4)):
        for label, level in (("dark", 60), ("bright", 190)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(level, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root
