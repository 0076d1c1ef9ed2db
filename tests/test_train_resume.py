"""Crash-safe training: kills, interruptions, NaN losses and lost workers, then resumes.

Mirrored replicas and two multi-worker processes on loopback ports, each against the run
it should equal: a step on one device, a run never interrupted, the checkpoint it kept.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, TRAIN_FLAGS, history_epochs, read_checkpoint, run_train

from keras_alexnet.serving.local import free_port

MIRRORED_CHECK = """
import json, numpy as np, keras, tensorflow as tf
from keras_alexnet.models import build_model
from keras_alexnet.distribute import configure_devices, make_strategy
from keras_alexnet.optim import make_train_step
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


@pytest.mark.slow
def test_two_workers_on_loopback_end_with_identical_weights(tiny_data, tmp_path):
    args = [*TRAIN_FLAGS, "--data", str(tiny_data), "--epochs", "1", "--steps-per-epoch", "3",
            "--output", str(tmp_path / "run")]  # fmt: skip
    for returncode, out, err in finish_workers(start_workers(args, tmp_path)[0]):
        assert returncode == 0, (out + err)[-3000:]
    chief = read_checkpoint(tmp_path / "run" / "checkpoints")
    other = read_checkpoint(tmp_path / "run" / ".worker-1")
    assert chief.keys() == other.keys() and len(chief) > 20
    for name in chief:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    assert (tmp_path / "run" / "best.keras").exists()


def start_workers(args, tmp_path, cache="cache"):
    """Popen two `scripts/train.py --strategy multi_worker` workers on loopback ports."""
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config),
               "KERAS_ALEXNET_CACHE": str(tmp_path / f"{cache}{index}")}  # fmt: skip
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "train.py"), *args, "--strategy",
             "multi_worker"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    return procs, workers


def finish_workers(procs, timeout=300):
    """[(returncode, stdout, stderr)] of each worker once it exits."""
    outputs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]


# What the chief's CollectiveReduceV2 raised here when worker 1 was killed (abridged).
LOST_TASK_1 = (
    "{{function_node __wrapped__CollectiveReduceV2_Nordering_token_1_device_/job:worker/"
    "replica:0/task:0/device:CPU:0}} Collective ops is aborted by: Error reported from "
    "/job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):\n"
    "/job:worker/replica:0/task:1\nThe tasks have crashed. [...] Restart your program to "
    "reset. [Op:CollectiveReduceV2] name: "
)


def test_a_lost_workers_message_names_it_and_the_checkpoint_to_resume_from(tmp_path):
    from keras_alexnet.distribute import lost_worker_message

    cluster = {"worker": ["10.0.0.1:2222", "10.0.0.2:2222", "10.0.0.3:2222"]}
    chief = {"cluster": cluster, "task": {"type": "worker", "index": 0}}
    assert lost_worker_message(LOST_TASK_1, chief, tmp_path) == (
        "worker 1 at 10.0.0.2:2222 stopped answering before the first checkpoint; stopped. "
        "Start every worker again with the same command (the run starts over)"
    )
    epoch, step = tf.Variable(2, dtype=tf.int64), tf.Variable(3, dtype=tf.int64)
    tf.train.Checkpoint(epoch=epoch, step_in_epoch=step).save(str(tmp_path / "ckpt"))
    message = lost_worker_message(LOST_TASK_1, chief, tmp_path)
    assert message == (
        "worker 1 at 10.0.0.2:2222 stopped answering during epoch 3; stopped. The run "
        f"resumes from its last checkpoint, {tmp_path / 'ckpt-1'} (epoch 3, step 3): start "
        "every worker again with the same command"
    )
    # A worker that lost the chief names it as such; an error naming nobody names the others.
    other = {"cluster": cluster, "task": {"type": "worker", "index": 2}}
    lost_chief = "Error reported from /job:worker/replica:0/task:0: connection refused"
    assert lost_worker_message(lost_chief, other, tmp_path).startswith(
        "worker 0 (the chief) at 10.0.0.1:2222 stopped answering during epoch 3"
    )
    assert lost_worker_message("Deadline Exceeded", other, tmp_path).startswith(
        "worker 0 (the chief) at 10.0.0.1:2222, worker 1 at 10.0.0.2:2222 stopped answering"
    )


