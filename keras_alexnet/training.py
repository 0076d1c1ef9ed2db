"""Training under tf.distribute with the papers' recipes, crash-safe checkpoints and resume.

One custom loop (`strategy.run`) serves every strategy: Keras 3.15's `fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585), and an explicit loop also makes
mid-epoch checkpoints and exact resume straightforward.
"""

import dataclasses
import math
import sys
import time
from pathlib import Path

from keras_alexnet import fileio, finetune, hardware
from keras_alexnet.backend import require_tensorflow
from keras_alexnet.cli import percent, plural
from keras_alexnet.data.stats import colour_in_data
from keras_alexnet.distribute import (
    check_same_start,
    cluster_role,
    configure_devices,
    lost_worker,
    make_strategy,
)
from keras_alexnet.errors import field
from keras_alexnet.metadata import Metadata
from keras_alexnet.optim import (
    Plateau,
    global_precision,
    learning_rate_for,
    learning_rate_variable,
    make_train_step,
)
from keras_alexnet.progress import Progress
from keras_alexnet.protocols import trained_protocol
from keras_alexnet.registry import get_spec, recorded_name
from keras_alexnet.reporting import TensorBoard, epoch_reporters, progress_warning
from keras_alexnet.rundir import RunDirectory, RunLock
from keras_alexnet.train_config import PAPER_LR, TrainConfig, TrainingError, check_config


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished `train` call leaves: the run's last and best validation figures."""

    epochs: int  # epochs the run directory has completed
    val_top1: float  # of the last epoch
    val_top5: float
    best_val_top1: float  # of the best epoch, the one best.keras holds
    best_val_top5: float
    best_epoch: int  # 0 when no epoch has finished
    best_model: Path | None  # best.keras, None where this process wrote none (non-chief)
    output: Path
    seconds: float
    replicas: int
    already_finished: bool = False  # nothing to do: the run had reached --epochs


@dataclasses.dataclass
class Plan:
    """What a run checks and builds before it touches its directory."""

    source: object
    steps_per_epoch: int
    metadata: Metadata
    state: "TrainState"
    start_log: list  # lines of loading --init-from / --weights, logged when the run starts


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
    manager: object = None  # tf.train.CheckpointManager, made once the run directory is locked

    @property
    def lr(self):
        """The learning-rate variable."""
        return learning_rate_variable(self.optimizer)


def train(config, *, argv=None, log=print):
    """Train `config.model` on `config.data`; return a `TrainResult`.

    Re-running with the same output directory resumes from its latest checkpoint; a run
    that has reached `config.epochs` says so and returns at once. TensorFlow backend only
    (tf.data and tf.distribute); on another, fine-tune with optim.compile_paper and fit.
    """
    require_tensorflow(
        "train (tf.data and the tf.distribute loop)", "optim.compile_paper and model.fit"
    )

    spec = get_spec(config.model)
    lr_given = config.lr is not None
    config = config.resolved(spec)
    check_config(config)
    if config.strategy == "mirrored":
        configure_devices("mirrored", config.cpu_replicas)

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    with global_precision(config.precision):
        return _train_in_precision(config, spec, lr_given, argv, log)


def _train_in_precision(config, spec, lr_given, argv, log):
    """The body of `train`, under the run's precision policy."""
    import tensorflow as tf

    strategy = make_strategy(config.strategy, config.cpu_replicas)
    warning = hardware.bf16_warning(
        config.precision, bool(tf.config.list_logical_devices("GPU")), hardware.cpu_flags()
    )
    if warning:
        log(warning)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise TrainingError(
            f"`batch_size` {config.batch_size} does not split evenly over "
            f"{strategy.num_replicas_in_sync} replicas"
        )
    run = RunDirectory(config.output, *cluster_role(strategy))
    run.check_identity(config)
    plan = _prepare(config, spec, strategy, log)
    with (
        RunLock(run.path if run.is_chief else run.checkpoints),
        lost_worker(strategy, run.checkpoints),
    ):
        return _train_locked(plan, config, strategy, run, lr_given, argv, log)


