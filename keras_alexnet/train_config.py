"""A training run's settings: the papers' recipes, the demo's departures, and their checks."""

import dataclasses
import math
from pathlib import Path

from keras_alexnet.errors import Error, field
from keras_alexnet.registry import get_spec, recorded_name

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker")


SCHEDULES = ("plateau", "step", "cosine")


# Keras mixed-precision policies; float16 needs loss scaling, bfloat16 (float32's exponent)
# does not.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


# Both papers' initial learning rate, and fine-tuning's default (`--weights`): a tenth of it,
# the paper's rate after its first /10 drop, so published or trained weights are adjusted,
# not thrown away by the first large steps of a from-scratch rate.
PAPER_LR = 0.01
FINE_TUNE_LR = PAPER_LR / 10


# Named recipes: the settings each fills in where a flag was not given. "paper" is the
# papers' (the default for --data). "small" holds the departures that make the paper's nets
# learn from a few hundred or thousand images on a CPU (SPEC "Known traps"): the paper's
# N(0, 0.01) init on mean-subtracted 0-255 pixels stays at chance on such sets (Caffe's
# replication saw flat loss on ImageNet too, and started its biases at 0.1), and He init on
# 0-255 pixels gives NaN, but He init on pixels scaled to about [-1, 1] trains; crops of 67
# (AlexNet's smallest input) from 76 have a twelfth of 227's pixels (VGG: 32 from 36), and
# batch 32 gives a small set more steps an epoch. Reflections, lighting and the schedule stay.
# The crop and resize are each family's (registry: smallest_input, small_resize).
RECIPES = {
    "paper": {},
    "small": {"init": "he", "scale": 1 / 127.5, "batch_size": 32},
}


# The demo set (8x8 digits, 1,433 train / 364 val) trains with the small recipe by default,
# plus two departures of its own: a mirrored digit is often no digit, so no reflections, and
# 4 epochs keep it to minutes on a CPU.
DEMO_OVERRIDES = {"epochs": 4, "flip": False}


class TrainingError(Error, RuntimeError):
    """A run that cannot go on (NaN loss, bad arguments); the message says why."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; None fields take the recipe's, else the paper's, defaults."""

    model: str = "alexnet"
    data: str | None = None
    data_dir: str | None = None
    output: str | None = None
    strategy: str = "default"
    cpu_replicas: int = 2
    epochs: int | None = None
    batch_size: int | None = None
    recipe: str | None = None  # a RECIPES name; None: "small" on the demo set, else "paper"
    lr: float | None = None  # None: PAPER_LR, or FINE_TUNE_LR with `weights`
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
    # The family's architecture options by builder argument (AlexNet: towers, use_lrn,
    # pool); missing or None: the published model's (registry.Family.options).
    model_args: dict | None = None
    precision: str = "float32"
    init_from: str | None = None
    weights: str | None = None
    freeze_up_to: str | None = None
    seed: int = 0
    deterministic: bool = False
    jit_compile: bool = False  # XLA for each replica's forward and backward pass
    steps_per_epoch: int | None = None
    val_steps: int | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    pca_lighting: bool = True
    flip: bool | None = None
    val_fraction: float = 0.1
    cache: str | None = None

    def resolved(self, spec):
        """Return a copy with every None default filled in: the paper's, a recipe's, the demo's."""
        recipe = self.recipe or ("paper" if self.data is not None else "small")
        fill = {
            "epochs": spec.epochs,
            "batch_size": spec.batch_size,
            "init": spec.train_init,
            "scale": spec.train_scale,
            "flip": True,
            "resize": (spec.resize, spec.resize),
            "image_size": spec.input_size,
            "output": str(Path("runs") / recorded_name(self.model)),
            "lr": FINE_TUNE_LR if self.weights else PAPER_LR,
            "recipe": recipe,
        }
        family = spec.family_spec
        if recipe == "small":
            resize = (family.small_resize, family.small_resize)
            fill.update(RECIPES["small"], image_size=family.smallest_input, resize=resize)
        if self.data is None:
            fill.update(DEMO_OVERRIDES)
        given = {k: v for k, v in (self.model_args or {}).items() if v is not None}
        return dataclasses.replace(
            self,
            model_args={**family.defaults(), **given},
            **{k: v for k, v in fill.items() if getattr(self, k) is None},
        )


def check_config(config):
    """Raise TrainingError for arguments that cannot work, with what to do instead."""
    choices = {
        "strategy": STRATEGIES, "lr_schedule": SCHEDULES, "precision": PRECISIONS,
        "recipe": tuple(RECIPES),
    }  # fmt: skip
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise TrainingError(f"{field(name)} must be one of {', '.join(allowed)}")
    at_least = {
        "epochs": 1, "batch_size": 1, "cpu_replicas": 1, "checkpoint_every": 1,
        "keep_checkpoints": 1, "plateau_patience": 1, "max_lr_drops": 0, "step_epochs": 1,
        "image_size": 1, "seed": 0, "steps_per_epoch": 1, "val_steps": 1,
    }  # fmt: skip
    for name, low in at_least.items():
        value = getattr(config, name)
        if value is not None and value < low:
            raise TrainingError(f"{field(name)} must be at least {low}. Received: {value}")
    positive = ("lr", "width", "scale")
    for name in (*positive, "momentum", "weight_decay", "val_fraction"):
        value = getattr(config, name)
        if not math.isfinite(value) or (value <= 0 if name in positive else value < 0):
            kind = "a positive" if name in positive else "a non-negative"
            raise TrainingError(f"{field(name)} must be {kind} number. Received: {value}")
    if config.momentum >= 1 or not 0 < config.val_fraction < 1:
        raise TrainingError("`momentum` must be below 1 and `val_fraction` in (0, 1)")
    if config.image_size > config.resize[0]:
        raise TrainingError(
            f"`image_size` {config.image_size} is larger than the resize size {config.resize[0]}"
        )
    if config.weights and config.init_from:
        raise TrainingError("`weights` and `init_from` both choose the starting weights: pick one")
    _check_model(config)


def _check_model(config):
    """Raise TrainingError for a model, `init_from` or architecture option that cannot work."""
    try:
        family = get_spec(config.model).family_spec
    except ValueError as e:
        raise TrainingError(str(e)) from None
    if config.init_from and not family.init_from:
        raise TrainingError("`init_from` starts a VGG configuration from a trained VGG A")
    try:
        family.check_args(family.resolve(config.model_args), config.width)
    except ValueError as e:
        raise TrainingError(str(e)) from None
