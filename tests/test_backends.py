"""The models on Keras's JAX and PyTorch backends compute what they compute on TensorFlow.

This process is the TensorFlow side: it builds every model at a tiny width with weights
drawn in NumPy, saves them as run directories and computes the references. JAX and
PyTorch run tests/backend_worker.py in their own processes (Keras fixes its backend at
import), on the same files and inputs, both at once and while this process computes.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_alexnet import optim, registry, runtime
from keras_alexnet.artifacts import KERAS_BEST, METADATA_FILENAME
from keras_alexnet.evaluation import evaluate_arrays, numpy_views
from keras_alexnet.export import relative_error
from keras_alexnet.images import crop_tf
from keras_alexnet.layers import GroupedConv2D, LocalResponseNormalization
from keras_alexnet.metadata import Metadata
from keras_alexnet.models import MODEL_NAMES, build_model, get_spec

WORKER = Path(__file__).with_name("backend_worker.py")
BACKENDS = ("jax", "torch")
TOLERANCE = 1e-5  # the bound on the relative error between backends
WIDTH = 1 / 16
# family: (crop, resize), each family's smallest input
SIZES = {name: (f.smallest_input, f.small_resize) for name, f in registry.FAMILIES.items()}
MEAN = (123.0, 117.0, 104.0)  # no scale: LRN sees activations large enough to matter
CLASSES = tuple("abcde")
FIT_DECAY = 0.5  # large enough that a wrong decay term shows after two steps
WORKER_TIMEOUT = 300


def _he_weights(model, rng):
    """Give `model` He-scaled Gaussian kernels and small random biases drawn from `rng`.

    A batch norm's variances are drawn positive, around one, as training leaves them.
    """
    weights = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        if len(shape) > 1:
            weights.append(rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape))
        elif variable.path.endswith("moving_variance"):
            weights.append(rng.uniform(0.5, 1.5, shape))
        else:
            weights.append(rng.normal(0, 0.1, shape))
    model.set_weights([w.astype("float32") for w in weights])
    return model


def _save_run(model, directory, name, crop, resize):
    """Save `model` as a run directory (best.keras and its metadata.json)."""
    directory.mkdir(parents=True)
    model.save(directory / KERAS_BEST)
    metadata = Metadata(
        model=name, class_names=CLASSES, input_size=crop, resize=resize, mean=MEAN,
        protocol=get_spec(name).protocol,
    )  # fmt: skip
    metadata.save(directory / METADATA_FILENAME)


def _tiny(name, **kwargs):
    """Model `name` at WIDTH and the family's tiny crop, with logits out."""
    crop, _ = SIZES[get_spec(name).family]
    return build_model(
        name, classes=len(CLASSES), width=WIDTH, input_shape=(crop, crop, 3), mean=MEAN,
        classifier_activation=None, **kwargs,
    )  # fmt: skip


def _layer_inputs(rng):
    """Inputs, weights and output cotangents of both layers' gradient checks."""
    return {
        "gconv_x": rng.normal(size=(2, 9, 9, 4)),
        "gconv_kernel": rng.normal(size=(3, 3, 2, 6)),
        "gconv_bias": rng.normal(size=(6,)),
        "gconv_cot": rng.normal(size=(2, 5, 5, 6)),
        "lrn_x": rng.normal(0, 30, size=(2, 5, 5, 8)),  # large: the denominator matters
        "lrn_cot": rng.normal(size=(2, 5, 5, 8)),
    }


def _tf_gradients(data):
    """The TensorFlow backend's gradients of the layer checks (the references)."""
    conv = GroupedConv2D(6, 3, strides=2, padding="same", groups=2)
    conv.build(data["gconv_x"].shape)
    conv.set_weights([data["gconv_kernel"], data["gconv_bias"]])
    lrn = LocalResponseNormalization(groups=2)
    out = {}
    for key, layer in (("gconv", conv), ("lrn", lrn)):
        x = tf.constant(data[f"{key}_x"])
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * data[f"{key}_cot"])
        grads = tape.gradient(loss, [x, *layer.trainable_variables])
        out.update({f"grad_{key}_{i}": g.numpy() for i, g in enumerate(grads)})
    return out


def _paper_loop(path, data):
    """Weights after train.py's update (coupled_weight_decay + SGD momentum), two steps."""
    model = keras.saving.load_model(path)
    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    for start in (0, 2):
        x, y = data["fit_x"][start : start + 2], data["fit_y"][start : start + 2]
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        grads = optim.coupled_weight_decay(grads, model.trainable_variables, FIT_DECAY)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return model.get_weights()


