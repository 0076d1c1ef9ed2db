"""Training under tf.distribute with the papers' recipes, crash-safe checkpoints and resume.

One custom loop (`strategy.run`) serves every strategy: Keras 3.15's `fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585), and an explicit loop also makes
mid-epoch checkpoints and exact resume straightforward.
"""

import csv
import dataclasses
import io
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from keras_alexnet import __version__, fileio
from keras_alexnet.metadata import FILENAME as METADATA_FILENAME
from keras_alexnet.metadata import Metadata

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker")
SCHEDULES = ("plateau", "step", "cosine")
HISTORY_FIELDS = ("epoch", "loss", "top1", "val_top1", "val_top5", "lr")
# The demo set (8x8 digits, 1,615 train / 182 val) differs from ImageNet, so its defaults do:
# the paper's init on mean-subtracted 0-255 pixels stays at chance and He init on 0-255 gives
# NaN, but He init on pixels scaled to about [-1, 1] trains (SPEC section 3); 8x8 images carry
# nothing a 227 crop could use, and AlexNet's full size runs at ~3 img/s with 2 CPU replicas,
# so the demo crops 67 (AlexNet's smallest input; VGG 32) from 76 (36); and a mirrored digit is
# often no digit, so no reflections.
DEMO_OVERRIDES = {"init": "he", "scale": 1 / 127.5, "epochs": 4, "batch_size": 32, "flip": False}
DEMO_SIZES = {"alexnet": (67, 76), "vgg": (32, 36)}  # family: (crop, resize)


class TrainingError(RuntimeError):
    """A run that cannot go on (NaN loss, bad arguments); the message says why."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; None fields take the paper's (or the demo's) defaults."""

    model: str = "alexnet"
    data: str | None = None
    data_dir: str | None = None
    output: str | None = None
    strategy: str = "default"
    cpu_replicas: int = 2
    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "plateau"
    plateau_patience: int = 1
    max_lr_drops: int = 3
    step_epochs: int = 30
    init: str | None = None
    scale: float | None = None
    resize: tuple[int, int] | None = None
    image_size: int | None = None
    width: float = 1.0
    mixed_precision: bool = False
    seed: int = 0
    deterministic: bool = False
    steps_per_epoch: int | None = None
    val_steps: int | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    pca_lighting: bool = True
    flip: bool | None = None
    val_fraction: float = 0.1
    cache: str | None = None

    def resolved(self, spec):
        """Return a copy with every None default filled in from the paper or the demo."""
        fill = {
            "epochs": spec.epochs,
            "batch_size": spec.batch_size,
            "init": "paper",
            "scale": 1.0,
            "flip": True,
            "resize": (spec.resize, spec.resize),
            "image_size": spec.input_size,
            "output": str(Path("runs") / spec.name),
        }
        if self.data is None:
            crop, resize = DEMO_SIZES[spec.family]
            fill.update(DEMO_OVERRIDES, image_size=crop, resize=(resize, resize))
        return dataclasses.replace(
            self, **{k: v for k, v in fill.items() if getattr(self, k) is None}
        )


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


def learning_rate_for(config, epoch):
    """The scheduled learning rate of `epoch` for the stateless schedules (step, cosine)."""
    if config.lr_schedule == "step":
        return config.lr * 0.1 ** min(epoch // config.step_epochs, config.max_lr_drops)
    if config.lr_schedule == "cosine":
        return 0.5 * config.lr * (1 + math.cos(math.pi * epoch / max(1, config.epochs)))
    return None


class Plateau:
    """AlexNet Section 5: divide the rate by 10 when the validation error stops improving.

    The paper did it three times; the state lives in tf.Variables so checkpoints keep it.
    """

    def __init__(self, patience, max_drops):
        import tensorflow as tf

        self.patience, self.max_drops = patience, max_drops
        self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="plateau_best")
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_wait")
        self.drops = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_drops")

    def update(self, val_top1):
        """Record an epoch's validation top-1; return True when the rate must drop."""
        if val_top1 > float(self.best.numpy()):
            self.best.assign(val_top1)
            self.wait.assign(0)
            return False
        self.wait.assign_add(1)
        if int(self.wait.numpy()) >= self.patience and int(self.drops.numpy()) < self.max_drops:
            self.wait.assign(0)
            self.drops.assign_add(1)
            return True
        return False