def _prepare(config, spec, strategy, log):
    """Check the settings against the data and the starting weights, and build the state.

    Nothing is written yet: a refused command leaves no run directory that would then
    refuse the corrected one.
    """
    source = _open_source(config)
    _check_data(config, spec, source)
    colour = colour_in_data(source.stats)
    if not colour["colour"]:
        log(f"{source.name}: {colour['reason']}")
    steps_per_epoch = _steps_per_epoch(config, source)
    start = finetune.starting_point(config, spec)
    metadata = _metadata(config, spec, source, start)
    state = _build_state(config, spec, strategy, metadata, start)
    lines = []
    if config.init_from:
        finetune.init_from_net_a(state.model, config.init_from, lines.append)
    if start is not None:
        finetune.load_start(state.model, start, config, lines.append)
    return Plan(source, steps_per_epoch, metadata, state, lines)


def _train_locked(plan, config, strategy, run, lr_given, argv, log):
    """The body of `train`, run while this process holds the run directory's lock."""
    import tensorflow as tf

    run.check_identity(config)  # again: another run may have started it meanwhile
    state, source, steps_per_epoch = plan.state, plan.source, plan.steps_per_epoch
    state.manager = tf.train.CheckpointManager(
        state.checkpoint, str(run.checkpoints), max_to_keep=config.keep_checkpoints
    )
    history, config = _restore_or_start(state, config, run, plan, lr_given, argv, log)
    check_same_start(strategy, int(state.epoch.numpy()), int(state.step.numpy()), run.checkpoints)
    if run.is_chief and source.skipped:
        fileio.write_json(run.path / "skipped_files.json", dict(source.skipped))
    if int(state.epoch.numpy()) >= config.epochs:
        return _finished_result(run, history, strategy, log)
    step_fn = make_train_step(
        strategy, state.model, state.optimizer, config.batch_size, config.weight_decay,
        loss_scaling=config.precision == "mixed_float16", jit_compile=config.jit_compile,
    )  # fmt: skip
    reporters = epoch_reporters(run, config, len(source.class_names), log)
    tensorboard = next((r for r in reporters if isinstance(r, TensorBoard)), None)
    started = time.time()
    while int(state.epoch.numpy()) < config.epochs:
        epoch = int(state.epoch.numpy())
        scheduled = learning_rate_for(config, epoch)
        if scheduled is not None:
            state.lr.assign(scheduled)
        log(f"Epoch {epoch + 1}/{config.epochs} (lr {float(state.lr.numpy()):.3g})")
        loss, top1 = train_one_epoch(
            state, strategy, step_fn, source, config, steps_per_epoch, tensorboard=tensorboard
        )
        state.inference.set_weights(state.model.get_weights())
        val_top1, val_top5, val_loss = validate(state.predict, source, config)
        log(
            f"  loss {loss:.4f}  val top-1 {percent(val_top1)}  val top-5 {percent(val_top5)}  "
            f"val loss {val_loss:.4f}"
        )
        history.append({
            "epoch": epoch + 1, "loss": f"{loss:.6f}", "top1": f"{top1:.6f}",
            "val_top1": f"{val_top1:.6f}", "val_top5": f"{val_top5:.6f}",
            "val_loss": f"{val_loss:.6f}", "lr": f"{float(state.lr.numpy()):.6g}",
        })  # fmt: skip
        _end_epoch(state, config, history, reporters, log)
    best = _best_row(history)
    return TrainResult(
        epochs=int(state.epoch.numpy()), val_top1=val_top1, val_top5=val_top5,
        best_val_top1=float(best["val_top1"]), best_val_top5=float(best["val_top5"]),
        best_epoch=int(best["epoch"]), best_model=run.best if run.best.exists() else None,
        output=run.path, seconds=time.time() - started, replicas=strategy.num_replicas_in_sync,
    )  # fmt: skip


def _open_source(config):
    """The run's data source; it must have validation images (schedule, best.keras)."""
    from keras_alexnet.data import load_source

    source = load_source(
        config.data, config.data_dir, val_fraction=config.val_fraction, seed=config.seed,
        cache=config.cache,
    )  # fmt: skip
    if not source.num_val:
        raise TrainingError(
            f"{source.name} has no validation images, which the schedule and best.keras need; "
            "give it a val/ tree or a validation split"
        )
    return source


def _check_data(config, spec, source):
    """Refuse a scale the data cannot give (above a prepared set's) before the first epoch.

    The pipelines' own check (`check_scales`), without building them: building a pipeline
    traces its functions, before the run builds them again.
    """
    from keras_alexnet.data.pipeline import check_scales

    try:
        check_scales(source, image_size=config.image_size, resize=config.resize)
    except ValueError as e:
        hint = ""
        if (
            source.layout is not None
            and source.layout.square
            and not spec.family_spec.square_layout
        ):
            hint = (
                f"; it holds AlexNet's central squares: for {spec.name}'s scales prepare it "
                f"with `keras-alexnet-prepare --model {spec.name}`"
            )
        scales = ",".join(str(s) for s in dict.fromkeys(config.resize))
        raise TrainingError(f"`resize` {scales}: {e}{hint}") from None