def _inputs(directory, rng):
    """Save the runs and the finetune model; return the inputs the workers share."""
    data = _layer_inputs(rng)
    for name in MODEL_NAMES:
        crop, resize = SIZES[get_spec(name).family]
        _save_run(
            _he_weights(_tiny(name), rng), directory / "tensorflow" / name, name, crop, resize
        )
        data[f"input_{name}"] = rng.uniform(0, 255, (2, crop, crop, 3))
    data["dense_input"] = rng.uniform(0, 255, (1, 99, 99, 3))
    data["eval_images"] = rng.integers(0, 256, (6, 80, 90, 3), dtype=np.uint8)
    data["eval_labels"] = rng.integers(0, len(CLASSES), 6)
    data["fit_x"] = rng.uniform(0, 255, (4, 67, 67, 3))
    data["fit_y"] = rng.integers(0, len(CLASSES), 4)
    data["fit_decay"] = np.array(FIT_DECAY)
    data = {k: v.astype("float32") if v.dtype == np.float64 else v for k, v in data.items()}
    _he_weights(_tiny("alexnet", dropout=0.0, scale=1 / 127.5), rng).save(
        directory / "finetune.keras"
    )
    np.savez(directory / "inputs.npz", **data)
    return data


def _references(directory, data):
    """What the TensorFlow backend computes for everything the workers compute."""
    reference = {}
    for name in MODEL_NAMES:
        reference[f"model_{name}"] = runtime.load(directory / "tensorflow" / name).predict(
            data[f"input_{name}"]
        )
    alexnet = runtime.load(directory / "tensorflow" / "alexnet")
    reference["dense_alexnet"] = alexnet.predict(data["dense_input"])
    reference["eval"] = evaluate_arrays(alexnet, data["eval_images"], data["eval_labels"])
    reference["fit"] = _paper_loop(directory / "finetune.keras", data)
    return {**reference, **_tf_gradients(data)}


def _environment(backend):
    """This process's environment with `backend` selected (JAX on its CPU platform)."""
    return {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}


def _start_workers(directory):
    """Start the JAX and PyTorch workers side by side; {backend: (process, its log)}."""
    workers = {}
    for backend in BACKENDS:
        log = open(directory / f"{backend}.log", "w")
        workers[backend] = subprocess.Popen(
            [sys.executable, str(WORKER), str(directory)], env=_environment(backend),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
        ), log  # fmt: skip
    return workers


def _finish_workers(directory, workers):
    """Once both saved their file, each loads the other's; return {backend: its results}."""
    try:
        for backend, (worker, _) in workers.items():
            saved = worker.stdout.readline().strip()
            assert saved == "saved", (directory / f"{backend}.log").read_text()[-3000:]
        jax, torch = (workers[b][0] for b in BACKENDS)
        jax.stdin.write(f"{directory / 'torch' / 'alexnet'}\n")  # JAX loads PyTorch's file
        jax.stdin.close()  # so the two load at once; JAX writes nothing more to its stdout
        torch.communicate(f"{directory / 'jax' / 'alexnet'}\n", timeout=WORKER_TIMEOUT)
        jax.wait(timeout=WORKER_TIMEOUT)
        for backend, (worker, _) in workers.items():
            log = (directory / f"{backend}.log").read_text()[-3000:]
            assert worker.returncode == 0, log
    finally:
        for worker, log in workers.values():
            if worker.poll() is None:
                worker.kill()
            log.close()
    return {b: dict(np.load(directory / f"{b}.npz")) for b in BACKENDS}


@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    """(inputs, TensorFlow's references, {backend: its results}, the directory)."""
    directory = tmp_path_factory.mktemp("backends")
    data = _inputs(directory, np.random.default_rng(0))
    workers = _start_workers(directory)  # they run while this process computes its side
    reference = _references(directory, data)
    return data, reference, _finish_workers(directory, workers), directory


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", [*MODEL_NAMES, "dense_alexnet"])
def test_models_compute_what_tensorflow_computes(sides, backend, name):
    _, reference, results, _ = sides
    key = name if name.startswith("dense") else f"model_{name}"
    assert relative_error(results[backend][key], reference[key]) <= TOLERANCE


@pytest.mark.parametrize("backend", BACKENDS)
def test_grouped_conv_and_lrn_gradients_equal_tensorflow(sides, backend):
    _, reference, results, _ = sides
    keys = [k for k in reference if k.startswith("grad_")]
    assert sorted(keys) == sorted(k for k in results[backend] if k.startswith("grad_"))
    for key in keys:
        assert relative_error(results[backend][key], reference[key]) <= TOLERANCE, key


