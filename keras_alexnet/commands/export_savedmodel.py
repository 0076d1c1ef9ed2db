"""Export a trained Keras model as a SavedModel taking float32 or uint8 RGB images, verified.

Signatures: serving_default (float32) and serving_uint8 (uint8), both [N, H, W, 3] named
"images" -> {"probabilities": [N, classes]}; the metadata is in assets/metadata.json.
"""

import argparse

from keras_alexnet import fileio
from keras_alexnet.export import export_savedmodel


def get_args_parser():
    """Return the command-line parser."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="a .keras file or a training run directory")
    p.add_argument(
        "--output",
        default=None,
        help="the SavedModel directory; none: export/<model>_savedmodel (default: %(default)s)",
    )
    return p


def main(args):
    """Export, verify, and report."""
    if args.output:
        fileio.check_writable(args.output)  # before the export, not after it
    export_savedmodel(args.model, args.output)
