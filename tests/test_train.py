import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_alexnet.train import coupled_weight_decay

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "vgg_a", "--width", "0.0625", "--image-size", "32", "--resize", "36",
        "--batch-size", "8", "--lr", "0.01", "--init", "he", "--scale", "0.0078"]  # fmt: skip


@pytest.fixture(scope="module")
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


def run_train(args, env=None, **kwargs):
    """Run scripts/train.py in a subprocess."""
    full_env = {**os.environ, "KERAS_ALEXNET_CACHE": str(kwargs.pop("cache")), **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        env=full_env, capture_output=True, text=True, timeout=kwargs.pop("timeout", 300),
        cwd=ROOT,
    )  # fmt: skip


def read_checkpoint(directory):
    """Return {name: array} of every saved variable of the latest checkpoint in a directory."""
    reader = tf.train.load_checkpoint(str(directory))
    skip = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n not in skip}


def test_sgd_step_is_the_papers_update_rule():
    # AlexNet Section 5: v <- 0.9 v - 0.0005 lr w - lr grad; w <- w + v.
    lr, wd, mu = 0.1, 0.0005, 0.9
    w = keras.Variable(np.array([[1.0, -2.0], [0.5, 3.0]], "float32"), name="kernel")
    b = keras.Variable(np.array([0.3, -0.1], "float32"), name="bias")
    optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=mu)
    grads = [np.array([[0.2, 0.1], [-0.3, 0.4]], "float32"), np.array([1.0, -1.0], "float32")]
    w_ref, b_ref = np.array(w.numpy()), np.array(b.numpy())
    v_w, v_b = np.zeros_like(w_ref), np.zeros_like(b_ref)
    for _ in range(3):
        decayed = coupled_weight_decay([tf.constant(g) for g in grads], [w, b], wd)
        optimizer.apply_gradients(zip(decayed, [w, b], strict=True))
        v_w = mu * v_w - wd * lr * w_ref - lr * grads[0]
        w_ref = w_ref + v_w
        v_b = mu * v_b - lr * grads[1]  # biases are not decayed
        b_ref = b_ref + v_b
    np.testing.assert_allclose(w.numpy(), w_ref, rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), b_ref, rtol=1e-6)


MIRRORED_CHECK = """
import json, numpy as np, keras, tensorflow as tf
from keras_alexnet.models import build_model
from keras_alexnet.train import configure_devices, make_strategy, make_train_step
configure_devices("mirrored", 2)
mirrored = make_strategy("mirrored", 2)
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
y = rng.integers(0, 4, 8).astype("int32")
def build():
    model = build_model("vgg_a", input_shape=(32, 32, 3), width=1 / 16, classes=4, seed=0,
                        dropout=0.0, classifier_activation=None, init="he", mean=(120,) * 3,
                        scale=1 / 127.5)
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    optimizer.build(model.trainable_variables)
    return model, optimizer
with mirrored.scope():
    m2, o2 = build()
step2 = make_train_step(mirrored, m2, o2, 8, 5e-4)
data = mirrored.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(8))
for _ in range(2):
    for xb, yb in data:
        step2(xb, yb)
m1, o1 = build()
step1 = make_train_step(tf.distribute.get_strategy(), m1, o1, 8, 5e-4)
for _ in range(2):
    step1(tf.constant(x), tf.constant(y))
replica_gap = max(float(np.abs(v.value.values[0].numpy() - v.value.values[1].numpy()).max())
                  for v in m2.trainable_variables)
single_gap = max(float(np.abs(a - b).max()) for a, b in zip(m1.get_weights(), m2.get_weights()))
moved = max(float(np.abs(a - b).max()) for a, b in zip(m1.get_weights(), build()[0].get_weights()))
print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "replica_gap": replica_gap,
                  "single_gap": single_gap, "moved": moved}))
"""


