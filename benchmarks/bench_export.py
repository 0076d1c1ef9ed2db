"""Export measurements of AlexNet, VGG A (both demo-trained) and a full-size VGG D.

For each model: ONNX export time and size, ONNX-vs-Keras max relative error, int8 static
quantisation in both onnxruntime formats (QDQ and QOperator): size, top-1 agreement with
fp32 on held-out images, and onnxruntime CPU throughput of fp32 vs int8.

AlexNet and VGG A are trained by the training stage on the bundled digits (demo settings,
--epochs: AlexNet on 67x67 crops, VGG A on 32x32), so their int8 agreement is measured on
trained nets. A full-size VGG D is too slow to train on a 2-core CPU, so it is exported with
Glorot-initialised weights, for its size and speed (its int8 agreement is then a statement
about quantisation noise on an untrained net, and says so in the table). Results go to the
"Export" section of RESULTS.md.

    python benchmarks/bench_export.py --models alexnet,vgg_a,vgg_d
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import provenance, update_section  # noqa: E402
from keras_alexnet.onnx.quantize import CALIBRATION_IMAGES  # noqa: E402


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--models",
        default="alexnet,vgg_a,vgg_d",
        help="comma-separated; vgg_d is exported untrained at full size, the others trained "
        "as the demo (default: %(default)s)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=4,
        help="demo epochs of the trained models; 4 is the README demo command "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--calibration-images",
        type=int,
        default=CALIBRATION_IMAGES,
        help="training crops int8 is calibrated on (default: export's, %(default)s)",
    )
    p.add_argument(
        "--agreement-images",
        type=int,
        default=364,
        help="held-out images for the trained models' int8 agreement (default: %(default)s)",
    )
    p.add_argument(
        "--vgg-agreement-images",
        type=int,
        default=128,
        help="held-out images for the untrained full-size VGG D (default: %(default)s)",
    )
    p.add_argument(
        "--work-dir",
        default=None,
        help="where runs and exports are kept; a trained run found there is reused "
        "(default: a temporary directory)",
    )
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    return p


UNTRAINED = "vgg_d"  # exported at full size with Glorot weights: too slow to train here


def make_run(name, work, epochs):
    """A run directory: trained on the demo digits (demo settings), VGG D Glorot-initialised."""
    from keras_alexnet.training import TrainConfig, train

    run = work / name
    if name != UNTRAINED:
        if not (run / "best.keras").exists():
            result = train(TrainConfig(model=name, output=str(run), epochs=epochs))
            print(f"trained {name}: val top-1 {result.val_top1:.4f}", flush=True)
        return run, f"trained {epochs} epochs on the demo digits (training stage, demo settings)"
    from keras_alexnet.data import load_source
    from keras_alexnet.metadata import Metadata
    from keras_alexnet.models import build_model, get_spec

    if not (run / "best.keras").exists():
        source = load_source(None)
        spec = get_spec(name)
        mean = tuple(source.stats.mean)
        model = build_model(
            name, classes=len(source.class_names), init="glorot", seed=0, mean=mean, scale=1 / 128
        )
        run.mkdir(parents=True, exist_ok=True)
        model.save(run / "best.keras")
        Metadata(
            model=spec.name, class_names=tuple(source.class_names), input_size=spec.input_size,
            resize=spec.resize, mean=mean, scale=1 / 128, protocol=spec.protocol,
        ).save(run / "metadata.json")  # fmt: skip
    return run, "untrained (Glorot init, seed 0), 10 classes, demo-set mean"


def throughput(path, images, repeats=3):
    """Best-of-`repeats` onnxruntime images/s on `images` (one batch)."""
    from keras_alexnet.onnx.session import onnx_session

    session = onnx_session(path)
    session.run(None, {"images": images})
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"images": images})
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def measure(name, work, args):
    from keras_alexnet.calibration import center_crops
    from keras_alexnet.data import load_source
    from keras_alexnet.export import export_onnx, quantize_export
    from keras_alexnet.runtime import load_metadata

    run, weights = make_run(name, work, args.epochs)
    onnx_path = work / f"{name}.onnx"
    fp32 = export_onnx(run, onnx_path)
    agreement_images = args.vgg_agreement_images if name == UNTRAINED else args.agreement_images
    metadata = load_metadata(onnx_path)
    crops, _ = center_crops(load_source(None), metadata, "val", 8)
    row = {
        "model": name,
        "weights": weights,
        "fp32": fp32,
        "fp32_ips": throughput(onnx_path, crops),
    }
    for fmt in ("qdq", "qoperator"):
        out = work / f"{name}.int8.{fmt}.onnx"
        row[fmt] = quantize_export(
            onnx_path, out, calibration_images=args.calibration_images,
            agreement_images=agreement_images, quant_format=fmt,
        )  # fmt: skip
        row[fmt + "_ips"] = throughput(out, crops)
    print(json.dumps(row, indent=2, default=str), flush=True)
    return row


def table(rows):
    lines = [
        "| model | weights | ONNX vs Keras max rel. error | export time | fp32 size | fp32 img/s "
        "| int8 format | int8 size | quantise time | int8 img/s | top-1 agreement with fp32 "
        "| top-1 fp32 / int8 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for fmt in ("qdq", "qoperator"):
            q = r[fmt]
            lines.append(
                f"| {r['model']} | {r['weights']} | {r['fp32']['max_relative_error']:.2g} "
                f"| {r['fp32']['seconds']:.0f} s | {r['fp32']['bytes'] / 2**20:.1f} MiB "
                f"| {r['fp32_ips']:.1f} | {fmt} | {q['bytes'] / 2**20:.1f} MiB "
                f"| {q['seconds']:.0f} s | {r[fmt + '_ips']:.1f} "
                f"| {q['agreement']:.2%} on {q['agreement_data']} "
                f"| {q['top1_fp32']:.2%} / {q['top1_int8']:.2%} |"
            )
    return "\n".join(lines)


def main(args):
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench_export"))
    work.mkdir(parents=True, exist_ok=True)
    rows = [measure(name, work, args) for name in args.models.split(",")]
    body = "\n".join(
        [
            provenance(),
            "",
            "AlexNet and VGG A as the README's demo trains them (the papers' layers on 67x67 "
            "and 32x32 crops, so fc6 sees a 1x1 map; full-size speed is in *Inference*) and a "
            "full-size VGG D (224x224), 10 demo classes. Export time "
            "includes loading the .keras file, conversion, `check_model(full_check=True)` and "
            "the onnxruntime-vs-Keras verification; the error is max |onnx - keras| / "
            "max |keras| over 4 random crops and one larger (dense) image. int8: "
            "`quant_pre_process` + `quantize_static` (per-channel int8 weights; int8 "
            "activations for QDQ, uint8 for QOperator; MinMax; every conv int8, LRN kept fp32 "
            "and computed in NHWC; QOperator max pools on uint8 NHWC), calibrated on "
            f"{args.calibration_images} centre crops of "
            "training digits. img/s: onnxruntime CPU, one batch of 8 centre crops, best of 3.",
            "",
            table(rows),
        ]
    )
    if not args.no_write:
        update_section("Export", body)
    print(body)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
