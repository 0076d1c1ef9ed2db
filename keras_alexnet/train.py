"""Training under tf.distribute with the papers' recipes, crash-safe checkpoints and resume.

One custom loop (`strategy.run`) serves every strategy: Keras 3.15's `fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585), and an explicit loop also makes
mid-epoch checkpoints and exact resume straightforward.
"""

import csv
import dataclasses
import fcntl
import io
import json
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
from keras_alexnet.progress import Progress

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker")
SCHEDULES = ("plateau", "step", "cosine")
# Keras mixed-precision policies; float16 needs loss scaling, bfloat16 (float32's exponent)
# does not.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
HISTORY_FIELDS = ("epoch", "loss", "top1", "val_top1", "val_top5", "lr")
# What a run directory's checkpoints were made with: resuming with another value of any of
# these would restore into a different model or data order.
RUN_IDENTITY = (
    "model",
    "data",
    "width",
    "image_size",
    "resize",
    "scale",
    "batch_size",
    "precision",
)
# The paper's recipe for B-E (VGG Section 3.1): these layers of a trained net A start the
# deeper net ("the first four convolutional layers and the last three fully-connected
# layers"); the rest is initialised as usual.
NET_A_CONVS = 4
NET_A_FC = ("fc1", "fc2", "predictions")
# The demo set (8x8 digits, 1,433 train / 364 val) differs from ImageNet, so its defaults do:
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
    precision: str = "float32"
    init_from: str | None = None
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
            "init": spec.train_init,
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


def _show(value):
    """A recorded config value as a user typed it."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "the demo set" if value is None else str(value)


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
        self.command = self.path / "command.json"

    def start(self, config, metadata, argv):
        """Write a new run's metadata and command (chief only)."""
        self.path.mkdir(parents=True, exist_ok=True)
        metadata.save(self.metadata)
        fileio.write_json(
            self.command,
            {
                "argv": list(argv if argv is not None else sys.argv),
                "config": dataclasses.asdict(config),
                "versions": versions(),
            },
        )

    def check_identity(self, config):
        """Refuse in one line to resume a run made with another model, data or precision."""
        if not self.command.exists():
            return
        try:
            recorded = fileio.read_json(self.command)["config"]
        except (OSError, ValueError, KeyError):
            return  # an unreadable record: the checkpoint restore decides
        ours = json.loads(json.dumps(dataclasses.asdict(config)))
        for key in RUN_IDENTITY:
            if key in recorded and recorded[key] != ours[key]:
                raise TrainingError(
                    f"{self.path} is a run with {_flag(key)} {_show(recorded[key])}, not "
                    f"{_show(ours[key])}: choose another --output (or the same {_flag(key)} "
                    "to resume it)"
                )

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


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished `train` call leaves: the run's last and best validation figures."""

    epochs: int  # epochs the run directory has completed
    val_top1: float  # of the last epoch
    val_top5: float
    best_val_top1: float
    best_model: Path | None  # best.keras, None where this process wrote none (non-chief)
    output: Path
    seconds: float
    replicas: int
    already_finished: bool = False  # nothing to do: the run had reached --epochs


class RunLock:
    """An exclusive lock on a run directory, so two trainings never share checkpoints."""

    def __init__(self, directory):
        self.path = Path(directory) / ".lock"
        self._file = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")  # noqa: SIM115 (held until __exit__)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise TrainingError(
                f"{self.path.parent} is in use by another training (pid {holder}); wait for it "
                "to finish or choose another --output"
            ) from None
        self._file.truncate(0)
        self._file.write(str(os.getpid()))
        self._file.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


@dataclasses.dataclass
class TrainState:
    """The model and everything a checkpoint holds for an exact resume."""

    model: object
    inference: object  # the softmax twin: validation and best.keras
    predict: object  # tf.function of the twin, traced once for every validation
    optimizer: object
    epoch: object  # tf.Variable: completed epochs
    step: object  # tf.Variable: completed steps of the current epoch
    base_lr: object  # tf.Variable: the --lr the run was started with
    plateau: Plateau
    epoch_sums: object  # tf.Variable [loss sum, hits, images] of the current epoch so far
    checkpoint: object
    manager: object

    @property
    def lr(self):
        """The learning-rate variable."""
        return _lr(self.optimizer)


