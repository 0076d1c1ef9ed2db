"""Print a published model's layer summary and its parameter count."""

import argparse

from keras_alexnet import cli
from keras_alexnet.registry import model_choices


def get_args_parser():
    """Return the argument parser of this script."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model",
        default="alexnet",
        choices=model_choices(),
        help="which published model to build (default: %(default)s)",
    )
    parser.add_argument(
        "--classes",
        type=cli.positive_int,
        default=1000,
        help="number of classes (default: %(default)s)",
    )
    cli.add_model_options(parser.add_argument_group("architecture options"))
    return parser


def main(args):
    """Build the model and print its summary and parameter count."""
    from keras_alexnet.models import build_model

    values = vars(args)
    options = cli.pop_model_options(values)
    model = build_model(args.model, classes=args.classes, **options)
    model.summary()
    print(f"{model.name}: {model.count_params():,} parameters")