def coupled_weight_decay(grads, variables, weight_decay):
    """Add `weight_decay * w` to each kernel's gradient: the paper's update rule.

    AlexNet Section 5: v <- 0.9 v - 0.0005 lr w - lr grad; w <- w + v. With SGD momentum
    that is an L2 term through the gradient (coupled with momentum), not Keras's
    decoupled `weight_decay`. Biases are not decayed (as in Caffe's reference nets).
    """
    if isinstance(weight_decay, (int, float)) and not weight_decay:
        return list(grads)
    return [
        g + weight_decay * v if _is_kernel(v) else g for g, v in zip(grads, variables, strict=True)
    ]


def _is_kernel(variable):
    """Whether a variable is a conv/dense kernel (decayed) rather than a bias."""
    return (
        variable.path.endswith("kernel") if hasattr(variable, "path") else "kernel" in variable.name
    )


def make_train_step(strategy, model, optimizer, global_batch, weight_decay, loss_scaling=False):
    """Return a tf.function running one SGD step on every replica; it returns (loss sum, hits).

    Cross-entropy on logits averaged over the global batch; the optimizer all-reduces
    the replicas' gradients, so every replica applies the same update.
    """
    import keras
    import tensorflow as tf

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            per_example = keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            scaled = optimizer.scale_loss(loss) if loss_scaling else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        # Scaled gradients get a scaled decay term: the optimizer divides both by the scale.
        decay = weight_decay * optimizer.dynamic_scale if loss_scaling else weight_decay
        grads = coupled_weight_decay(grads, model.trainable_variables, decay)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        hits = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        )
        return loss * tf.cast(global_batch, tf.float32), hits

    @tf.function
    def step(images, labels):
        loss, hits = strategy.run(replica_step, args=(images, labels))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None),
        )

    return step


def versions():
    """Versions of the software a run used, for command.json."""
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_alexnet": __version__,
        "numpy": np.__version__,
    }


class RunDirectory:
    """The files of a run: checkpoints, best model, metadata, history, logs, command."""

    def __init__(self, path, is_chief=True, worker_id=0):
        self.path = Path(path)
        self.is_chief = is_chief
        # Non-chief workers must write their checkpoints too (collective ops), elsewhere.
        self.checkpoints = (
            self.path / "checkpoints" if is_chief else self.path / f".worker-{worker_id}"
        )
        self.history = self.path / "history.csv"
        self.best = self.path / "best.keras"
        self.metadata = self.path / METADATA_FILENAME
        self.tensorboard = self.path / "tensorboard"

    def read_history(self):
        """Return the history rows (dicts), or [] when there is none."""
        if not self.history.exists():
            return []
        with open(self.history, newline="") as f:
            return list(csv.DictReader(f))

    def write_history(self, rows):
        """Rewrite history.csv atomically (chief only)."""
        if not self.is_chief:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        fileio.write_text(self.history, buffer.getvalue())


