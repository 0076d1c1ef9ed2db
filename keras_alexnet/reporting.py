"""What a training run reports at each epoch's end (best.keras, TensorBoard, history.csv).

And a warning when it is not learning, and curves.png. `epoch_reporters` builds the list
once from the run's settings; the loop calls each one's `epoch_end(history, model)` in
order, with the rows so far (the last is the epoch just finished) and the softmax model
holding that epoch's weights. The order matters: curves.png is drawn from the history.csv
written before it.
"""

import math

from keras_alexnet import curves, extras, fileio, filters
from keras_alexnet.cli import plural
from keras_alexnet.errors import field

# When a run says it is not learning (`progress_warning`): after WARN_AFTER epochs, an epoch
# loss DIVERGED times the first epoch's, or a best validation top-1 within CHANCE_MARGIN of
# chance (1 / classes). The paper's init on a small set stays there (SPEC "Known traps").
WARN_AFTER = 2
DIVERGED = 1.5
CHANCE_MARGIN = 0.05


def epoch_reporters(run, config, num_classes, log):
    """The reporters of a run, in the order they run; the chief alone writes files."""
    reporters = [ProgressWarning(num_classes, config, log)]
    if run.is_chief:
        reporters[:0] = [BestModel(run.best), TensorBoard(run.tensorboard), History(run)]
        if _can_draw_curves(log):
            reporters.append(Curves(run.path))
    return reporters


def best_top1(history):
    """The best validation top-1 recorded in `history` (-1 when empty)."""
    return max((float(r["val_top1"]) for r in history), default=-1.0)


class BestModel:
    """Save the model as best.keras when its epoch beats every earlier one's val top-1."""

    def __init__(self, path):
        self.path = path

    def epoch_end(self, history, model):
        """Save `model` if the last epoch is the best so far."""
        if float(history[-1]["val_top1"]) > best_top1(history[:-1]):
            with fileio.atomic_path(self.path) as tmp:
                model.save(tmp)


class TensorBoard:
    """TensorBoard's scalars: each step's loss and lr, each epoch's row and conv1's filters."""

    def __init__(self, directory):
        import tensorflow as tf

        self.writer = tf.summary.create_file_writer(str(directory))

    def step(self, step, loss, lr):
        """Write one training step's loss and learning rate (`step/loss`, `step/lr`)."""
        import tensorflow as tf

        with self.writer.as_default(step=step):
            tf.summary.scalar("step/loss", loss)
            tf.summary.scalar("step/lr", lr)

    def epoch_end(self, history, model):
        """Write the epoch's history row and `model`'s conv1 as Figure 3 (`conv1`)."""
        import tensorflow as tf

        row = history[-1]
        conv1 = filters.conv1_kernels(model)
        with self.writer.as_default(step=int(row["epoch"])):
            for key in ("loss", "val_top1", "val_top5", "lr"):
                tf.summary.scalar(key, float(row[key]))
            tf.summary.image("conv1", filters.conv1_picture(conv1.kernels, conv1.towers)[None])
        self.writer.flush()


class History:
    """Rewrite the run's history.csv with every row so far."""

    def __init__(self, run):
        self.run = run

    def epoch_end(self, history, model):
        """Write `history`."""
        self.run.write_history(history)


class Curves:
    """Redraw the run's curves.png from its history.csv."""

    def __init__(self, path):
        self.path = path

    def epoch_end(self, history, model):
        """Draw the curves."""
        curves.write_run_curves(self.path)


class ProgressWarning:
    """Log `progress_warning`'s line once, the first epoch it has one."""

    def __init__(self, num_classes, config, log):
        self.num_classes, self.config, self.log = num_classes, config, log
        self.warned = False

    def epoch_end(self, history, model):
        """Log the warning if the run is not learning and has not said so yet."""
        warning = None if self.warned else progress_warning(history, self.num_classes, self.config)
        if warning:
            self.log(warning)
            self.warned = True


def _can_draw_curves(log):
    """Whether matplotlib is there for curves.png; if not, say so once and go on without."""
    try:
        extras.require("plots")
    except extras.MissingExtraError as e:
        log(f"No {curves.CURVES_FILENAME}: {e}")
        return False
    return True


def progress_warning(history, num_classes, config):
    """One line when the run is not learning after WARN_AFTER epochs, with what to pass; else None.

    Not learning: a non-finite or climbing epoch loss (DIVERGED times the first epoch's), or
    a best validation top-1 within CHANCE_MARGIN of chance. The paper's recipe stays the
    default; the line names the recipe that learns on small sets, or trained weights.
    """
    if len(history) < WARN_AFTER:
        return None
    losses = [float(r["loss"]) for r in history]
    best, chance = max(float(r["val_top1"]) for r in history), 1 / num_classes
    if not all(math.isfinite(v) for v in losses):
        problem = f"the loss is {losses[-1]}"
    elif losses[-1] > DIVERGED * losses[0]:
        problem = f"the loss climbed from {losses[0]:.3g} to {losses[-1]:.3g}"
    elif best <= chance + CHANCE_MARGIN:
        problem = f"validation top-1 is at chance ({best:.1%}, chance {chance:.1%})"
    else:
        return None
    if config.weights:
        advice = f"try a lower {field('lr')}"
    elif config.init != "he":
        known = (
            "the paper's N(0, 0.01) init is known to stay flat on small sets (Caffe's AlexNet "
            "saw flat loss on ImageNet too, and started its biases at 0.1); "
            if config.init == "paper"
            else ""
        )
        advice = (
            f"{known}pass {field('recipe')} small (He init, inputs scaled to about [-1, 1]) or "
            f"start from trained weights with {field('weights')}"
        )
    else:
        advice = f"try a lower {field('lr')}, or start from trained weights with {field('weights')}"
    return f"Warning: after {plural(len(history), 'epoch')} {problem}; {advice}"
