"""What every command shares: process start-up, one-line errors, validated argument types.

`prepare_process` is the first thing a command does, before TensorFlow is imported: it
sets the commands' TensorFlow defaults and keeps TensorFlow's start-up banner out of
their stderr. The library itself (`import keras_alexnet`) changes neither the
environment nor the import system.

A command ends with::

    cli.run(main, get_args_parser(), argv, name="evaluate")

`run` parses the arguments, calls `main(args)` and turns what a user can cause (an
OSError, a ValueError, any `keras_alexnet.errors.Error` such as
TrainingError, ExportError, ModelPathError, EvaluationError) into one line on stderr,
`evaluate: error: cannot write /x/y: Permission denied`, with exit status 1; Ctrl-C
exits with 130 and no traceback. Anything else is a bug and keeps its traceback. The
library names a setting as its Python field, in backticks (`batch_size`, errors.field);
the line names the command's flag instead (--batch-size: `with_flags`). A command passes
the library's `log` callables `flag_log(parser)`, so their lines name flags too.

The `type=` validators (`positive_int`, `non_negative_int`, `positive_float`,
`non_negative_float`, `fraction`) make argparse reject bad numbers, nan and inf in its own
format: `evaluate.py: error: argument --batch-size: must be an integer >= 1. Received: '0'`.
"""

import argparse
import math
import os
import re
import sys

from keras_alexnet import _quiet
from keras_alexnet.errors import Error
from keras_alexnet.registry import FAMILIES, all_options