def train(config, *, argv=None, log=print):
    """Train `config.model` on `config.data`; return a dict of the final results.

    Re-running with the same output directory resumes from its latest checkpoint.
    """
    from keras_alexnet.models import get_spec

    spec = get_spec(config.model)
    config = config.resolved(spec)
    _check_config(config)
    if config.strategy == "mirrored":
        configure_devices("mirrored", config.cpu_replicas)

    import keras
    import tensorflow as tf

    from keras_alexnet.data import eval_dataset, load_source, train_dataset
    from keras_alexnet.models import build_model

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = make_strategy(config.strategy, config.cpu_replicas)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise TrainingError(
            f"--batch-size {config.batch_size} does not split evenly over "
            f"{strategy.num_replicas_in_sync} replicas"
        )
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", 0) or 0
    is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0)
    run = RunDirectory(config.output, is_chief, task_id)

    source = load_source(
        config.data, config.data_dir, val_fraction=config.val_fraction, seed=config.seed,
        cache=config.cache,
    )  # fmt: skip
    classes = len(source.class_names)
    metadata = Metadata(
        model=spec.name,
        class_names=tuple(source.class_names),
        input_size=config.image_size,
        resize=config.resize[0],
        mean=tuple(source.stats.mean),
        scale=config.scale,
        protocol=spec.protocol,
        data=config.data,
        data_dir=config.data_dir,
    )
    steps_per_epoch = source.num_train // config.batch_size
    if config.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch)
    if steps_per_epoch < 1:
        raise TrainingError(
            f"{source.num_train} training images make no batch of {config.batch_size}; "
            "lower --batch-size"
        )
    model_kwargs = {
        "classes": classes,
        "input_shape": (config.image_size, config.image_size, 3),
        "init": config.init,
        "width": config.width,
        "seed": config.seed,
        "mean": metadata.mean,
        "scale": config.scale,
    }
    with strategy.scope():
        model = build_model(spec.name, classifier_activation=None, **model_kwargs)
        optimizer = keras.optimizers.SGD(learning_rate=config.lr, momentum=config.momentum)
        if config.mixed_precision:
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        # The --lr the run was started with: a resume with another --lr rescales the rate.
        base_lr = tf.Variable(config.lr, dtype=tf.float64, trainable=False, name="base_lr")
        plateau = Plateau(config.plateau_patience, config.max_lr_drops)
    # Softmax twin outside the strategy: validation, and the saved best model.
    inference = build_model(spec.name, classifier_activation="softmax", **model_kwargs)

    # model.variables includes the dropout layers' seed-generator states, which the model
    # object alone does not expose to tf.train.Checkpoint: needed for an exact resume.
    checkpoint = tf.train.Checkpoint(
        model=model, model_state=list(model.variables), optimizer=optimizer,
        epoch=epoch_var, step_in_epoch=step_var, base_lr=base_lr,
        plateau_best=plateau.best, plateau_wait=plateau.wait, plateau_drops=plateau.drops,
    )  # fmt: skip
    manager = tf.train.CheckpointManager(
        checkpoint, str(run.checkpoints), max_to_keep=config.keep_checkpoints
    )
    history = []
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        history = [r for r in run.read_history() if int(r["epoch"]) <= int(epoch_var.numpy())]
        log(
            f"Resumed from {manager.latest_checkpoint}: epoch {int(epoch_var.numpy()) + 1}, "
            f"step {int(step_var.numpy())} of {steps_per_epoch}, "
            f"lr {float(_lr(optimizer).numpy()):.3g}"
        )
        started_lr = float(base_lr.numpy())
        if not math.isclose(started_lr, config.lr, rel_tol=1e-9):
            lr = _lr(optimizer)
            lr.assign(float(lr.numpy()) * config.lr / started_lr)
            base_lr.assign(config.lr)
            log(f"  --lr {config.lr:g} replaces {started_lr:g}: lr now {float(lr.numpy()):.3g}")
    elif is_chief:
        run.path.mkdir(parents=True, exist_ok=True)
        metadata.save(run.metadata)
        fileio.write_json(
            run.path / "command.json",
            {
                "argv": list(argv if argv is not None else sys.argv),
                "config": dataclasses.asdict(config),
                "versions": versions(),
            },
        )
    if is_chief and source.skipped:
        fileio.write_json(run.path / "skipped_files.json", dict(source.skipped))

    global_batch = config.batch_size
    distributed_step = make_train_step(
        strategy, model, optimizer, global_batch, config.weight_decay, config.mixed_precision
    )

    writer = tf.summary.create_file_writer(str(run.tensorboard)) if is_chief else None
    best_top1 = max((float(r["val_top1"]) for r in history), default=-1.0)
    started = time.time()
    result = {}
    while int(epoch_var.numpy()) < config.epochs:
        epoch = int(epoch_var.numpy())
        scheduled = learning_rate_for(config, epoch)
        if scheduled is not None:
            _lr(optimizer).assign(scheduled)
        skip = int(step_var.numpy())

        def dataset_fn(ctx, epoch=epoch, skip=skip):
            # Each input pipeline feeds num_replicas / num_pipelines per-replica batches a step.
            per_step = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            ds = train_dataset(
                source, image_size=config.image_size, resize=config.resize,
                batch_size=global_batch, seed=config.seed, epoch=epoch,
                pca_lighting=config.pca_lighting, flip=config.flip, input_context=ctx,
            )  # fmt: skip
            return ds.take(steps_per_epoch * per_step).skip(skip * per_step)

        dataset = strategy.distribute_datasets_from_function(dataset_fn)
        log(f"Epoch {epoch + 1}/{config.epochs} (lr {float(_lr(optimizer).numpy()):.3g})")
        bar = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["loss", "top1"])
        bar.update(skip)
        loss_sum = hits_sum = seen = 0.0
        for images, labels in dataset:
            loss, hits = distributed_step(images, labels)
            loss, hits = float(loss), float(hits)
            if not math.isfinite(loss):
                kept = (
                    f"The last good checkpoint is {manager.latest_checkpoint}; re-run the same "
                    "command with a lower --lr to resume from it."
                    if manager.latest_checkpoint
                    else "No checkpoint was written yet; lower --lr."
                )
                raise TrainingError(
                    f"loss became {loss} at epoch {epoch + 1}, step {int(step_var.numpy()) + 1}; "
                    f"stopped. {kept}"
                )
            loss_sum, hits_sum, seen = loss_sum + loss, hits_sum + hits, seen + global_batch
            step_var.assign_add(1)
            bar.update(
                int(step_var.numpy()), [("loss", loss_sum / seen), ("top1", hits_sum / seen)]
            )
            if int(step_var.numpy()) % config.checkpoint_every == 0:
                manager.save()
        inference.set_weights(model.get_weights())
        val_top1, val_top5 = _validate(inference, source, config, eval_dataset)
        train_loss = loss_sum / seen if seen else float("nan")
        log(f"  loss {train_loss:.4f}  val top-1 {val_top1:.4f}  val top-5 {val_top5:.4f}")
        if val_top1 > best_top1 and is_chief:
            best_top1 = val_top1
            with fileio.atomic_path(run.best) as tmp:
                inference.save(tmp)
        history.append({
            "epoch": epoch + 1, "loss": f"{train_loss:.6f}",
            "top1": f"{hits_sum / seen if seen else float('nan'):.6f}",
            "val_top1": f"{val_top1:.6f}", "val_top5": f"{val_top5:.6f}",
            "lr": f"{float(_lr(optimizer).numpy()):.6g}",
        })  # fmt: skip
        if writer is not None:
            with writer.as_default(step=epoch + 1):
                for key in ("loss", "val_top1", "val_top5", "lr"):
                    tf.summary.scalar(key, float(history[-1][key]))
            writer.flush()
        if config.lr_schedule == "plateau" and plateau.update(val_top1):
            _lr(optimizer).assign(float(_lr(optimizer).numpy()) / 10)
            log(f"  validation top-1 stopped improving: lr -> {float(_lr(optimizer).numpy()):.3g}")
        epoch_var.assign_add(1)
        step_var.assign(0)
        run.write_history(history)
        manager.save()
        result = {"epoch": epoch + 1, "val_top1": val_top1, "val_top5": val_top5}
    result.update(
        best_val_top1=best_top1, seconds=time.time() - started, output=str(run.path),
        replicas=strategy.num_replicas_in_sync,
    )  # fmt: skip
    return result


