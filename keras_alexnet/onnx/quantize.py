"""Static int8 quantisation of an fp32 ONNX export, and its top-1 agreement with fp32.

Follows onnxruntime's recipe: `quant_pre_process` (shape inference + graph optimisation),
then `quantize_static` calibrated on centre crops of training images. The int8 file keeps
the fp32 file's metadata and adds `keras_alexnet.quantization`.
"""

import time
from pathlib import Path

import numpy as np

from keras_alexnet import fileio
from keras_alexnet.artifacts import INPUT_NAME, OUTPUT_NAME, PROPERTY_PREFIX, ExportError
from keras_alexnet.onnx.proto import set_properties
from keras_alexnet.onnx.session import VERIFY_PROVIDER, onnx_session, properties, read_metadata
from keras_alexnet.preprocess import EvalTransform

QUANT_FORMATS = ("qdq", "qoperator")
DEFAULT_FORMAT = "qoperator"  # the faster of the two on a CPU (benchmarks/RESULTS.md)
CALIBRATION_IMAGES = 256  # training crops that calibrate the int8 ranges (RESULTS.md, Export)
AGREEMENT_IMAGES = 256  # held-out crops on which int8 is compared with fp32


def center_crops(source, metadata, split, count, batch_size=16):
    """Up to `count` centre crops of `split`, float32 [N, S, S, 3] on 0-255, and labels."""
    from keras_alexnet.data import eval_dataset

    transform = EvalTransform.from_metadata(metadata)
    ds = eval_dataset(
        source, protocol="center", image_size=transform.crop, resize=transform.resize,
        batch_size=batch_size, split=split,
    )  # fmt: skip
    images, labels, total = [], [], 0
    for x, y in ds:
        images.append(x.numpy())
        labels.append(y.numpy())
        total += len(y)
        if total >= count:
            break
    return np.concatenate(images)[:count], np.concatenate(labels)[:count]


class _Calibration:
    """An onnxruntime CalibrationDataReader over a fixed array of images, one batch at a time."""

    def __init__(self, images, batch_size=8):
        self.batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        self.index = 0

    def get_next(self):
        """The next {"images": batch}, or None when done."""
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return {INPUT_NAME: self.batches[self.index - 1]}

    def rewind(self):
        """Start over (onnxruntime calls this between calibration passes)."""
        self.index = 0


def _images(source, metadata, calibration_images, agreement_images):
    """(calibration crops, held-out crops, their labels, a description of the held-out set).

    The held-out images are the validation split, or the training images after the
    calibration ones when there is none.
    """
    if not source.num_train:
        raise ExportError(f"{source.name} has no training images to calibrate on")
    calibration, _ = center_crops(source, metadata, "train", calibration_images)
    if source.num_val:
        held_out, labels = center_crops(source, metadata, "val", agreement_images)
        name = f"{len(held_out)} validation images of {source.name}"
    else:
        rest, labels = center_crops(
            source, metadata, "train", calibration_images + agreement_images
        )
        held_out, labels = rest[len(calibration) :], labels[len(calibration) :]
        name = f"{len(held_out)} training images of {source.name} not used to calibrate"
    if not len(held_out):
        raise ExportError(f"{source.name} has no images left to measure the int8 agreement on")
    return calibration, held_out, labels, name


