"""Decode every image once into a prepared directory that training reads fast.

AlexNet's images are rescaled to 256x256 as in the paper (shorter side 256, the central
square), VGG's to the largest training scale (shorter side 512), upright (EXIF applied),
re-encoded as JPEG and written in TFRecord shards with the labels, class names and the
dataset statistics. train.py, evaluate.py and compute_stats.py take the directory as --data.
An interrupted run resumes where it stopped, or starts over when the data changed since
(classes or files added, removed or modified); a finished one is left as it is, and one
whose data changed since is stale: --overwrite prepares it anew. One prepare at a time
writes a directory.
"""

import argparse

from keras_alexnet import cli
from keras_alexnet.data import layout
from keras_alexnet.data.layout import size_bounds
from keras_alexnet.registry import FAMILIES, model_choices


def get_args_parser():
    """Return the command-line parser."""
    smallest = ", ".join(f"{f.name} {f.smallest_input}" for f in FAMILIES.values())
    rescaling = ", ".join(
        f"{f.name} {f.prepared_size}x{f.prepared_size}"
        if f.square_layout
        else f"{f.name} shorter side {f.prepared_size}"
        for f in FAMILIES.values()
    )
    parser = argparse.ArgumentParser(description=__doc__)
    cli.add_source_arguments(parser)
    parser.add_argument("--output", required=True, help="the prepared directory to write")
    parser.add_argument(
        "--model",
        default="alexnet",
        choices=model_choices(),
        help=f"whose family's rescaling to apply: {rescaling} (default: %(default)s)",
    )
    parser.add_argument(
        "--size",
        type=cli.positive_int,
        default=None,
        help="the shorter side to rescale to instead (a VGG trained at one scale S needs S, "
        f"and decodes least at exactly S), from the model's smallest input ({smallest}) to "
        f"{layout.MAX_SIZE}; none: the model's (default: %(default)s)",
    )
    parser.add_argument(
        "--quality",
        type=_quality,
        default=layout.QUALITY,
        help="JPEG quality of the prepared images, 1-100 (default: %(default)s)",
    )
    parser.add_argument(
        "--shard-size",
        type=cli.positive_int,
        default=layout.SHARD_SIZE,
        help="images per TFRecord file (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=cli.positive_int,
        default=None,
        help="decoding threads; none: one per core (default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="prepare anew into an --output that holds a prepared set (a stale one, or one "
        "with other settings) or an unfinished pass (default: %(default)s)",
    )
    return parser


_quality = cli.number(int, lambda v: 1 <= v <= 100, "an integer from 1 to 100")


def main(args):
    """Prepare the directory and report what it holds."""
    from keras_alexnet.data.prepared import prepare

    smallest, largest = size_bounds(args.model)
    if args.size is not None and not smallest <= args.size <= largest:
        raise ValueError(
            f"--size must be from {smallest} ({args.model}'s smallest input) to {largest}. "
            f"Received: {args.size}"
        )
    prepare(
        args.data, args.output, model=args.model, size=args.size, quality=args.quality,
        shard_size=args.shard_size, data_dir=args.data_dir, val_fraction=args.val_fraction,
        seed=args.seed, workers=args.workers, cache=args.cache_dir, overwrite=args.overwrite,
    )  # fmt: skip
