"""tf.distribute: strategies by name, logical CPU replicas, a process's role in a cluster."""

import os

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
            raise TrainingError("--strategy multi_worker needs TF_CONFIG (see README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainingError(f"strategy must be one of {STRATEGIES}. Received: {name!r}")


def cluster_role(strategy):
    """(is_chief, worker index) of this process in a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", 0) or 0
    is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0)
    return is_chief, task_id