def _steps_per_epoch(config, source):
    """Full global batches per epoch, capped by --steps-per-epoch."""
    steps = source.num_train // config.batch_size
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    if steps < 1:
        raise TrainingError(
            f"{source.num_train} training images make no batch of {config.batch_size}; "
            "lower `batch_size`"
        )
    return steps


def _best_row(history):
    """The row of the first epoch with the best validation top-1 (best.keras's); NaNs if none."""
    nothing = {"epoch": 0, "val_top1": "nan", "val_top5": "nan"}
    return max(history, key=lambda r: float(r["val_top1"]), default=nothing)


def _end_epoch(state, config, history, reporters, log):
    """Step the plateau schedule, call every reporter, then checkpoint the epoch's end.

    The reporters come before the checkpoint, so no checkpoint records an epoch whose
    history row or best.keras is missing.
    """
    val_top1 = float(history[-1]["val_top1"])
    if config.lr_schedule == "plateau" and state.plateau.update(val_top1):
        state.lr.assign(float(state.lr.numpy()) / 10)
        log(f"  validation top-1 stopped improving: lr -> {float(state.lr.numpy()):.3g}")
    for reporter in reporters:
        reporter.epoch_end(history, state.inference)
    state.epoch.assign_add(1)
    state.step.assign(0)
    state.epoch_sums.assign([0.0, 0.0, 0.0])
    state.manager.save()


def _metadata(config, spec, source, start=None):
    """The run's Metadata; its protocol fits how the model was trained.

    The papers' protocols average in mirrored views (AlexNet's ten crops, VGG's flipped
    dense pass), which only fit a model trained with reflections: without them, centre crop.
    Fine-tuned weights keep the normalisation they were trained with (`start`'s Preset).
    """
    mean, scale = tuple(source.stats.mean), config.scale
    if start is not None:
        mean, scale = start.preset.mean, start.preset.scale
    architecture = finetune.architecture(config, spec, start)
    if architecture.get("width") == 1:
        del architecture["width"]
    return Metadata(
        model=recorded_name(config.model),
        class_names=tuple(source.class_names),
        input_size=config.image_size,
        resize=config.resize[0],
        resize_max=config.resize[1] if config.resize[1] != config.resize[0] else None,
        mean=mean,
        scale=scale,
        protocol=trained_protocol(spec.protocol, config.flip),
        data=config.data,
        data_dir=config.data_dir,
        model_args=architecture or None,
    )


def _build_state(config, spec, strategy, metadata, start=None):
    """Build the model, optimizer and checkpointed variables inside the strategy's scope.

    The checkpoint manager, which reads the run directory, comes once it is locked.
    """
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
        "scale": metadata.scale,
        **metadata.architecture(),  # the flags' and the starting weights' (`_architecture`)
    }
    with strategy.scope():
        model = build_model(spec.name, classifier_activation=None, **model_kwargs)
        if config.freeze_up_to:
            finetune.freeze_up_to(model, config.freeze_up_to)
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
    with global_precision("float32"):
        inference = build_model(spec.name, classifier_activation="softmax", **model_kwargs)
    # model.variables includes the dropout layers' seed-generator states, which the model
    # object alone does not expose to tf.train.Checkpoint: needed for an exact resume.
    checkpoint = tf.train.Checkpoint(
        model=model, model_state=list(model.variables), optimizer=optimizer,
        epoch=epoch, step_in_epoch=step, base_lr=base_lr, epoch_sums=sums,
        plateau_best=plateau.best, plateau_wait=plateau.wait, plateau_drops=plateau.drops,
    )  # fmt: skip
    predict = tf.function(lambda x: inference(x, training=False))
    return TrainState(
        model, inference, predict, optimizer, epoch, step, base_lr, plateau, sums, checkpoint
    )


