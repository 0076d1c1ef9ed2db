"""Top-1/top-5 of a trained model under the papers' test protocols, in any runtime.

--model is a .keras file, a training run directory, a SavedModel directory or an .onnx
file (run with onnxruntime). Without --data it evaluates on the data the model was
trained on, as recorded in its metadata, so `--model export/alexnet.onnx` works alone.
"""

import argparse

from keras_alexnet import cli, fileio
from keras_alexnet.evaluation import (
    ALL,
    evaluate,
    evaluate_all,
    format_all,
    format_table,
    parse_scales,
    write_results,
)
from keras_alexnet.onnx.session import AUTO, provider_help
from keras_alexnet.protocols import PROTOCOLS, default_protocol_help, default_scales_help


def get_args_parser():
    """Return the command-line parser."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for add in (_model_args, _data_args, _protocol_args, _output_args):
        add(p)
    return p


def _model_args(parser):
    """Add the model and runtime flags."""
    p = parser.add_argument_group("model and runtime")
    p.add_argument(
        "--model",
        required=True,
        help="a .keras file, a run directory, a SavedModel directory or an .onnx file",
    )
    p.add_argument(
        "--threads",
        type=cli.non_negative_int,
        default=None,
        help="onnxruntime intra-op threads; none: all cores (default: %(default)s)",
    )
    p.add_argument("--provider", default=AUTO, help=provider_help())


def _data_args(parser):
    """Add the data flags."""
    p = parser.add_argument_group("data")
    cli.add_source_arguments(p, recorded=True, split=False, seed_and_cache=False)
    p.add_argument("--split", default="val", help="split to evaluate (default: %(default)s)")


def _protocol_args(parser):
    """Add the protocol (AlexNet Section 4.1, VGG Sections 3.2 and 4) flags."""
    p = parser.add_argument_group("protocol (AlexNet Section 4.1, VGG Sections 3.2 and 4)")
    p.add_argument(
        "--protocol",
        default=None,
        choices=[*PROTOCOLS, "all"],
        help="test protocol, or all: one table of top-1 / top-5 under every protocol for "
        "this model, its own marked, each image decoded once (to set protocols apart from "
        "nets: run it for each of two models); --scales applies to multi_scale's row, "
        f"--resize and --image-size to every row; none: {default_protocol_help()} "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--scales",
        default=None,
        help=f"test scales Q of multi_scale, comma-separated; none: {default_scales_help()} "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--resize",
        type=cli.positive_int,
        default=None,
        help="shorter side Q before cropping / dense; none: the metadata's (default: %(default)s)",
    )
    p.add_argument(
        "--image-size",
        type=cli.positive_int,
        default=None,
        help="crop size; none: the model's input size (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=cli.positive_int,
        default=32,
        help="images per batch (default: %(default)s)",
    )


def _output_args(parser):
    """Add the output flags."""
    p = parser.add_argument_group("output")
    p.add_argument(
        "--output-json",
        default=None,
        help="also write the results as JSON here (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: %(default)s)")


def main(args):
    """Evaluate, print the table, and write the JSON."""
    if args.output_json:
        fileio.check_writable(args.output_json)  # before the pass, not after it
    every = args.protocol == ALL
    results = (evaluate_all if every else evaluate)(
        args.model,
        data=args.data,
        data_dir=args.data_dir,
        split=args.split,
        **({} if every else {"protocol": args.protocol}),
        scales=None if args.scales is None else parse_scales(args.scales),
        image_size=args.image_size,
        resize=args.resize,
        batch_size=args.batch_size,
        threads=args.threads,
        provider=args.provider,
        verbose=not args.quiet,
    )
    if every:
        results = skipped_with_flags(results)
    print(format_all(results) if every else format_table(results))
    if args.output_json:
        write_results(args.output_json, {"protocols": results} if every else results)
        print(f"Wrote {args.output_json}")


def skipped_with_flags(results):
    """`evaluate_all`'s results, each skipped protocol's reason naming this command's flags."""
    parser = get_args_parser()
    return [
        {**r, "skipped": cli.with_flags(r["skipped"], parser)} if "skipped" in r else r
        for r in results
    ]