ARGPARSE_ERROR = 2  # argparse's own exit status for a bad command line
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C
# The commands' defaults, each kept when the user set the variable.
PROCESS_DEFAULTS = {
    # The commands are TensorFlow programs (tf.data, tf.distribute, export): a keras.json
    # naming another backend must not break them. The models run on every backend.
    "KERAS_BACKEND": "tensorflow",
    # TensorFlow turns oneDNN on by default only on CPUs with AVX-512 VNNI/BF16 or AMX. On
    # an AVX2 CPU its Eigen kernels train much slower (fc6's transposed MatMul gradient
    # above all; benchmarks/RESULTS.md has the numbers), and oneDNN differentiates grouped
    # convolutions natively. TF reads it at its first import; 0 turns oneDNN off.
    "TF_ENABLE_ONEDNN_OPTS": "1",
    # INFO and WARNING lines (XLA's compile notices and "Ignoring Assert operator" under
    # --jit-compile, tf.data's every epoch, a failed decode's "Local rendezvous is
    # aborting") stay out of the commands' stderr; a command's own process also filters
    # the ERROR lines and libjpeg's messages about corrupt images (_quiet), which the
    # command reports itself. Set it (0 shows everything) and nothing is filtered.
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def prepare_process(*, program=False):
    """Set PROCESS_DEFAULTS and quiet TensorFlow's start-up; call before TensorFlow is imported.

    `program`: this is a command's own process (not, say, a test importing a command), so
    its native stderr is filtered too, unless the user set TF_CPP_MIN_LOG_LEVEL.
    """
    user_log_level = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    for name, value in PROCESS_DEFAULTS.items():
        os.environ.setdefault(name, value)
    _quiet.install()
    if program and not user_log_level:
        _quiet.filter_native_stderr()


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, without "(default: None)": a flag left out says in words what it does."""

    def _expand_help(self, action):
        text = super()._expand_help(action)
        if action.default is None:
            text = re.sub(r"\s*\(default: None\)", "", text).replace("(default: None: ", "(")
        return text


def plural(count, noun):
    """`1 epoch`, `3 epochs`: a count and its noun, in the number it takes."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def percent(fraction):
    """An accuracy as every command shows it (evaluate's tables too): `95.33%`."""
    return f"{fraction:.2%}"


def run(main, parser, argv=None, *, name=None):
    """Parse `argv` (default sys.argv[1:]) with `parser`, call `main(args)`, exit on errors.

    `name` prefixes the error line (`name: error: ...`; None: `error: ...`). A bad flag is
    one line too (argparse's message, with `--help` named instead of the whole usage).
    Returns what `main` returns.
    """
    parser.formatter_class = HelpFormatter
    parser.error = lambda message: _exit(
        f"{parser.prog}: error: {message} (see --help)", ARGPARSE_ERROR
    )
    args = parser.parse_args(argv)
    try:
        return main(args)
    except KeyboardInterrupt:
        _exit(_prefix(name) + "interrupted", INTERRUPTED)
    except Exception as e:
        if not is_user_error(e):
            raise
        _exit(_prefix(name) + with_flags(describe(e), parser), 1)


def flags_by_field(parser):
    """The flag of each setting `parser` fills: {dest: its first long flag} (argparse's actions).

    `batch_size` -> --batch-size; a dest two flags set (--precision, --mixed-precision)
    keeps the one declared first, the flag that takes its value.
    """
    table = {}
    for action in parser._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if long:
            table.setdefault(action.dest, long[0])
    return table


def with_flags(text, parser):
    """`text` with each setting named as a field (`batch_size`) named by its flag instead.

    A field that is none of `parser`'s settings keeps its backticks.
    """
    table = flags_by_field(parser)
    return re.sub(r"`(\w+)`", lambda m: table.get(m[1], m[0]), text)


def flag_log(parser):
    """A library call's `log` for a command: print each line, its fields as `parser`'s flags."""
    return lambda line: print(with_flags(line, parser))


def _prefix(name):
    """The start of an error line: `name: error: `, or `error: ` without a name."""
    return f"{name}: error: " if name else "error: "


def _exit(line, status):
    """Print `line` on stderr and exit with `status`, without the exception's context."""
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(status) from None


def is_user_error(error):
    """Whether `error` is one a user causes and can fix (bad path, bad value, full disk)."""
    return isinstance(error, OSError | ValueError | Error)


def describe(error):
    """One line for `error`; an OSError as `PATH: CAUSE` (`cannot write PATH: CAUSE`)."""
    if isinstance(error, OSError) and type(error).__str__ is OSError.__str__:
        if error.filename is not None and error.strerror:
            names = [os.fsdecode(n) for n in (error.filename, error.filename2) if n is not None]
            return f"{' -> '.join(names)}: {error.strerror}"
        if error.strerror:
            return error.strerror
    text = " ".join(str(error).split())  # one line, even for a multi-line message
    return text or type(error).__name__


def number(convert, accept, requirement):
    """An argparse `type=` function: `convert(text)` must be finite and pass `accept`."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}. Received: {text!r}")
        return value

    parse.__doc__ = f"Parse a command-line value that must be {requirement}."
    return parse


positive_int = number(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = number(float, lambda v: v > 0, "a finite number > 0")
non_negative_float = number(float, lambda v: v >= 0, "a finite number >= 0")
fraction = number(float, lambda v: 0 < v < 1, "a number between 0 and 1, both excluded")


def add_source_arguments(parser, *, recorded=False, split=True, seed_and_cache=True):
    """Add the flags naming a data source: --data, --data-dir, --val-fraction, --seed, --cache-dir.

    Every command that reads data takes them from here, so each flag reads the same.
    `recorded`: left out, --data and --data-dir are the model's recorded ones (evaluate),
    not the bundled demo set and TFDS's directory. `split`: the command splits a folder
    with no val/ tree (--val-fraction). `seed_and_cache`: add --seed (the split's) and
    --cache-dir; train has its own (its --seed seeds more, its --cache is its config's).
    """
    parser.add_argument(
        "--data",
        default=None,
        help="a class-folder directory, a prepared directory (prepare.py) or a TFDS name "
        "(e.g. imagenet2012); none: "
        + ("the data in the model's metadata" if recorded else "the bundled digits demo set")
        + " (default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="TFDS data directory for a TFDS name (imagenet2012's archives go in "
        "DATA_DIR/downloads/manual/); none: "
        + ("the metadata's, else TFDS's own" if recorded else "TFDS's own")
        + " (default: %(default)s)",
    )
    if split:
        parser.add_argument(
            "--val-fraction",
            type=fraction,
            default=0.1,
            help="validation share held out of each class of a directory with no val/ tree "
            "(root/<class>/ or root/train/<class>/) (default: %(default)s)",
        )
    if seed_and_cache:
        parser.add_argument(
            "--seed",
            type=non_negative_int,
            default=0,
            help="seed of that validation split (default: %(default)s)",
        )
        parser.add_argument(
            "--cache-dir",
            default=None,
            help="cache directory; none: $KERAS_ALEXNET_CACHE or ~/.cache/keras_alexnet "
            "(default: %(default)s)",
        )


def add_model_options(group):
    """Add a flag for every family's architecture option (the registry's), dest its name.

    Left out, a flag is None: the model's published setting, or a run's recorded one.
    """
    for option in all_options():
        owners = " and ".join(f.name for f in FAMILIES.values() if f.option(option.name))
        kwargs = {"dest": option.name, "default": None, "help": f"{owners} only: {option.help}"}
        if option.type is bool:
            group.add_argument(option.flag, action="store_false", **kwargs)
        elif option.type is int:
            group.add_argument(option.flag, type=positive_int, **kwargs)
        else:
            group.add_argument(option.flag, choices=option.choices, **kwargs)


def pop_model_options(values):
    """Remove the architecture options from `vars(args)`; return those given, as model_args."""
    given = {o.name: values.pop(o.name, None) for o in all_options()}
    return {k: v for k, v in given.items() if v is not None}