def _quantize(fp32_path, output, calibration, quant_format, props):
    """Write the int8 model of `fp32_path` to `output`, with metadata properties `props`."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from keras_alexnet.onnx import graph as rewrites

    channels_last = output.with_name("channels_last.onnx")
    onnx.save(rewrites.channels_last_lrn(onnx.load(str(fp32_path))), str(channels_last))
    pre = output.with_name("preprocessed.onnx")
    quant_pre_process(str(channels_last), str(pre))
    excluded = _name_nodes_and_find_fp32(pre)
    quantize_static(
        str(pre),
        str(output),
        _Calibration(calibration),
        nodes_to_exclude=excluded,
        quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
        # onnxruntime's x86-64 QOperator kernels want uint8 activations (U8S8); QDQ S8S8.
        activation_type=QuantType.QInt8 if quant_format == "qdq" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
    )
    proto = onnx.load(str(output))
    if quant_format == "qoperator":
        proto = rewrites.nhwc_int8_maxpool(proto)
    set_properties(proto, props)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(output))


def quantize_int8(
    fp32_path,
    output,
    *,
    data=None,
    data_dir=None,
    calibration_images=CALIBRATION_IMAGES,
    agreement_images=AGREEMENT_IMAGES,
    quant_format=DEFAULT_FORMAT,
    log=print,
):
    """Statically quantise an fp32 export to int8; return top-1 agreement with fp32.

    Signed int8 weights per channel; int8 activations for QDQ, uint8 for QOperator; MinMax
    calibration; the expanded LRN stays fp32, computed in NHWC
    (`keras_alexnet.onnx.graph.channels_last_lrn`); QOperator max pools on uint8 in NHWC
    (`keras_alexnet.onnx.graph.nhwc_int8_maxpool`). Calibrated on centre
    crops of `calibration_images` training images of `data` (None: the bundled demo set).
    The agreement is the fraction of held-out images (see `_images`) whose top-1 class is
    the same as fp32's.
    """
    from keras_alexnet.data import load_source

    if quant_format not in QUANT_FORMATS:
        raise ExportError(f"quant_format must be one of {QUANT_FORMATS}. Received: {quant_format}")
    start = time.perf_counter()
    fp32 = onnx_session(fp32_path, provider=VERIFY_PROVIDER)
    props = properties(fp32)
    metadata = read_metadata(props, fp32_path)
    source = load_source(data, data_dir)
    calibration, held_out, labels, held_out_name = _images(
        source, metadata, calibration_images, agreement_images
    )
    output = Path(output)
    with fileio.atomic_path(output) as tmp:
        props[f"{PROPERTY_PREFIX}quantization"] = f'"int8 {quant_format}"'
        _quantize(fp32_path, tmp, calibration, quant_format, props)
        int8 = onnx_session(tmp, provider=VERIFY_PROVIDER)
        top_fp32, top_int8 = _top1(fp32, held_out), _top1(int8, held_out)
    agreement = float(np.mean(top_fp32 == top_int8))
    result = {
        "path": str(output),
        "bytes": output.stat().st_size,
        "seconds": time.perf_counter() - start,
        "format": quant_format,
        "calibration_images": len(calibration),
        "agreement": agreement,
        "agreement_images": len(held_out),
        "agreement_data": held_out_name,
        "top1_fp32": float(np.mean(top_fp32 == labels)),
        "top1_int8": float(np.mean(top_int8 == labels)),
    }
    log(
        f"Wrote {output} ({result['bytes'] / 2**20:.1f} MiB, int8 {quant_format}, calibrated on "
        f"{len(calibration)} training images of {source.name}); top-1 agreement with fp32: "
        f"{agreement:.2%} on {held_out_name} (top-1 fp32 {result['top1_fp32']:.2%}, int8 "
        f"{result['top1_int8']:.2%})"
    )
    return result


def _name_nodes_and_find_fp32(path):
    """Name every node of the ONNX file at `path` (in place); return those to keep in fp32.

    LRN's squared activations span many orders of magnitude, too wide for one int8 scale,
    so the nodes `keras_alexnet.onnx.graph.expand_lrn` and `channels_last_lrn` wrote
    (outputs under ".../expanded/") stay fp32. Every convolution is int8, the first one
    too: with the LRN in NHWC it was 14-22 % faster than keeping conv1 in fp32 at the same
    top-1 agreement on the demo-trained AlexNet (benchmarks/RESULTS.md, "int8 inference").
    """
    import onnx

    proto = onnx.load(str(path))
    excluded = []
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
        if any("/expanded/" in name for name in node.output):
            excluded.append(node.name)
    onnx.save(proto, str(path))
    return excluded


def _top1(session, images, batch_size=16):
    """Top-1 classes of an onnxruntime session on `images`."""
    out = [
        session.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + batch_size]})[0].argmax(-1)
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out)
