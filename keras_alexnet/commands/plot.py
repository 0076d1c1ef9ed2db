"""Draw the training curves of one or more run directories overlaid in one PNG.

Five panels per epoch: training loss, training top-1, validation top-1, validation top-5
and the learning rate (log axis); each run is labelled with its name and, for AlexNet, its
towers, LRN and pooling as recorded in its metadata.json (e.g. towers 1 vs 2, LRN on vs
off). Each run directory also keeps its own curves.png, redrawn at every epoch's end.
"""

import argparse

from keras_alexnet import extras
from keras_alexnet.curves import CURVES_FILENAME, draw, read_run


def get_args_parser():
    """Return the argument parser of this script."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directories (each with a history.csv)"
    )
    parser.add_argument(
        "--output",
        default=CURVES_FILENAME,
        help="the PNG to write (default: %(default)s)",
    )
    return parser


def main(args):
    """Read every run's history and metadata, draw them overlaid, say where."""
    extras.require("plots")
    runs = [read_run(path) for path in args.runs]
    output = draw(runs, args.output)
    print(f"Wrote {output}: {', '.join(run.label for run in runs)}")
    return runs
