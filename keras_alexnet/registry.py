"""The model families and the models, as data: what every stage asks about a model.

A family declares its builder (imported only when a model is built), its architecture
options (the train and summary commands make their flags from them, runs record them in
`model_args`), its smallest input, the layout its prepared data takes and a check of its
arguments. A model is a row: name, family, input size, resize, the paper's recipe and
protocol, and the builder's arguments. Nothing here imports Keras or TensorFlow, so a
command can list the models and answer `--help` without loading them.
"""

import dataclasses
import types

from keras_alexnet._lazy import resolve

IMAGENET_CLASSES = 1000  # ILSVRC-2012: the papers' fc8, the default head without weights

# Where prepared images are rescaled to (prepare.py): AlexNet trains on central 256x256
# squares (Section 2); VGG jitters S in [256, 512] (Section 3.1), so its images keep their
# aspect with the shorter side 512.
ALEXNET_SIZE = 256
VGG_MAX_SCALE = 512

# torchvision's ImageNet std on the 0-255 scale, its three channels' (0.229, 0.224, 0.225)
# averaged: the one input scale of torchvision's recipe.
TORCHVISION_STD = 255 * (0.229 + 0.224 + 0.225) / 3

# AlexNet Section 3.4: pooling "with s = 2 and z = 3" overlaps; "s = z = 2" is the
# traditional non-overlapping pooling the paper compares against. Name -> (window z, stride s).
POOLS = {"overlapping": (3, 2), "non_overlapping": (2, 2)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Option:
    """An architecture option of a family: a builder argument a run can set with a flag.

    A boolean option that defaults to True is switched off by `--no-<flag>`.
    """

    name: str  # the builder's argument and the key in model_args
    default: object
    help: str  # the flag's help, with the paper section
    flag_name: str  # the flag's name without dashes (a boolean's: what --no- switches off)
    type: type = str
    choices: tuple | None = None
    minimum: int | None = None
    label: object = str  # how a run's label (curves, plot) shows a value

    @property
    def flag(self):
        """The command-line flag that sets it (`--no-lrn` for a boolean on by default)."""
        return f"--no-{self.flag_name}" if self.type is bool else f"--{self.flag_name}"

    def show(self, value):
        """How the flag reads for `value` on the command line (--no-lrn has no value)."""
        return self.flag if self.type is bool else f"{self.flag} {value}"

    def check(self, value):
        """Raise ValueError in one line when `value` is not one this option takes."""
        if self.type is bool:
            ok = isinstance(value, bool)
        elif self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            ok = ok and (self.minimum is None or value >= self.minimum)
        else:
            ok = value in self.choices if self.choices else isinstance(value, self.type)
        if not ok:
            allowed = (
                f"one of {', '.join(self.choices)}"
                if self.choices
                else f"an integer >= {self.minimum}"
                if self.type is int
                else f"a {self.type.__name__}"
            )
            raise ValueError(f"{self.name} ({self.flag}) must be {allowed}. Received: {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Family:
    """A kind of model: how to build it, what a run may vary, what its data looks like."""

    name: str
    builder: str  # "module:function", imported when a model is built
    options: tuple[Option, ...] = ()
    smallest_input: int  # the smallest crop it takes (--recipe small's crop)
    small_resize: int  # --recipe small's resize: a little larger than the crop
    square_layout: bool  # prepared data: central squares (AlexNet) or the shorter side
    prepared_size: int  # the prepared layout's size (the square's side, or the shorter side)
    # "module:function" called with (model_args, width); raises ValueError when the
    # arguments do not fit together (AlexNet: towers must divide every layer's width).
    check: str | None = None
    init_from: bool = False  # VGG Section 3.1: deeper nets start from a trained net A

    def load_builder(self):
        """The builder function (imports the family's module, and so Keras)."""
        return resolve(self.builder)

    def option(self, name):
        """The option called `name`, or None."""
        return next((o for o in self.options if o.name == name), None)

    def defaults(self):
        """Every option at its default: the published architecture."""
        return {o.name: o.default for o in self.options}

    def resolve(self, args):
        """`args` (option name -> value, None: not given) with the defaults filled in.

        ValueError in one line for an option the family does not have or a value it
        does not take, and for arguments that do not fit together.
        """
        given = {k: v for k, v in (args or {}).items() if v is not None}
        for name, value in given.items():
            option = self.option(name)
            if option is None:
                raise ValueError(f"{name} ({option_flag(name)}) {_not_an_option(name, self)}")
            option.check(value)
        return {**self.defaults(), **given}

    def check_args(self, args, width=1.0):
        """Raise ValueError when resolved `args` do not fit together at `width`."""
        if self.check is not None:
            resolve(self.check)(args, width)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model: its family, input, the paper's recipe and protocol, its builder's arguments."""

    name: str
    family: str  # a FAMILIES key
    input_size: int  # the training crop
    resize: int  # shorter side before cropping at test time (AlexNet 256, VGG Q=S=256)
    batch_size: int  # the paper's batch size
    epochs: int  # the paper's schedule length
    protocol: str  # the paper's test protocol: AlexNet ten_crop, VGG dense
    # Training's default init. VGG: Glorot, which VGG Section 3.1 notes works without
    # pre-training; its N(0, 1e-2) init overflows the deeper nets' logits in float32.
    train_init: str = "paper"
    # Training's default input scale after the mean (the papers: 1, raw 0-255 differences).
    train_scale: float = 1.0
    builder_args: types.MappingProxyType = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    summary: str = ""  # one line for `list_models` and the README

    @property
    def family_spec(self):
        """The model's Family."""
        return FAMILIES[self.family]

    @property
    def options(self):
        """The architecture options a run of this model can set."""
        return self.family_spec.options

    def builder(self, **kwargs):
        """Build the model (a keras.Model) with the row's and the caller's arguments."""
        build = self.family_spec.load_builder()
        return build(**self.builder_args, name=self.name, **kwargs)


def _not_an_option(name, family):
    """The end of the message for an option `family` does not have."""
    owners = [f.name for f in FAMILIES.values() if f.option(name)]
    if owners:
        return f"applies to {' and '.join(owners)} only, not to {family.name} models"
    own = ", ".join(o.flag for o in family.options) or "none"
    return f"is not an option of {family.name} models (theirs: {own})"


def option_flag(name):
    """The flag of the option called `name` in any family (`--name` if none has it)."""
    for family in FAMILIES.values():
        option = family.option(name)
        if option is not None:
            return option.flag
    return "--" + name.replace("_", "-")


def all_options():
    """Every family's options, once each by name (the commands' flags)."""
    seen = {}
    for family in FAMILIES.values():
        for option in family.options:
            seen.setdefault(option.name, option)
    return tuple(seen.values())


ALEXNET_OPTIONS = (
    Option(
        name="towers",
        flag_name="towers",
        default=2,
        type=int,
        minimum=1,
        label=lambda v: f"{v} tower{'s' if v > 1 else ''}",
        help="towers (groups of conv2, conv4, conv5 and LRN); 1 is one ungrouped tower, N "
        "must divide every conv layer's width (default: 2, the paper's two GPUs, Section 3.2)",
    ),
    Option(
        name="use_lrn",
        flag_name="lrn",
        default=True,
        type=bool,
        label=lambda v: "LRN" if v else "no LRN",
        help="leave out local response normalisation, the ablation of Section 3.3, which "
        "credits LRN with 1.4 / 1.2 points of top-1 / top-5 error (default: on)",
    ),
    Option(
        name="pool",
        flag_name="pool",
        default="overlapping",
        choices=tuple(POOLS),
        label=lambda v: f"{v.replace('_', '-')} pool",
        help="overlapping (3x3 windows, stride 2) or non_overlapping (2x2, stride 2), the "
        "ablation of Section 3.4, which credits overlapping pooling with 0.4 / 0.3 points of "
        "top-1 / top-5 error (default: overlapping, the paper's)",
    ),
)

FAMILIES = {
    "alexnet": Family(
        name="alexnet",
        builder="keras_alexnet.models.alexnet:alexnet",
        options=ALEXNET_OPTIONS,
        smallest_input=67,
        small_resize=76,
        square_layout=True,
        prepared_size=ALEXNET_SIZE,
        check="keras_alexnet.models.alexnet:check_args",
    ),
    "alexnet_tv": Family(
        name="alexnet_tv",
        builder="keras_alexnet.models.alexnet_tv:alexnet_tv",
        smallest_input=63,  # pool5 still gets 3x3 maps: 63 -> 15 -> 7 -> 7 -> 3 -> 3 -> 1
        small_resize=72,
        square_layout=True,
        prepared_size=ALEXNET_SIZE,
    ),
    "vgg": Family(
        name="vgg",
        builder="keras_alexnet.models.vgg:vgg",
        smallest_input=32,
        small_resize=36,
        square_layout=False,
        prepared_size=VGG_MAX_SCALE,
        init_from=True,
    ),
}


# Each family's paper recipe (AlexNet Sections 5 and 4.1, VGG Sections 3.1 and 3.2), which
# its rows take unless they say otherwise.
PAPER_RECIPES = {
    "alexnet": {"input_size": 227, "resize": 256, "batch_size": 128, "epochs": 90,
                "protocol": "ten_crop"},
    # torchvision's AlexNet with the AlexNet paper's schedule at torchvision's 224, and
    # torchvision's input standardisation and He init: on raw 0-255 differences it
    # diverges with Glorot's init and stays at chance with the paper's N(0, 0.01).
    "alexnet_tv": {"input_size": 224, "resize": 256, "batch_size": 128, "epochs": 90,
                   "protocol": "ten_crop", "train_init": "he",
                   "train_scale": 1 / TORCHVISION_STD},
    "vgg": {"input_size": 224, "resize": 256, "batch_size": 256, "epochs": 74,
            "protocol": "dense", "train_init": "glorot"},
}  # fmt: skip


def _row(name, family, **fields):
    """A ModelSpec with the family's paper recipe where the row does not say otherwise."""
    args = types.MappingProxyType(fields.pop("builder_args", {}))
    return ModelSpec(
        name=name, family=family, builder_args=args, **{**PAPER_RECIPES[family], **fields}
    )


MODELS = {
    spec.name: spec
    for spec in (
        _row("alexnet", "alexnet", summary="AlexNet, NIPS 2012: two towers, LRN, 227 input"),
        _row("vgg_a", "vgg", builder_args={"config": "A"}, summary="VGG A (11 layers)"),
        _row("vgg_a_lrn", "vgg", builder_args={"config": "A-LRN"}, summary="VGG A-LRN"),
        _row("vgg_b", "vgg", builder_args={"config": "B"}, summary="VGG B (13 layers)"),
        _row("vgg_c", "vgg", builder_args={"config": "C"}, summary="VGG C (16, 1x1 convs)"),
        _row("vgg_d", "vgg", builder_args={"config": "D"}, summary="VGG D (16 layers)"),
        _row("vgg_e", "vgg", builder_args={"config": "E"}, summary="VGG E (19 layers)"),
        _row("alexnet_tv", "alexnet_tv",
             summary="torchvision's AlexNet (one weird trick): one tower, no LRN, 224 input"),
        *(
            _row(f"vgg{depth}_bn", "vgg", builder_args={"config": config, "batch_norm": True},
                 summary=f"torchvision's VGG {config} with batch norm ({depth} layers)")
            for depth, config in (("11", "A"), ("13", "B"), ("16", "D"), ("19", "E"))
        ),
    )
}  # fmt: skip
ALIASES = {"vgg11": "vgg_a", "vgg13": "vgg_b", "vgg16": "vgg_d", "vgg19": "vgg_e"}
MODEL_NAMES = tuple(MODELS)


def model_choices():
    """Every name a command's --model takes: the models and their aliases."""
    return [*MODELS, *ALIASES]


def get_spec(name):
    """Return the ModelSpec of a model name or alias; ValueError listing valid names."""
    key = str(name).lower()
    key = ALIASES.get(key, key)
    if key not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Valid names: {', '.join(model_choices())}")
    return MODELS[key]


def recorded_name(name):
    """The name a model asked for is recorded under: lower case, an alias kept (vgg16)."""
    get_spec(name)  # a valid name or alias, else the ValueError listing them
    return str(name).lower()


def same_model(a, b):
    """Whether two recorded names (or aliases) name the same net: vgg16 and vgg_d do."""
    return get_spec(a).name == get_spec(b).name


def list_models():
    """The model names (without aliases), in the registry's order."""
    return list(MODELS)
