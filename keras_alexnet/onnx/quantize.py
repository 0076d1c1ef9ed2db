"""Static int8 quantisation of an fp32 ONNX export, and its top-1 agreement with fp32.

Follows onnxruntime's recipe: `quant_pre_process` (shape inference + graph optimisation),
then `quantize_static` calibrated on arrays of crops the caller cuts
(`keras_alexnet.calibration`), so this package reads no data source. The int8 file keeps
the fp32 file's metadata and adds `keras_alexnet.quantization`.
"""

import time
from pathlib import Path

import numpy as np

from keras_alexnet import fileio
from keras_alexnet.artifacts import INPUT_NAME, OUTPUT_NAME, PROPERTY_PREFIX, ExportError
from keras_alexnet.onnx.proto import set_properties
from keras_alexnet.onnx.session import VERIFY_PROVIDER, onnx_session, properties, read_metadata

QUANT_FORMATS = ("qdq", "qoperator")
DEFAULT_FORMAT = "qoperator"  # the faster on a CPU: benchmarks/RESULTS.md, "Where the time goes"
CALIBRATION_IMAGES = 256  # training crops that calibrate the int8 ranges (RESULTS.md, Export)
AGREEMENT_IMAGES = 256  # held-out crops on which int8 is compared with fp32


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


def quantize_int8(fp32_path, output, images, *, quant_format=DEFAULT_FORMAT, log=print):
    """Statically quantise an fp32 export to int8; return top-1 agreement with fp32.

    Signed int8 weights per channel; int8 activations for QDQ, uint8 for QOperator; MinMax
    calibration; the expanded LRN stays fp32, computed in NHWC
    (`keras_alexnet.onnx.graph.channels_last_lrn`); QOperator max pools on uint8 in NHWC
    (`keras_alexnet.onnx.graph.nhwc_int8_maxpool`). `images` is a `CalibrationImages`:
    the crops the ranges are calibrated on, and the held-out crops (with labels) on which
    the agreement is the fraction whose top-1 class is the same as fp32's.
    """
    if quant_format not in QUANT_FORMATS:
        raise ExportError(f"quant_format must be one of {QUANT_FORMATS}. Received: {quant_format}")
    start = time.perf_counter()
    fp32 = onnx_session(fp32_path, provider=VERIFY_PROVIDER)
    props = properties(fp32)
    read_metadata(props, fp32_path)  # a keras_alexnet export, or one line saying it is not
    output = Path(output)
    with fileio.atomic_path(output) as tmp:
        props[f"{PROPERTY_PREFIX}quantization"] = f'"int8 {quant_format}"'
        _quantize(fp32_path, tmp, images.calibration, quant_format, props)
        int8 = onnx_session(tmp, provider=VERIFY_PROVIDER)
        top_fp32, top_int8 = _top1(fp32, images.held_out), _top1(int8, images.held_out)
    agreement = float(np.mean(top_fp32 == top_int8))
    result = {
        "path": str(output),
        "bytes": output.stat().st_size,
        "seconds": time.perf_counter() - start,
        "format": quant_format,
        "calibration_images": len(images.calibration),
        "agreement": agreement,
        "agreement_images": len(images.held_out),
        "agreement_data": images.held_out_name,
        "top1_fp32": float(np.mean(top_fp32 == images.labels)),
        "top1_int8": float(np.mean(top_int8 == images.labels)),
    }
    log(
        f"Wrote {output} ({result['bytes'] / 2**20:.1f} MiB, int8 {quant_format}, calibrated on "
        f"{len(images.calibration)} training images of {images.source}); top-1 agreement with "
        f"fp32: {agreement:.2%} on {images.held_out_name} (top-1 fp32 "
        f"{result['top1_fp32']:.2%}, int8 {result['top1_int8']:.2%})"
    )
    return result


def _name_nodes_and_find_fp32(path):
    """Name every node of the ONNX file at `path` (in place); return those to keep in fp32.

    LRN's squared activations span many orders of magnitude, too wide for one int8 scale,
    so the nodes `keras_alexnet.onnx.graph.expand_lrn` and `channels_last_lrn` wrote
    (outputs under ".../expanded/") stay fp32. Every convolution is int8, the first one
    too: with the LRN in NHWC that is faster than keeping conv1 in fp32, at the same top-1
    agreement on the demo-trained AlexNet (benchmarks/RESULTS.md, "int8 inference").
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