@pytest.mark.parametrize("backend", [*BACKENDS, "tensorflow"])
def test_fit_with_compile_paper_applies_the_papers_coupled_decay(sides, backend):
    data, reference, results, directory = sides
    if backend == "tensorflow":
        model = keras.saving.load_model(directory / "finetune.keras")
        optim.compile_paper(model, lr=0.01, weight_decay=FIT_DECAY, from_logits=True)
        model.fit(data["fit_x"], data["fit_y"], batch_size=2, shuffle=False, verbose=0)
        weights = model.get_weights()
    else:
        weights = [results[backend][f"fit_{i}"] for i in range(len(reference["fit"]))]
    for got, want in zip(weights, reference["fit"], strict=True):
        assert relative_error(got, want) <= TOLERANCE


def test_keras_files_saved_on_each_backend_load_on_the_others(sides):
    data, reference, results, directory = sides
    want = reference["model_alexnet"]
    for saved in BACKENDS:  # loaded here, on TensorFlow
        got = runtime.load(directory / saved / "alexnet").predict(data["input_alexnet"])
        assert relative_error(got, want) <= TOLERANCE, saved
    # PyTorch loaded JAX's file, then JAX loaded PyTorch's.
    for backend in BACKENDS:
        assert relative_error(results[backend]["other_0"], want) <= TOLERANCE, backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluate_arrays_scores_like_tensorflow(sides, backend):
    _, reference, results, _ = sides
    assert float(results[backend]["eval_top1"]) == reference["eval"]["top1"]
    assert float(results[backend]["eval_top5"]) == reference["eval"]["top5"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "part", ["savedmodel", "onnx_export", "savedmodel_export", "evaluate", "train_step", "train"]
)
def test_tensorflow_only_parts_refuse_in_one_line(sides, backend, part):
    message = str(sides[2][backend][f"error_{part}"])
    assert message.startswith("BackendError: ") and "\n" not in message
    assert f"runs Keras on '{backend}': set KERAS_BACKEND=tensorflow" in message


@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_imports_tensorflow_on_another_backend(sides, backend):
    assert not bool(sides[2][backend]["tensorflow_imported"])


@pytest.mark.parametrize("views", ["center", "ten_crop", "dense"])
def test_numpy_views_equal_the_tf_data_views(views):
    image = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    resized = crop_tf.resize_shorter(tf.constant(image), 40)
    expected = {
        "center": lambda: crop_tf.center_crop(resized, 32)[None],
        "ten_crop": lambda: crop_tf.ten_crop(resized, 32),
        "dense": lambda: crop_tf.dense_views(resized),
    }[views]().numpy()
    got = numpy_views(image, views, 40, 32)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)


BENCH_GPU = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
BENCH_TINY = ["--steps", "2", "--warmup", "1", "--batch", "2", "--size", "67", "--width", "0.0625"]
# Runs a script where `import tensorflow` fails, as on the GPU machines (JAX, PyTorch, Keras).
WITHOUT_TENSORFLOW = (
    "import runpy, sys; sys.modules['tensorflow'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _bench_gpu(*flags):
    """Run bench_gpu.py at a tiny size on the CPU without TensorFlow; return its stdout."""
    command = [sys.executable, "-c", WITHOUT_TENSORFLOW, str(BENCH_GPU), *BENCH_TINY, *flags]
    done = subprocess.run(
        command, env=_environment("jax"), capture_output=True, text=True, timeout=WORKER_TIMEOUT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _table_rows(stdout):
    """{(model, workload, precision): [cells]} of the printed table."""
    rows = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| ")]
    return {tuple(c.strip() for c in row[:3]): [c.strip() for c in row[3:]] for row in rows[1:]}


def test_bench_gpu_measures_keras_jax_and_pytorch_without_tensorflow():
    # One model and no torch.compile keep it quick; VGG D runs the same code.
    rows = _table_rows(_bench_gpu("--models", "alexnet", "--no-compile"))
    assert set(rows) == {("alexnet", w, p) for w in ("train", "infer") for p in ("fp32", "bf16")}
    for cells in rows.values():
        keras_jax, eager, compiled, jax_over_eager, jax_over_compile = cells
        keras_jax, eager = (float(c.replace(",", "")) for c in (keras_jax, eager))
        assert keras_jax > 0 and eager > 0
        # The cells are rounded to 0.1 img/s, the ratio is computed before rounding.
        assert float(jax_over_eager.removesuffix("x")) == pytest.approx(keras_jax / eager, rel=0.1)
        assert compiled == jax_over_compile == "-"  # --no-compile
