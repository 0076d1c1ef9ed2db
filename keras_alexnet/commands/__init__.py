"""The command-line programs: one module per command, with `get_args_parser()` and `main(args)`.

They are installed as console scripts (`keras-alexnet-train`, ... in pyproject.toml's
[project.scripts], entering through the `run_*` functions below) and run from a checkout
as `python scripts/train.py`. Either way the process is prepared
(`cli.prepare_process`: oneDNN on, quiet start-up) before the command's module, and with
it TensorFlow, is imported.
"""

import functools
import importlib

from keras_alexnet import cli

# The commands, each a module of this package. Every error line starts with the program's
# name as it was run (`train.py: error: ...`, `keras-alexnet-train: error: ...`), argparse's
# form, for a bad flag and a failure alike.
COMMANDS = (
    "train",
    "evaluate",
    "export_onnx",
    "export_savedmodel",
    "predict",
    "serve",
    "compute_stats",
    "prepare",
    "summary",
    "plot",
    "filters",
    "import_weights",
)


def load(command):
    """Prepare the process, then import and return `command`'s module."""
    cli.prepare_process()
    return importlib.import_module(f"{__name__}.{command}")


def launch(command, argv=None):
    """Run `command` as a program: parse `argv` (default sys.argv[1:]), one-line errors."""
    cli.prepare_process(program=True)
    module = load(command)
    parser = module.get_args_parser()
    cli.run(module.main, parser, argv, name=parser.prog)


def script(command, caller):
    """What scripts/COMMAND.py does: run `command` if `caller` is "__main__".

    Returns the command's `get_args_parser` and `main`, for code that imports the script.
    """
    if caller == "__main__":
        launch(command)
    module = load(command)
    return module.get_args_parser, module.main


# The console scripts' entry points (pyproject.toml's [project.scripts]).
run_train = functools.partial(launch, "train")
run_evaluate = functools.partial(launch, "evaluate")
run_export_onnx = functools.partial(launch, "export_onnx")
run_export_savedmodel = functools.partial(launch, "export_savedmodel")
run_predict = functools.partial(launch, "predict")
run_serve = functools.partial(launch, "serve")
run_compute_stats = functools.partial(launch, "compute_stats")
run_prepare = functools.partial(launch, "prepare")
run_summary = functools.partial(launch, "summary")
run_plot = functools.partial(launch, "plot")
run_filters = functools.partial(launch, "filters")
run_import_weights = functools.partial(launch, "import_weights")
