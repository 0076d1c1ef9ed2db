"""tf.distribute: strategies by name, logical CPU replicas, a process's role in a cluster."""

import contextlib
import json
import os
import re

from keras_alexnet.train_config import STRATEGIES, TrainingError


def configure_devices(strategy_name, cpu_replicas):
    """Split the CPU into logical devices for a CPU-only mirrored run; call before TF starts."""
    import tensorflow as tf

    if strategy_name != "mirrored" or tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas
        )
    except RuntimeError as e:  # devices already initialised in this process
        current = len(tf.config.list_logical_devices("CPU"))
        if current != cpu_replicas:
            raise TrainingError(
                f"cannot split the CPU into {cpu_replicas} devices after TensorFlow started "
                f"({current} exist): {e}"
            ) from None


def make_strategy(name, cpu_replicas=2):
    """Return the tf.distribute strategy for a name in STRATEGIES."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        configure_devices(name, cpu_replicas)
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        if not gpus:
            devices = devices[:cpu_replicas]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise TrainingError(
                "`strategy` multi_worker needs TF_CONFIG (see docs/training.md, Distribution)"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainingError(f"strategy must be one of {STRATEGIES}. Received: {name!r}")


def cluster_role(strategy):
    """(is_chief, worker index) of this process in a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", 0) or 0
    is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0)
    return is_chief, task_id


# A task as TensorFlow names it in a collective's error ("/job:worker/replica:0/task:1").
TASK_NAME = re.compile(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)")
# What a worker's collective ops raise once a peer stops: UnavailableError ("stopped sending
# heartbeats"), or DeadlineExceeded / Internal / Cancelled / Aborted ("Restart your program
# to reset"); the worker cannot go on, the run resumes from its checkpoints.
PEER_ERRORS = (
    "UnavailableError",
    "DeadlineExceededError",
    "InternalError",
    "CancelledError",
    "AbortedError",
)


def lost_peers(message, cluster, me):
    """[(job, index, address)] of the cluster's other tasks an error names; all others if none."""
    others = [
        (job, index, address)
        for job, addresses in cluster.items()
        for index, address in enumerate(addresses)
        if (job, index) != me
    ]
    named = {(job, int(index)) for job, index in TASK_NAME.findall(str(message))}
    return [task for task in others if task[:2] in named] or others


def _describe(job, index, address):
    """How a task reads in a message: `worker 1 (host:port)`, the chief named as such."""
    chief = " (the chief)" if job == "chief" or (job == "worker" and index == 0) else ""
    return f"{job} {index}{chief} at {address}"


def _checkpoint_position(directory):
    """(checkpoint path, epoch, step) of the latest checkpoint in a directory, or None."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(directory))
    if latest is None:
        return None
    try:
        reader = tf.train.load_checkpoint(latest)
        epoch = int(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"))
        step = int(reader.get_tensor("step_in_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    except (ValueError, KeyError, tf.errors.OpError):
        return latest, None, None
    return latest, epoch, step


def lost_worker_message(error, tf_config, checkpoints):
    """The one line for a multi-worker run one of whose workers stopped answering."""
    task = tf_config.get("task", {})
    me = (task.get("type", "worker"), int(task.get("index", 0)))
    peers = lost_peers(error, tf_config.get("cluster", {}), me)
    who = ", ".join(_describe(*peer) for peer in peers) or "another worker"
    position = _checkpoint_position(checkpoints)
    if position is None:
        return (
            f"{who} stopped answering before the first checkpoint; stopped. Start every "
            "worker again with the same command (the run starts over)"
        )
    latest, epoch, step = position
    where = f" (epoch {epoch + 1}, step {step})" if epoch is not None else ""
    during = f" during epoch {epoch + 1}" if epoch is not None else ""
    return (
        f"{who} stopped answering{during}; stopped. The run resumes from its last checkpoint, "
        f"{latest}{where}: start every worker again with the same command"
    )


@contextlib.contextmanager
def lost_worker(strategy, checkpoints):
    """Turn a multi-worker collective's failure into a TrainingError naming the lost worker."""
    import tensorflow as tf

    errors = tuple(getattr(tf.errors, name) for name in PEER_ERRORS)
    try:
        yield
    except errors as e:
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        raise TrainingError(lost_worker_message(e, tf_config, checkpoints)) from None


def check_same_start(strategy, epoch, step, checkpoints):
    """Raise TrainingError unless every worker of a multi-worker run resumes at epoch, step.

    Each worker restores its own checkpoints; a worker lost while they saved can leave them
    one checkpoint apart, and workers that start from different weights would train on
    silently (the all-reduced gradients keep the difference).
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    mine = tf.constant([float(epoch), float(step)], tf.float64)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: mine), axis=None)
    if list(total.numpy()) == [strategy.num_replicas_in_sync * float(v) for v in mine.numpy()]:
        return
    latest = tf.train.latest_checkpoint(str(checkpoints))
    here = f"{latest} (epoch {epoch + 1}, step {step})" if latest else "no checkpoint"
    raise TrainingError(
        f"the workers restored different checkpoints (this one {here}): a worker was lost "
        "while they saved. Copy the chief's <output>/checkpoints over every worker's "
        "<output>/.worker-<index>, then start every worker again with the same command"
    )