def test_mirrored_replicas_all_reduce_to_the_single_device_step():
    out = subprocess.run(
        [sys.executable, "-c", MIRRORED_CHECK], capture_output=True, text=True, timeout=240,
        cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["replica_gap"] == 0.0  # both replicas hold the same weights
    assert result["moved"] > 1e-3  # the steps did change the weights
    # ... and equal one device on the whole global batch, up to float32 summation order.
    assert result["single_gap"] < 0.01 * result["moved"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_on_loopback_end_with_identical_weights(tiny_data, tmp_path):
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config),
               "KERAS_ALEXNET_CACHE": str(tmp_path / f"cache{index}")}  # fmt: skip
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "scripts" / "train.py"),
                    *TINY,
                    "--data",
                    str(tiny_data),
                    "--strategy",
                    "multi_worker",
                    "--epochs",
                    "1",
                    "--steps-per-epoch",
                    "3",
                    "--output",
                    str(tmp_path / "run"),
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        )
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    chief = read_checkpoint(tmp_path / "run" / "checkpoints")
    other = read_checkpoint(tmp_path / "run" / ".worker-1")
    assert chief.keys() == other.keys() and len(chief) > 20
    for name in chief:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    assert (tmp_path / "run" / "best.keras").exists()


def history_epochs(run):
    with open(run / "history.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_rerun_resumes(tiny_data, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--data", str(tiny_data), "--epochs", "3", "--checkpoint-every", "1",
            "--output", str(run)]  # fmt: skip
    env = {**os.environ, "KERAS_ALEXNET_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 240
    while not list((run / "checkpoints").glob("ckpt-2.index")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list((run / "checkpoints").glob("ckpt-*.index")), "no checkpoint before the kill"
    resumed = run_train(args, cache=tmp_path / "cache")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout
    assert history_epochs(run) == [1, 2, 3]
    assert (run / "best.keras").exists() and (run / "metadata.json").exists()
    command = json.loads((run / "command.json").read_text())
    assert command["versions"]["tensorflow"] == tf.__version__


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tiny_data, tmp_path):
    common = [*TINY, "--data", str(tiny_data), "--deterministic", "--checkpoint-every", "2",
              "--steps-per-epoch", "3"]  # fmt: skip
    whole = run_train([*common, "--epochs", "2", "--output", str(tmp_path / "a")],
                      cache=tmp_path / "c")  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = run_train([*common, "--epochs", "1", "--output", str(tmp_path / "b")],
                      cache=tmp_path / "c")  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_train([*common, "--epochs", "2", "--output", str(tmp_path / "b")],
                       cache=tmp_path / "c")  # fmt: skip
    assert second.returncode == 0 and "Resumed from" in second.stdout
    a, b = (
        read_checkpoint(tmp_path / "a" / "checkpoints"),
        read_checkpoint(tmp_path / "b" / "checkpoints"),
    )
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert history_epochs(tmp_path / "b") == [1, 2]


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_data, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--data", str(tiny_data), "--epochs", "2", "--output", str(run),
            "--steps-per-epoch", "2"]  # fmt: skip
    assert run_train(args, cache=tmp_path / "c").returncode == 0
    before = read_checkpoint(run / "checkpoints")
    huge = [a if a != "0.01" else "1e30" for a in args]
    out = run_train([*huge, "--epochs", "3"], cache=tmp_path / "c")
    assert out.returncode != 0
    assert "loss became nan" in out.stderr.lower() or "loss became inf" in out.stderr.lower()
    assert "Traceback" not in out.stderr
    after = read_checkpoint(run / "checkpoints")
    assert all(np.array_equal(before[n], after[n]) for n in before)


def test_bad_arguments_are_one_line_errors(tmp_path):
    out = run_train(["--model", "vgg_a", "--image-size", "300"], cache=tmp_path / "c")
    assert out.returncode != 0 and "larger than the resize size" in out.stderr
    assert "Traceback" not in out.stderr
