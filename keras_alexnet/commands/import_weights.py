"""Import a published weight file into one of our models and write a run directory.

The format comes from the file's name (Keras Applications' .h5, torchvision's .pth /
.safetensors, and the other formats of keras_alexnet.weights.FORMATS); the source's
preprocessing from its preset, which the flags below override. The model keeps the file's
classifier: ImageNet's class names for 1000 outputs, else --classes FILE's or 0 .. N-1. The
run directory (best.keras, metadata.json, command.json) is what training writes: evaluate,
export, serve and predict take it unchanged. A publisher's name instead of a file (keras,
torchvision, caffe, imagenet) takes its file for --model from the cache, downloading and
verifying it the first time; nothing else is downloaded.
"""

import argparse

from keras_alexnet import cli
from keras_alexnet.protocols import PROTOCOLS
from keras_alexnet.registry import model_choices
from keras_alexnet.weights import import_weights
from keras_alexnet.weights.presets import CHANNEL_ORDERS


def _three_floats(text):
    """Parse 'R,G,B' into three floats."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"must be three numbers R,G,B. Received: {text!r}")
    return values


def get_args_parser():
    """Return the argument parser of this script."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "source",
        help="the weight file (.h5, .pth, .safetensors, ...), or a publisher's name: keras, "
        "torchvision, caffe, or imagenet (the first of them that publishes --model)",
    )
    parser.add_argument(
        "--model",
        required=True,
        choices=model_choices(),
        help="which of our models the weights are for (default: %(default)s)",
    )
    parser.add_argument(
        "--output", required=True, help="the run directory to write (default: %(default)s)"
    )
    parser.add_argument(
        "--classes",
        default=None,
        metavar="FILE",
        help="the names of the file's classes, one a line, as many as its last layer has "
        "outputs (default: %(default)s: ImageNet's for 1000 outputs, else 0 .. N-1)",
    )
    preset = parser.add_argument_group(
        "preprocessing", "override the source's preset (default: the source's, as documented)"
    )
    preset.add_argument(
        "--channel-order",
        choices=CHANNEL_ORDERS,
        default=None,
        help="the channel order the source's first layer reads (default: %(default)s)",
    )
    preset.add_argument(
        "--mean",
        type=_three_floats,
        default=None,
        help="R,G,B mean on the 0-255 scale, subtracted (default: %(default)s)",
    )
    preset.add_argument(
        "--std",
        type=_three_floats,
        default=None,
        help="R,G,B divisor on the 0-255 scale after the mean (default: %(default)s)",
    )
    preset.add_argument(
        "--input-size",
        type=cli.positive_int,
        default=None,
        help="the crop the weights take (default: %(default)s)",
    )
    preset.add_argument(
        "--resize",
        type=cli.positive_int,
        default=None,
        help="shorter side before the centre crop (default: %(default)s)",
    )
    preset.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        default=None,
        help="the evaluation protocol recorded in metadata.json (default: %(default)s)",
    )
    return parser


def main(args):
    """Import the weights and print where the run directory is."""
    bgr = None if args.channel_order is None else args.channel_order == "bgr"
    output = import_weights(
        args.source,
        args.model,
        args.output,
        class_names=args.classes,
        bgr=bgr,
        mean=args.mean,
        std=args.std,
        input_size=args.input_size,
        resize=args.resize,
        protocol=args.protocol,
    )
    print(f"Wrote {output} (best.keras, metadata.json) from {args.source}")
