"""Print the top-5 classes of images with a Keras, SavedModel or ONNX model.

    python scripts/predict.py --model runs/alexnet IMAGE_OR_DIR ...
    python scripts/predict.py --model export/alexnet.onnx photos/ --json

Files that cannot be read as images are reported on stderr and skipped; the exit status is
1 if none could be classified.
"""

import argparse
import json
import sys

from keras_alexnet import cli
from keras_alexnet.onnx.session import AUTO, provider_help


def get_args_parser():
    """Return the argument parser of this script."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        required=True,
        help="run directory, .keras file (metadata.json beside it), SavedModel directory "
        "or .onnx file",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    p.add_argument("--json", action="store_true", help="print JSON (default: text)")
    p.add_argument(
        "--top",
        type=cli.positive_int,
        default=5,
        help="classes shown per image (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=cli.positive_int,
        default=32,
        help="images per model call (default: %(default)s)",
    )
    p.add_argument("--provider", default=AUTO, help=provider_help())
    return p


def main(args):
    """Load the model, classify every image, print the results."""
    from keras_alexnet.predict import format_text, predict

    results = predict(
        args.model,
        args.inputs,
        batch_size=args.batch_size,
        k=args.top,
        progress=True,
        provider=args.provider,
    )
    for r in results:
        if "error" in r:
            print(f"skipped {r['file']}: {r['error']}", file=sys.stderr)
    print(json.dumps(results, indent=2) if args.json else format_text(results))
    if not any("top5" in r for r in results):
        raise SystemExit(1)
