"""Print a published model's layer summary and its parameter count."""

import argparse

from keras_alexnet import cli
from keras_alexnet.models import ALIASES, MODEL_NAMES


def get_args_parser():
    """Return the argument parser of this script."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model",
        default="alexnet",
        choices=[*MODEL_NAMES, *ALIASES],
        help="which published model to build (default: %(default)s)",
    )
    parser.add_argument(
        "--classes",
        type=cli.positive_int,
        default=1000,
        help="number of classes (default: %(default)s)",
    )
    parser.add_argument(
        "--towers",
        type=cli.positive_int,
        default=None,
        help="AlexNet only: number of towers; 2 is the paper's, 1 one ungrouped tower (default: 2)",
    )
    return parser


def main(args):
    """Build the model and print its summary and parameter count."""
    from keras_alexnet.models import build_model, get_spec

    if args.towers is not None and get_spec(args.model).family != "alexnet":
        raise ValueError(f"--towers applies to alexnet only, not {args.model}")
    kwargs = {} if args.towers is None else {"towers": args.towers}
    model = build_model(args.model, classes=args.classes, **kwargs)
    model.summary()
    print(f"{model.name}: {model.count_params():,} parameters")
