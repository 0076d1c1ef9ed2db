"""What several test modules share: tiny runs and served models, sample images, requests.

TensorFlow and Keras are imported inside the helpers that use them: the server's and the
runtime's tests import this module too and never need them.
"""

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from keras_alexnet.images.crop import center_crop_resized
from keras_alexnet.metadata import Metadata
from keras_alexnet.serving.local import local_server

ROOT = Path(__file__).resolve().parents[1]

# --- runs of the demo digits (evaluate, export, filters, the CLI) ------------------------

SIZE, RESIZE = 67, 80  # AlexNet's smallest input; the demo digits are 8x8, upscaled


def make_run(path, *, name="alexnet", size=SIZE, resize=RESIZE, steps=30, protocol=None):
    """A run directory with a tiny model fitted for `steps` on the demo digits + metadata."""
    import keras

    from keras_alexnet.data import load_source, train_dataset
    from keras_alexnet.models import build_model, get_spec

    source = load_source(None)
    mean = tuple(source.stats.mean)
    keras.utils.set_random_seed(0)
    model = build_model(
        name, classes=len(source.class_names), input_shape=(size, size, 3), width=1 / 16,
        seed=0, init="he", mean=mean, scale=1 / 128, dropout=0.0,
    )  # fmt: skip
    if steps:
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
        ds = train_dataset(source, image_size=size, resize=resize, batch_size=32, seed=0)
        model.fit(ds.take(steps), epochs=1, verbose=0, shuffle=False)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save(path / "best.keras")
    Metadata(
        model=name, class_names=tuple(source.class_names), input_size=size, resize=resize,
        mean=mean, scale=1 / 128, protocol=protocol or get_spec(name).protocol,
    ).save(path / "metadata.json")  # fmt: skip
    return path, model


# --- the served model (the server, predict, torchvision models) -------------------------

CLASSES = tuple(f"class_{i}" for i in range(10))
METADATA = Metadata(
    model="vgg_a",
    class_names=CLASSES,
    input_size=32,
    resize=36,
    mean=(120.0, 110.0, 100.0),
    scale=1 / 64,
)


def build_artifacts(directory):
    """A tiny trained-looking VGG-A run (best.keras + metadata.json) and its ONNX export."""
    from keras_alexnet.export import export_onnx
    from keras_alexnet.models import build_model

    model = build_model(
        "vgg_a",
        input_shape=(32, 32, 3),
        width=1 / 16,
        classes=len(CLASSES),
        mean=METADATA.mean,
        scale=METADATA.scale,
        seed=0,
    )
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "best.keras")
    METADATA.save(directory / "metadata.json")
    onnx_path = directory / "tiny.onnx"
    export_onnx(directory / "best.keras", onnx_path, log=lambda *args, **kwargs: None)
    return model, onnx_path


def encode(array, fmt="PNG", mode=None):
    """`array` as the bytes of a `fmt` file, converted to Pillow mode `mode` first if given."""
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def sample_images(count, seed=0):
    """Images of assorted sizes, aspect ratios and modes (RGB, grayscale, RGBA, palette)."""
    rng = np.random.default_rng(seed)
    modes = [None, "L", "RGBA", "P"]
    out = []
    for i in range(count):
        h, w = rng.integers(20, 90, size=2)
        smooth = rng.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3)).astype(np.uint8)
        array = np.asarray(Image.fromarray(smooth).resize((int(w), int(h))))
        fmt = "JPEG" if i % 5 == 4 else "PNG"
        out.append(encode(array, fmt, None if fmt == "JPEG" else modes[i % 4]))
    return out


def tf_decode(blob):
    """TensorFlow's decoder; JPEG with the accurate integer IDCT, as Pillow (libjpeg) uses."""
    import tensorflow as tf

    if blob[:2] == b"\xff\xd8":
        return tf.io.decode_jpeg(blob, channels=3, dct_method="INTEGER_ACCURATE")
    return tf.io.decode_image(blob, channels=3, expand_animations=False)


