"""Compute a dataset's RGB mean and PCA lighting statistics and write them as JSON."""

import argparse
import json

from keras_alexnet import cli, fileio


def get_args_parser():
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__)
    cli.add_source_arguments(parser)
    parser.add_argument(
        "--output",
        default=None,
        help="JSON file to write; none: print only (default: %(default)s)",
    )
    return parser


def main(args):
    """Compute, write and print the statistics."""
    from keras_alexnet.data import source_stats

    if args.output:
        fileio.check_writable(args.output)  # before the pass over the data, not after it
    result = source_stats(
        args.data,
        args.data_dir,
        output=args.output,
        val_fraction=args.val_fraction,
        seed=args.seed,
        cache=args.cache_dir,
    )
    print(json.dumps(result, indent=2))