def _lr(optimizer):
    """The learning-rate variable (unwrapping a LossScaleOptimizer)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner.learning_rate


def _validate(model, source, config, eval_dataset):
    """Top-1 and top-5 accuracy on the validation split (centre crops)."""
    import tensorflow as tf

    if not source.num_val:
        return float("nan"), float("nan")
    ds = eval_dataset(
        source, protocol="center", image_size=config.image_size, resize=config.resize[0],
        batch_size=max(1, config.batch_size),
    )  # fmt: skip
    if config.val_steps:
        ds = ds.take(config.val_steps)
    predict = tf.function(lambda x: model(x, training=False))
    top1 = top5 = count = 0
    k = min(5, model.output_shape[-1])
    for images, labels in ds:
        probs = predict(images)
        top1 += int(tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probs, 1), tf.int32)))
        top5 += int(tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probs, k), tf.int32)))
        count += int(tf.shape(labels)[0])
    return top1 / count, top5 / count


def _check_config(config):
    """Raise TrainingError for arguments that cannot work, with what to do instead."""
    if config.strategy not in STRATEGIES:
        raise TrainingError(f"--strategy must be one of {STRATEGIES}")
    if config.lr_schedule not in SCHEDULES:
        raise TrainingError(f"--lr-schedule must be one of {SCHEDULES}")
    for name in ("epochs", "batch_size", "cpu_replicas", "checkpoint_every"):
        if getattr(config, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be at least 1")
    if config.lr <= 0:
        raise TrainingError("--lr must be positive")
    if config.image_size > config.resize[0]:
        raise TrainingError(
            f"--image-size {config.image_size} is larger than the resize size {config.resize[0]}"
        )
