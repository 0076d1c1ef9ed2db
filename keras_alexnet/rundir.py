"""The files of a training run: checkpoints, best model, metadata, history, command, lock."""

import csv
import dataclasses
import fcntl
import io
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from keras_alexnet import __version__, fileio
from keras_alexnet.artifacts import KERAS_BEST, METADATA_FILENAME
from keras_alexnet.errors import field
from keras_alexnet.registry import get_spec, same_model
from keras_alexnet.train_config import TrainingError

HISTORY_FIELDS = ("epoch", "loss", "top1", "val_top1", "val_top5", "val_loss", "lr")


# What a run directory's checkpoints were made with: resuming with another value of any of
# these would restore into a different model or data order. model_args is compared option by
# option; a record written before 0.2 holds AlexNet's options as config fields (OLD_OPTIONS).
RUN_IDENTITY = (
    "model",
    "data",
    "width",
    "model_args",
    "image_size",
    "resize",
    "scale",
    "batch_size",
    "precision",
)


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


OLD_OPTIONS = {"towers": "towers", "lrn": "use_lrn", "pool": "pool"}


def _label(key):
    """How a config field or architecture option is named to a user: as a field (`towers`)."""
    # The train command's dests are the fields and the options' names, so it shows each as
    # its flag (--towers). A switch keeps its subject: "LRN (--no-lrn) off", not "--no-lrn off".
    if key == "use_lrn":
        return f"LRN ({field(key)})"
    return field(key)


def _recorded(config, recorded):
    """The identity fields of a recorded config, with model_args as one entry per option.

    A record from before 0.2 kept AlexNet's options as fields of their own; a VGG's held
    placeholders there (towers 1), which are not options of its family.
    """
    args = recorded.get("model_args")
    if args is None:
        options = {o.name for o in get_spec(config.model).options}
        args = {new: recorded[old] for old, new in OLD_OPTIONS.items() if old in recorded}
        args = {k: v for k, v in args.items() if k in options}
    fields = {k: recorded[k] for k in RUN_IDENTITY if k in recorded and k != "model_args"}
    return {**fields, **args}


def _show(value):
    """A recorded config value as a user typed it."""
    if isinstance(value, bool):
        return "on" if value else "off"
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
        self.best = self.path / KERAS_BEST
        self.metadata = self.path / METADATA_FILENAME
        self.tensorboard = self.path / "tensorboard"
        self.command = self.path / "command.json"

    def start(self, metadata, argv, **made_by):
        """Write a new run's metadata.json and command.json (chief only), atomically.

        command.json holds `argv` (default sys.argv), what made the run (`made_by`: training's
        `config`, an import's `source`, `format`, `preset`, ...) and the software versions.
        Training and `import_weights` both write run directories through here.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        metadata.save(self.metadata)
        record = {"argv": list(argv if argv is not None else sys.argv), **made_by}
        fileio.write_json(self.command, {**json.loads(json.dumps(record)), "versions": versions()})

    def check_identity(self, config):
        """Refuse in one line to resume a run made with another model, data or precision."""
        if not self.command.exists():
            return
        try:
            recorded = fileio.read_json(self.command)["config"]
        except (OSError, ValueError, KeyError):
            return  # an unreadable record: the checkpoint restore decides
        ours = json.loads(json.dumps(dataclasses.asdict(config)))
        ours = {**ours, **ours.pop("model_args")}
        for key, value in _recorded(config, recorded).items():
            if key == "model" and same_model(value, ours[key]):
                continue  # an alias names the same net: vgg16 resumes a vgg_d run
            if value != ours.get(key):
                raise TrainingError(
                    f"{self.path} is a run with {_label(key)} {_show(value)}, not "
                    f"{_show(ours.get(key))}: choose another `output` (or the same {_label(key)} "
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


class RunLock:
    """An exclusive lock on a run directory, so two trainings never share checkpoints.

    `user` names what holds it in the refusal, raised as `error` (prepare.py locks its
    output directory with it too).
    """

    def __init__(self, directory, user="training", error=TrainingError):
        self.path = Path(directory) / ".lock"
        self.user, self.error = user, error
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
            raise self.error(
                f"{self.path.parent} is in use by another {self.user} (pid {holder}); wait for it "
                "to finish or choose another `output`"
            ) from None
        self._file.truncate(0)
        self._file.write(str(os.getpid()))
        self._file.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
