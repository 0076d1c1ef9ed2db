"""Draw conv1's kernels as the AlexNet paper's Figure 3, tower 1 on top, and score their colour.

Each kernel's colour-specificity score is its share of energy off the grey axis after
removing its mean (0: equal in R, G and B; 1: colour-opponent; about 2/3 for random
kernels). The table gives each tower's mean, spread and median and a rank test of whether
the towers differ; it also says when the training data has no colour to learn.
"""

import argparse

from keras_alexnet import cli, fileio
from keras_alexnet.filters import (
    GAP,
    colour_report,
    conv1_kernels,
    conv1_picture,
    format_table,
    write_png,
)


def get_args_parser():
    """Return the command-line parser."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", required=True, help="a run directory, a .keras file or an fp32 .onnx export"
    )
    p.add_argument(
        "--output", default="conv1.png", help="the picture, a PNG (default: %(default)s)"
    )
    p.add_argument(
        "--json", default=None, help="also write the scores as JSON here (default: %(default)s)"
    )
    p.add_argument(
        "--scale",
        type=cli.positive_int,
        default=None,
        help="display pixels per kernel pixel, each way (default: enough for 44-pixel "
        "kernels: 4 for AlexNet's 11x11, 15 for VGG's 3x3)",
    )
    p.add_argument(
        "--gap",
        type=cli.non_negative_int,
        default=GAP,
        help="background rows between towers (default: %(default)s)",
    )
    return p


def main(args):
    """Write the picture, print the table, write the JSON."""
    for path in (args.output, args.json):
        if path:
            fileio.check_writable(path)
    conv1 = conv1_kernels(args.model)
    write_png(
        args.output, conv1_picture(conv1.kernels, conv1.towers, scale=args.scale, gap=args.gap)
    )
    report = {"model": str(args.model), **colour_report(conv1)}
    print(format_table(report))
    print(f"Wrote {args.output}")
    if args.json:
        fileio.write_json(args.json, report)
        print(f"Wrote {args.json}")
