"""Export a trained Keras model to one ONNX file (optionally also int8), verified.

The file takes float32 RGB pixels on the 0-255 scale, [N, H, W, 3] named "images" (the
mean is subtracted inside), and returns "probabilities" [N, classes]; its metadata
properties hold the classes and preprocessing. H = W = the crop size for a prediction;
larger whole images give the VGG paper's dense evaluation.
"""

import argparse

from keras_alexnet import cli, extras, fileio
from keras_alexnet.export import export_onnx
from keras_alexnet.onnx import quantize


def get_args_parser():
    """Return the command-line parser."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="a .keras file or a training run directory")
    p.add_argument(
        "--output",
        default=None,
        help="the .onnx file; none: export/<model>.onnx (default: %(default)s)",
    )
    p.add_argument(
        "--opset",
        type=cli.positive_int,
        default=None,
        help="ONNX opset; none: tf2onnx's (default: %(default)s)",
    )
    p.add_argument(
        "--keep-lrn",
        action="store_true",
        help="keep ONNX LRN nodes instead of the Conv+elementwise form (its speed: "
        "benchmarks/RESULTS.md) (default: %(default)s)",
    )
    p.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="also write <output stem>.int8.onnx, statically quantised (default: %(default)s)",
    )
    p.add_argument(
        "--calibration-data",
        default=None,
        help="data whose training images calibrate int8; none: the data in the model's "
        "metadata (default: %(default)s)",
    )
    p.add_argument(
        "--calibration-data-dir",
        default=None,
        help="TFDS data directory of --calibration-data (default: %(default)s)",
    )
    p.add_argument(
        "--calibration-images",
        type=cli.positive_int,
        default=quantize.CALIBRATION_IMAGES,
        help="training images to calibrate on (default: %(default)s)",
    )
    p.add_argument(
        "--agreement-images",
        type=cli.positive_int,
        default=quantize.AGREEMENT_IMAGES,
        help="held-out images to measure int8 vs fp32 top-1 agreement on (default: %(default)s)",
    )
    p.add_argument(
        "--quant-format",
        choices=quantize.QUANT_FORMATS,
        default=quantize.DEFAULT_FORMAT,
        help="onnxruntime quantisation format: qoperator (QLinear operators) or qdq "
        "(Quantize/DequantizeLinear around float operators); the default is the faster on a "
        "CPU: benchmarks/RESULTS.md, 'Where the time goes' (default: %(default)s)",
    )
    return p


def main(args):
    """Export, verify, and report."""
    if args.quantize:
        extras.require("int8")  # before the fp32 conversion, not after it
    if args.output:
        fileio.check_writable(args.output)  # before the conversion, not after it
    export_onnx(
        args.model,
        args.output,
        opset=args.opset,
        expand_lrn=not args.keep_lrn,
        quantize=args.quantize,
        calibration_data=args.calibration_data,
        calibration_data_dir=args.calibration_data_dir,
        calibration_images=args.calibration_images,
        agreement_images=args.agreement_images,
        quant_format=args.quant_format,
    )