def _restore_or_start(state, config, run, plan, lr_given, argv, log):
    """Resume from the latest checkpoint, or start the run directory; return (history, config).

    Without --lr (`lr_given` False) a resumed run keeps the rate it was started with.
    """
    latest = state.manager.latest_checkpoint
    if not latest:
        for line in plan.start_log:
            log(line)
        if config.weights and not lr_given:
            log(
                f"Fine-tuning from {field('weights')}: lr {config.lr:g}, a tenth of the paper's "
                f"{PAPER_LR:g} ({field('lr')} sets another)"
            )
        if run.is_chief:
            run.start(plan.metadata, argv, config=dataclasses.asdict(config))
        return [], config
    try:
        state.checkpoint.restore(latest).assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise TrainingError(
            f"{latest} does not fit this model ({first}); choose another `output`"
        ) from None
    epoch = int(state.epoch.numpy())
    history = [r for r in run.read_history() if int(r["epoch"]) <= epoch]
    if epoch < config.epochs:
        log(
            f"Resumed from {latest}: epoch {epoch + 1}, step {int(state.step.numpy())} of "
            f"{plan.steps_per_epoch}, lr {float(state.lr.numpy()):.3g}"
        )
    started_lr = float(state.base_lr.numpy())
    if not lr_given:
        config = dataclasses.replace(config, lr=started_lr)
    elif not math.isclose(started_lr, config.lr, rel_tol=1e-9):
        state.lr.assign(float(state.lr.numpy()) * config.lr / started_lr)
        state.base_lr.assign(config.lr)
        lr_now = float(state.lr.numpy())
        log(f"  {field('lr')} {config.lr:g} replaces {started_lr:g}: lr now {lr_now:.3g}")
    return history, config


def _finished_result(run, history, strategy, log):
    """The result of a run that had already reached its epochs: nothing is trained."""
    last, best_row = (history[-1] if history else {}), _best_row(history)
    epochs = int(last.get("epoch", 0))
    best = run.best if run.best.exists() else None
    where = f"its best model is {best}" if best else f"its checkpoints are in {run.checkpoints}"
    log(
        f"{run.path} has already finished {plural(epochs, 'epoch')}; {where}. "
        f"Pass a larger {field('epochs')} to continue it."
    )
    return TrainResult(
        epochs=epochs, val_top1=float(last.get("val_top1", "nan")),
        val_top5=float(last.get("val_top5", "nan")),
        best_val_top1=float(best_row["val_top1"]), best_val_top5=float(best_row["val_top5"]),
        best_epoch=int(best_row["epoch"]), best_model=best, output=run.path, seconds=0.0,
        replicas=strategy.num_replicas_in_sync, already_finished=True,
    )  # fmt: skip


def train_one_epoch(state, strategy, step_fn, source, config, steps_per_epoch, tensorboard=None):
    """Run the rest of the current epoch; return its (mean loss, train top-1) over every step.

    The running sums live in the checkpoint, so an epoch resumed after a crash still
    reports the whole epoch. With a `reporting.TensorBoard`, each step's mean loss and its lr
    go to it (`step/loss`, `step/lr`, at the run's global step).
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
        global_step = epoch * steps_per_epoch + int(state.step.numpy())
        if tensorboard is not None:
            tensorboard.step(global_step, loss / config.batch_size, state.lr)
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
        "with a lower `lr` to resume from it."
        if manager.latest_checkpoint
        else "No checkpoint was written yet; lower `lr`."
    )
    return f"loss became {loss} at epoch {epoch + 1}, step {step + 1}; stopped. {kept}"


def validate(predict, source, config):
    """(top-1, top-5, cross-entropy) of `predict` (images -> probabilities) on val's crops.

    Centre crops; the cross-entropy clips probabilities at 1e-7, as Keras's does.
    """
    import tensorflow as tf

    from keras_alexnet.data import eval_dataset

    ds = eval_dataset(
        source, protocol="center", image_size=config.image_size, resize=config.resize[0],
        batch_size=max(1, config.batch_size),
    )  # fmt: skip
    if config.val_steps:
        ds = ds.take(config.val_steps)
    top1 = top5 = count = 0
    loss = 0.0
    k = min(5, len(source.class_names))
    for images, labels in ds:
        probs = predict(images)
        top1 += int(tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probs, 1), tf.int32)))
        top5 += int(tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probs, k), tf.int32)))
        picked = tf.gather(tf.cast(probs, tf.float64), labels, axis=1, batch_dims=1)
        loss += float(-tf.reduce_sum(tf.math.log(tf.clip_by_value(picked, 1e-7, 1.0))))
        count += int(tf.shape(labels)[0])
    return top1 / count, top5 / count, loss / count


__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "progress_warning",
    "train",
    "validate",
]