def reference_probabilities(model, blobs):
    """TensorFlow decode + the data pipeline's resize/centre crop + the Keras model."""
    import tensorflow as tf

    from keras_alexnet.images import crop_tf

    crops = [
        crop_tf.center_crop(
            crop_tf.resize_shorter(tf_decode(b), METADATA.resize), METADATA.input_size
        )
        for b in blobs
    ]
    return np.asarray(model.predict_on_batch(tf.stack(crops)))


def assert_top5(answer, probabilities, atol=1e-4):
    """`answer` lists a correct top-5: true probabilities, descending, none left out."""
    assert len(answer) == 5
    got = [c["probability"] for c in answer]
    assert got == sorted(got, reverse=True)
    for c in answer:
        assert c["class"] == CLASSES[c["index"]]
        assert c["probability"] == pytest.approx(probabilities[c["index"]], abs=atol)
    sixth = np.sort(probabilities)[-6]
    assert min(got) >= sixth - atol


@contextlib.contextmanager
def running_server(model_path, *flags, log_dir):
    """Start scripts/serve.py on a free loopback port; yield its base URL; stop it."""
    cmd = [sys.executable, str(ROOT / "scripts/serve.py"), "--model", str(model_path), *flags]
    with open(log_dir / f"server-{time.monotonic_ns()}.log", "w+") as log:
        with local_server(cmd, timeout=60, output=log, cwd=ROOT) as url:
            yield url


def infer_body(x, nested=False, **extra):
    """A KServe v2 JSON infer request of `x` as "images", its data flat or `nested`."""
    data = x.tolist() if nested else x.ravel().tolist()
    return {
        "inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32", "data": data}],
        **extra,
    }


def post_json(url, body):
    """POST `body` as JSON to `url`; the response."""
    return httpx.post(url, content=json.dumps(body), timeout=30)


def reshape_model(path):
    """x [N, D] -> Reshape to [-1, 3]: onnxruntime fails at run time unless N*D % 3 == 0."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 3])
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    graph = helper.make_graph([node], "reshape", [x], [y], initializer=[shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


# --- imported weights (Keras, torchvision and Caffe files) ------------------------------

TOLERANCE = 1e-5  # relative error of an imported model from its source's own forward


def photo_like(count, height, width, seed=0):
    """RGB 0-255 images with structure: colour gradients, a disc, a bar, a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for _ in range(count):
        r, g, b = rng.uniform(0, 255, 3)
        image = np.stack(
            [r * x / width, g * y / height, b * (1 - x / width) * (1 - y / height)], axis=-1
        )
        cy, cx, radius = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width, height / 5
        image[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] = rng.uniform(0, 255, 3)
        top = int(rng.integers(0, height // 2))
        image[top : top + height // 8, width // 8 : width // 2] = rng.uniform(0, 255, 3)
        image += rng.normal(0, 4, image.shape)
        images.append(np.clip(image, 0, 255))
    return np.stack(images).astype(np.float32)


def crops_of(images, preset):
    """The centre crops both sides are fed: shorter side to `resize`, central square."""
    return np.stack([center_crop_resized(i, preset.resize, preset.input_size) for i in images])


# --- tiny trainings through the command (training, resume, workers) ----------------------

# A VGG A at 1/16 width on 32-pixel crops: the smallest run the train command makes.
TRAIN_FLAGS = ["--model", "vgg_a", "--width", "0.0625", "--image-size", "32", "--resize",
               "36", "--batch-size", "8", "--lr", "0.01", "--init", "he", "--scale",
               "0.0078"]  # fmt: skip


def run_train(args, env=None, **kwargs):
    """Run scripts/train.py in a subprocess with its own cache (`cache=`)."""
    full_env = {**os.environ, "KERAS_ALEXNET_CACHE": str(kwargs.pop("cache")), **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        env=full_env, capture_output=True, text=True, timeout=kwargs.pop("timeout", 300),
        cwd=ROOT,
    )  # fmt: skip


def read_checkpoint(directory):
    """Return {name: array} of every saved variable of the latest checkpoint in a directory."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(directory))
    skip = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n not in skip}


def history_epochs(run):
    """The epochs a run's history.csv lists, in order."""
    with open(run / "history.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]