@pytest.mark.slow
def test_a_lost_worker_is_one_line_and_restarting_every_worker_resumes_the_run(tiny_data, tmp_path):
    common = [*TRAIN_FLAGS, "--data", str(tiny_data), "--epochs", "3", "--steps-per-epoch", "4",
              "--deterministic"]  # fmt: skip
    whole = start_workers([*common, "--output", str(tmp_path / "whole")], tmp_path)[0]
    whole = finish_workers(whole)
    assert all(rc == 0 for rc, _, _ in whole), whole[0][2][-3000:]
    run = tmp_path / "run"
    procs, workers = start_workers([*common, "--output", str(run)], tmp_path)
    deadline = time.time() + 240
    ends = [run / "checkpoints" / "ckpt-1.index", run / ".worker-1" / "ckpt-1.index"]
    while not all(p.exists() for p in ends) and time.time() < deadline:
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)  # worker 1 dies in epoch 2, after both saved epoch 1
    (code, _, err), _ = finish_workers(procs)
    assert all(p.exists() for p in ends), "no checkpoint before the kill"
    # The chief stops by itself, in one line: who, where the run resumes, how.
    assert code != 0 and "Traceback" not in err and "CollectiveReduce" not in err, err[-3000:]
    message = err.strip().splitlines()[-1]
    assert f"worker 1 at {workers[1]} stopped answering during epoch 2" in message
    assert f"{run / 'checkpoints' / 'ckpt-1'} (epoch 2, step 0)" in message
    assert message.endswith("start every worker again with the same command")
    # Doing so resumes, and the run ends as the one never interrupted.
    again = finish_workers(start_workers([*common, "--output", str(run)], tmp_path)[0])
    assert all(rc == 0 for rc, _, _ in again), again[0][2][-3000:]
    assert "Resumed from" in again[0][1]
    assert (run / "history.csv").read_text() == (tmp_path / "whole" / "history.csv").read_text()


@pytest.mark.slow
def test_workers_that_restored_different_checkpoints_stop_in_one_line(tiny_data, tmp_path):
    import shutil

    run = tmp_path / "run"
    common = [
        *TRAIN_FLAGS,
        "--data",
        str(tiny_data),
        "--steps-per-epoch",
        "2",
        "--output",
        str(run),
    ]
    first = finish_workers(start_workers([*common, "--epochs", "1"], tmp_path)[0])
    assert all(rc == 0 for rc, _, _ in first), first[0][2][-3000:]
    shutil.rmtree(run / ".worker-1")  # as if worker 1 had been lost before it saved
    (chief, _, chief_err), (worker, _, worker_err) = finish_workers(
        start_workers([*common, "--epochs", "2"], tmp_path)[0]
    )
    for code, err in ((chief, chief_err), (worker, worker_err)):
        assert code != 0 and "Traceback" not in err, err[-3000:]
        assert "the workers restored different checkpoints" in err.strip().splitlines()[-1]
    assert f"(this one {run / 'checkpoints' / 'ckpt-1'} (epoch 2, step 0))" in chief_err
    assert "(this one no checkpoint)" in worker_err
    assert history_epochs(run) == [1]  # nothing was trained from the mismatched start
    # The advice works: the chief's checkpoints copied to the worker, the run resumes.
    shutil.copytree(run / "checkpoints", run / ".worker-1", dirs_exist_ok=True)
    again = finish_workers(start_workers([*common, "--epochs", "2"], tmp_path)[0])
    assert all(rc == 0 for rc, _, _ in again), again[1][2][-3000:]
    assert "Resumed from" in again[1][1]
    assert history_epochs(run) == [1, 2]


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_rerun_resumes(tiny_data, tmp_path):
    run = tmp_path / "run"
    args = [*TRAIN_FLAGS, "--data", str(tiny_data), "--epochs", "3", "--checkpoint-every", "1",
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
    common = [*TRAIN_FLAGS, "--data", str(tiny_data), "--deterministic", "--checkpoint-every", "2",
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


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_data, tmp_path):
    run = tmp_path / "run"
    args = [*TRAIN_FLAGS, "--data", str(tiny_data), "--epochs", "2", "--output", str(run),
            "--steps-per-epoch", "2"]  # fmt: skip
    assert run_train(args, cache=tmp_path / "c").returncode == 0
    before = read_checkpoint(run / "checkpoints")
    # Resuming with another --lr rescales the rate; this one diverges in epoch 3.
    huge = [a if a != "0.01" else "1e30" for a in args]
    out = run_train([*huge, "--epochs", "3"], cache=tmp_path / "c")
    assert out.returncode != 0
    assert "replaces 0.01" in out.stdout
    assert "  --lr 1e+30 replaces 0.01" in out.stdout  # the command's log names the flag
    message = out.stderr.strip()
    assert "loss became nan" in message.lower() or "loss became inf" in message.lower()
    assert "ckpt-2" in message and "Traceback" not in out.stderr and len(message.splitlines()) == 1
    after = read_checkpoint(run / "checkpoints")
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[n], after[n]) for n in before)
    assert history_epochs(run) == [1, 2]
    # The advice in the message works: a lower --lr resumes from the kept checkpoint.
    again = run_train([*args, "--epochs", "3", "--lr", "0.005"], cache=tmp_path / "c")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resumed from" in again.stdout and "ckpt-2" in again.stdout
    assert history_epochs(run) == [1, 2, 3]