def train(config, *, argv=None, log=print):
    """Train `config.model` on `config.data`; return a `TrainResult`.

    Re-running with the same output directory resumes from its latest checkpoint; a run
    that has reached `config.epochs` says so and returns at once.
    """
    from keras_alexnet.models import get_spec

    spec = get_spec(config.model)
    config = config.resolved(spec)
    _check_config(config)
    if config.strategy == "mirrored":
        configure_devices("mirrored", config.cpu_replicas)

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(config.precision)
    strategy = make_strategy(config.strategy, config.cpu_replicas)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise TrainingError(
            f"--batch-size {config.batch_size} does not split evenly over "
            f"{strategy.num_replicas_in_sync} replicas"
        )
    run = RunDirectory(config.output, *_cluster_role(strategy))
    with RunLock(run.path if run.is_chief else run.checkpoints):
        return _train_locked(config, spec, strategy, run, argv, log)


def _cluster_role(strategy):
    """(is_chief, worker index) of this process in a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", 0) or 0
    is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0)
    return is_chief, task_id


def _train_locked(config, spec, strategy, run, argv, log):
    """The body of `train`, run while this process holds the run directory's lock."""
    from keras_alexnet.data import load_source

    run.check_identity(config)
    source = load_source(
        config.data, config.data_dir, val_fraction=config.val_fraction, seed=config.seed,
        cache=config.cache,
    )  # fmt: skip
    if not source.num_val:
        raise TrainingError(
            f"{source.name} has no validation images, which the schedule and best.keras need; "
            "give it a val/ tree or a validation split"
        )
    metadata = _metadata(config, spec, source)
    steps_per_epoch = source.num_train // config.batch_size
    if config.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch)
    if steps_per_epoch < 1:
        raise TrainingError(
            f"{source.num_train} training images make no batch of {config.batch_size}; "
            "lower --batch-size"
        )
    state = _build_state(config, spec, strategy, run, metadata)
    history = _restore_or_start(state, config, run, metadata, steps_per_epoch, argv, log)
    if run.is_chief and source.skipped:
        fileio.write_json(run.path / "skipped_files.json", dict(source.skipped))
    if int(state.epoch.numpy()) >= config.epochs:
        return _finished_result(run, history, strategy, log)

    step_fn = make_train_step(
        strategy, state.model, state.optimizer, config.batch_size, config.weight_decay,
        loss_scaling=config.precision == "mixed_float16",
    )  # fmt: skip
    writer = _summary_writer(run)
    best_top1 = max((float(r["val_top1"]) for r in history), default=-1.0)
    started = time.time()
    while int(state.epoch.numpy()) < config.epochs:
        epoch = int(state.epoch.numpy())
        scheduled = learning_rate_for(config, epoch)
        if scheduled is not None:
            state.lr.assign(scheduled)
        log(f"Epoch {epoch + 1}/{config.epochs} (lr {float(state.lr.numpy()):.3g})")
        loss, top1 = train_one_epoch(state, strategy, step_fn, source, config, steps_per_epoch)
        state.inference.set_weights(state.model.get_weights())
        val_top1, val_top5 = validate(state.predict, source, config)
        log(f"  loss {loss:.4f}  val top-1 {val_top1:.4f}  val top-5 {val_top5:.4f}")
        if val_top1 > best_top1 and run.is_chief:
            best_top1 = val_top1
            with fileio.atomic_path(run.best) as tmp:
                state.inference.save(tmp)
        history.append({
            "epoch": epoch + 1, "loss": f"{loss:.6f}", "top1": f"{top1:.6f}",
            "val_top1": f"{val_top1:.6f}", "val_top5": f"{val_top5:.6f}",
            "lr": f"{float(state.lr.numpy()):.6g}",
        })  # fmt: skip
        _write_summaries(writer, history[-1])
        if config.lr_schedule == "plateau" and state.plateau.update(val_top1):
            state.lr.assign(float(state.lr.numpy()) / 10)
            log(f"  validation top-1 stopped improving: lr -> {float(state.lr.numpy()):.3g}")
        state.epoch.assign_add(1)
        state.step.assign(0)
        state.epoch_sums.assign([0.0, 0.0, 0.0])
        run.write_history(history)
        state.manager.save()
    return TrainResult(
        epochs=int(state.epoch.numpy()), val_top1=val_top1, val_top5=val_top5,
        best_val_top1=best_top1, best_model=run.best if run.best.exists() else None,
        output=run.path, seconds=time.time() - started, replicas=strategy.num_replicas_in_sync,
    )  # fmt: skip


