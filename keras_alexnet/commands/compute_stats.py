"""Compute a dataset's RGB mean and PCA lighting statistics and write them as JSON."""

import argparse
import json

from keras_alexnet import cli


def get_args_parser():
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data",
        default=None,
        help="a class-folder directory or a TFDS name; none: the bundled digits demo set "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="TFDS data directory for a TFDS name; none: TFDS's default (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="JSON file to write; none: print only (default: %(default)s)",
    )
    parser.add_argument(
        "--val-fraction",
        type=cli.fraction,
        default=0.1,
        help="validation share of a folder without train/ and val/ (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=cli.non_negative_int,
        default=0,
        help="seed of that validation split (default: %(default)s)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="cache directory; none: $KERAS_ALEXNET_CACHE or ~/.cache/keras_alexnet "
        "(default: %(default)s)",
    )
    return parser


def main(args):
    """Compute, write and print the statistics."""
    from keras_alexnet import fileio
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