def _metadata(config, spec, source):
    """The run's Metadata; its protocol fits how the model was trained.

    The papers' protocols average in mirrored views (AlexNet's ten crops, VGG's flipped
    dense pass), which only fit a model trained with reflections: without them, centre crop.
    """
    return Metadata(
        model=spec.name,
        class_names=tuple(source.class_names),
        input_size=config.image_size,
        resize=config.resize[0],
        mean=tuple(source.stats.mean),
        scale=config.scale,
        protocol=spec.protocol if config.flip else "center",
        data=config.data,
        data_dir=config.data_dir,
    )


def _build_state(config, spec, strategy, run, metadata):
    """Build the model, optimizer and checkpointed variables inside the strategy's scope."""
    import keras
    import tensorflow as tf

    from keras_alexnet.models import build_model

    model_kwargs = {
        "classes": len(metadata.class_names),
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
        if config.precision == "mixed_float16":
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        base_lr = tf.Variable(config.lr, dtype=tf.float64, trainable=False, name="base_lr")
        sums = tf.Variable(tf.zeros(3, tf.float64), trainable=False, name="epoch_sums")
        plateau = Plateau(config.plateau_patience, config.max_lr_drops)
    # Softmax twin outside the strategy, in float32: validation, and the saved best model.
    keras.mixed_precision.set_global_policy("float32")
    inference = build_model(spec.name, classifier_activation="softmax", **model_kwargs)
    keras.mixed_precision.set_global_policy(config.precision)
    # model.variables includes the dropout layers' seed-generator states, which the model
    # object alone does not expose to tf.train.Checkpoint: needed for an exact resume.
    checkpoint = tf.train.Checkpoint(
        model=model, model_state=list(model.variables), optimizer=optimizer,
        epoch=epoch, step_in_epoch=step, base_lr=base_lr, epoch_sums=sums,
        plateau_best=plateau.best, plateau_wait=plateau.wait, plateau_drops=plateau.drops,
    )  # fmt: skip
    manager = tf.train.CheckpointManager(
        checkpoint, str(run.checkpoints), max_to_keep=config.keep_checkpoints
    )
    predict = tf.function(lambda x: inference(x, training=False))
    return TrainState(
        model, inference, predict, optimizer, epoch, step, base_lr, plateau, sums, checkpoint,
        manager,
    )  # fmt: skip


def _restore_or_start(state, config, run, metadata, steps_per_epoch, argv, log):
    """Resume from the latest checkpoint, or start the run directory; return its history."""
    latest = state.manager.latest_checkpoint
    if not latest:
        if config.init_from:
            init_from_net_a(state.model, config.init_from, log)
        if run.is_chief:
            run.start(config, metadata, argv)
        return []
    try:
        state.checkpoint.restore(latest).assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise TrainingError(
            f"{latest} does not fit this model ({first}); choose another --output"
        ) from None
    epoch = int(state.epoch.numpy())
    history = [r for r in run.read_history() if int(r["epoch"]) <= epoch]
    if epoch < config.epochs:
        log(
            f"Resumed from {latest}: epoch {epoch + 1}, step {int(state.step.numpy())} of "
            f"{steps_per_epoch}, lr {float(state.lr.numpy()):.3g}"
        )
    started_lr = float(state.base_lr.numpy())
    if not math.isclose(started_lr, config.lr, rel_tol=1e-9):
        state.lr.assign(float(state.lr.numpy()) * config.lr / started_lr)
        state.base_lr.assign(config.lr)
        log(f"  --lr {config.lr:g} replaces {started_lr:g}: lr now {float(state.lr.numpy()):.3g}")
    return history


def _finished_result(run, history, strategy, log):
    """The result of a run that had already reached its epochs: nothing is trained."""
    last = history[-1] if history else {}
    epochs = int(last.get("epoch", 0))
    best = run.best if run.best.exists() else None
    where = f"its best model is {best}" if best else f"its checkpoints are in {run.checkpoints}"
    log(
        f"{run.path} has already finished {epochs} epochs; {where}. "
        "Pass a larger --epochs to continue it."
    )
    return TrainResult(
        epochs=epochs, val_top1=float(last.get("val_top1", "nan")),
        val_top5=float(last.get("val_top5", "nan")),
        best_val_top1=max((float(r["val_top1"]) for r in history), default=float("nan")),
        best_model=best, output=run.path, seconds=0.0,
        replicas=strategy.num_replicas_in_sync, already_finished=True,
    )  # fmt: skip


def init_from_net_a(model, path, log=print):
    """Copy a trained VGG A's first four conv layers and its three FC layers into `model`.

    VGG Section 3.1: the deeper nets B-E started from net A's "first four convolutional
    layers and the last three fully-connected layers"; the rest keeps its own init. Layers
    match by name (A's block1_conv1, block2_conv1, block3_conv1, block3_conv2 exist with the
    same shapes in every configuration). Returns the names of the layers copied.
    """
    import keras

    from keras_alexnet import runtime

    try:
        source, metadata = runtime.load_keras_model(path)
    except runtime.ModelPathError as e:
        raise TrainingError(f"--init-from: {e}") from None
    if metadata.model not in ("vgg_a", "vgg_a_lrn"):
        raise TrainingError(f"--init-from needs a trained VGG A; {path} is {metadata.model}")
    convs = [layer.name for layer in source.layers if isinstance(layer, keras.layers.Conv2D)]
    names = [*convs[:NET_A_CONVS], *NET_A_FC]
    for name in names:
        theirs = source.get_layer(name).get_weights()
        try:
            ours = model.get_layer(name)
        except ValueError:
            raise TrainingError(f"--init-from: {model.name} has no layer {name}") from None
        shapes = [w.shape for w in ours.get_weights()]
        if [w.shape for w in theirs] != shapes:
            raise TrainingError(
                f"--init-from: {name} is {[w.shape for w in theirs]} in {path} but {shapes} "
                "here (same --width, --image-size and classes needed)"
            )
        ours.set_weights(theirs)
    log(f"Initialised {', '.join(names)} from {path}")
    return names


def train_one_epoch(state, strategy, step_fn, source, config, steps_per_epoch):
    """Run the rest of the current epoch; return its (mean loss, train top-1) over every step.

    The running sums live in the checkpoint, so an epoch resumed after a crash still
    reports the whole epoch.
    """
    from keras_alexnet.data import train_dataset

    epoch, skip = int(state.epoch.numpy()), int(state.step.numpy())

    def dataset_fn(ctx):
        # Each input pipeline feeds num_replicas / num_pipelines per-replica batches a step.
        per_step = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        ds = train_dataset(
            source, image_size=config.image_size, resize=config.resize,
            batch_size=config.batch_size, seed=config.seed, epoch=epoch,
            pca_lighting=config.pca_lighting, flip=config.flip, input_context=ctx,
        )  # fmt: skip
        return ds.take(steps_per_epoch * per_step).skip(skip * per_step)

    bar = Progress(steps_per_epoch, "step", "step", initial=skip, stream=sys.stdout)
    for images, labels in strategy.distribute_datasets_from_function(dataset_fn):
        loss, hits = (float(v) for v in step_fn(images, labels))
        if not math.isfinite(loss):
            raise TrainingError(_nan_message(loss, epoch, int(state.step.numpy()), state.manager))
        state.epoch_sums.assign_add([loss, hits, config.batch_size])
        state.step.assign_add(1)
        loss_sum, hits_sum, seen = state.epoch_sums.numpy()
        bar.update(int(state.step.numpy()), {"loss": loss_sum / seen, "top1": hits_sum / seen})
        if int(state.step.numpy()) % config.checkpoint_every == 0:
            state.manager.save()
    bar.close()
    loss_sum, hits_sum, seen = state.epoch_sums.numpy()
    return (loss_sum / seen, hits_sum / seen) if seen else (float("nan"), float("nan"))


def _nan_message(loss, epoch, step, manager):
    """The one-line error of a non-finite loss, naming the checkpoint to resume from."""
    kept = (
        f"The last good checkpoint is {manager.latest_checkpoint}; re-run the same command "
        "with a lower --lr to resume from it."
        if manager.latest_checkpoint
        else "No checkpoint was written yet; lower --lr."
    )
    return f"loss became {loss} at epoch {epoch + 1}, step {step + 1}; stopped. {kept}"


def _summary_writer(run):
    """TensorBoard writer of the chief, None elsewhere."""
    import tensorflow as tf

    return tf.summary.create_file_writer(str(run.tensorboard)) if run.is_chief else None


def _write_summaries(writer, row):
    """Write an epoch's history row to TensorBoard."""
    if writer is None:
        return
    import tensorflow as tf

    with writer.as_default(step=int(row["epoch"])):
        for key in ("loss", "val_top1", "val_top5", "lr"):
            tf.summary.scalar(key, float(row[key]))
    writer.flush()


def _lr(optimizer):
    """The learning-rate variable (unwrapping a LossScaleOptimizer)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner.learning_rate


def validate(predict, source, config):
    """Top-1 and top-5 accuracy of `predict` (images -> probabilities) on centre crops of val."""
    import tensorflow as tf

    from keras_alexnet.data import eval_dataset

    ds = eval_dataset(
        source, protocol="center", image_size=config.image_size, resize=config.resize[0],
        batch_size=max(1, config.batch_size),
    )  # fmt: skip
    if config.val_steps:
        ds = ds.take(config.val_steps)
    top1 = top5 = count = 0
    k = min(5, len(source.class_names))
    for images, labels in ds:
        probs = predict(images)
        top1 += int(tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probs, 1), tf.int32)))
        top5 += int(tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probs, k), tf.int32)))
        count += int(tf.shape(labels)[0])
    return top1 / count, top5 / count


def _flag(name):
    """The command-line spelling of a config field."""
    return "--" + name.replace("_", "-")


def _check_config(config):
    """Raise TrainingError for arguments that cannot work, with what to do instead."""
    choices = {"strategy": STRATEGIES, "lr_schedule": SCHEDULES, "precision": PRECISIONS}
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise TrainingError(f"{_flag(name)} must be one of {', '.join(allowed)}")
    at_least = {
        "epochs": 1, "batch_size": 1, "cpu_replicas": 1, "checkpoint_every": 1,
        "keep_checkpoints": 1, "plateau_patience": 1, "max_lr_drops": 0, "step_epochs": 1,
        "image_size": 1, "seed": 0, "steps_per_epoch": 1, "val_steps": 1,
    }  # fmt: skip
    for name, low in at_least.items():
        value = getattr(config, name)
        if value is not None and value < low:
            raise TrainingError(f"{_flag(name)} must be at least {low}. Received: {value}")
    positive = ("lr", "width", "scale")
    for name in (*positive, "momentum", "weight_decay", "val_fraction"):
        value = getattr(config, name)
        if not math.isfinite(value) or (value <= 0 if name in positive else value < 0):
            kind = "a positive" if name in positive else "a non-negative"
            raise TrainingError(f"{_flag(name)} must be {kind} number. Received: {value}")
    if config.momentum >= 1 or not 0 < config.val_fraction < 1:
        raise TrainingError("--momentum must be below 1 and --val-fraction in (0, 1)")
    if config.image_size > config.resize[0]:
        raise TrainingError(
            f"--image-size {config.image_size} is larger than the resize size {config.resize[0]}"
        )
    if config.init_from and not config.model.lower().startswith("vgg"):
        raise TrainingError("--init-from starts a VGG configuration from a trained VGG A")
