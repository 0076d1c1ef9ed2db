"""Export a trained model to ONNX (optionally int8) and to a SavedModel, with its metadata.

Both exports are the model's fully-convolutional twin (`keras_alexnet.models.dense`): on a
crop of the model's input size it computes what the Keras model computes (the export
verifies that), and on a larger whole image it returns the spatial average of the class
score map, the VGG paper's dense evaluation. Inputs are float32 RGB pixels on the 0-255
scale, [N, H, W, 3], named "images"; the training mean is subtracted inside the graph;
the output, "probabilities", is [N, classes]. The metadata (model name, classes, input
size, resize, mean, protocol, package version) travels inside: ONNX metadata properties,
the SavedModel's `assets/metadata.json`.
"""

import time
import warnings
from pathlib import Path

import numpy as np

from keras_alexnet import _quiet, fileio
from keras_alexnet.metadata import FILENAME as METADATA_FILENAME
from keras_alexnet.runtime import (
    CPU_PROVIDER,
    OUTPUT_NAME,
    SAVEDMODEL_METADATA,
    SERVING_SIGNATURE,
    load_keras_model,
    onnx_session,
)

EXPORT_DIR = Path("export")
INPUT_NAME = "images"
UINT8_SIGNATURE = "serving_uint8"
MAX_RELATIVE_ERROR = 1e-5
QUANT_FORMATS = ("qdq", "qoperator")
GRAPPLER_INFO = ("] Number of eligible GPUs", "] Starting new session")
# Exports are checked on the CPU whatever GPU onnxruntime offers: GPU kernels (TF32
# convolutions) differ by more than MAX_RELATIVE_ERROR, and the int8 kernels are CPU ones.
VERIFY_PROVIDER = CPU_PROVIDER


class ExportError(RuntimeError):
    """An export that failed or did not verify; nothing was written at the target."""


def relative_error(got, expected):
    """Return max |got - expected| / max |expected|, the error relative to the output's scale."""
    expected = np.asarray(expected, np.float64)
    scale = max(float(np.abs(expected).max()), np.finfo(np.float32).tiny)
    return float(np.abs(np.asarray(got, np.float64) - expected).max() / scale)


def check_inputs(size, count=4, seed=0):
    """Verification inputs: `count` random RGB crops on 0-255 and one larger whole image."""
    rng = np.random.default_rng(seed)
    crops = rng.uniform(0, 255, (count, size, size, 3)).astype(np.float32)
    whole = rng.uniform(0, 255, (1, size + 32, size + 48, 3)).astype(np.float32)
    return crops, whole


def _dense_twin(model):
    """The model's fully-convolutional twin, called once (Keras exports need that)."""
    from keras_alexnet.models.dense import fully_convolutional

    twin = fully_convolutional(model)
    size = model.input_shape[1]
    twin.predict_on_batch(np.zeros((1, size, size, 3), np.float32))
    return twin


def _rename(graph, old, new):
    """Rename tensor `old` to `new` everywhere in an ONNX graph."""
    if old == new:
        return
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


def _set_properties(model, props):
    """Replace the ONNX model's metadata_props by `props` (a str -> str dict)."""
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


# ONNX ops of the activations a converted FC layer may have (None: no op).
HEAD_ACTIVATIONS = {"relu": "Relu", "softmax": "Softmax", "linear": None}
FEATURES_NAME = "features"


def _head(model, twin):
    """Split the twin into (body model, head layers) for a memory-light ONNX conversion.

    tf2onnx needs about 40 bytes of RAM per weight byte at its peak (21 GB for VGG D's
    553 MB, measured): it runs on the convolutional body only (VGG D: 59 MB), and the FC
    convolutions (fc6 alone is 411 MB) are appended as ONNX Conv nodes from NumPy. Returns
    (twin, []) when the head has an activation this does not cover.
    """
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    activations = [getattr(layer.activation, "__name__", None) for layer in dense]
    if not dense or any(a not in HEAD_ACTIVATIONS for a in activations):
        return twin, []
    convs = [twin.get_layer(layer.name) for layer in dense]
    body = keras.Model(twin.input, convs[0].input, name=f"{model.name}_body")
    return body, list(zip(convs, activations, strict=True))


def _append_head(proto, head, classes):
    """Append the FC layers, their activations and the spatial mean to an ONNX body.

    The body ends in NHWC features [N, H, W, C]. The first FC layer's (h, w) window is
    gathered by h * w Slices concatenated on the channel axis (im2col: [N, H', W', h*w*C],
    in the (h, w, c) order of Keras's Flatten), so every FC layer is one MatMul against
    its Dense kernel over all images and positions at once: onnxruntime's Conv would run
    fc6 as one matrix-vector product per image, reading the 151 MB fc6 kernel once per
    image. Then the softmax over classes at every position and the spatial average.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    x = graph.output[0].name
    del graph.output[:]
    nodes, weights = [], []

    def constant(name, array):
        weights.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    for conv, activation in head:
        kernel, *bias = conv.get_weights()
        kh, kw, channels, units = kernel.shape
        name = conv.name
        if (kh, kw) != (1, 1):
            patches = []
            for dy in range(kh):
                for dx in range(kw):
                    ends = [
                        dy - kh + 1 or np.iinfo(np.int64).max,
                        dx - kw + 1 or np.iinfo(np.int64).max,
                    ]
                    y = f"{name}/patch_{dy}_{dx}"
                    nodes.append(helper.make_node(
                        "Slice",
                        [x, constant(f"{y}/starts", np.array([dy, dx], np.int64)),
                         constant(f"{y}/ends", np.array(ends, np.int64)),
                         constant(f"{y}/axes", np.array([1, 2], np.int64))],
                        [y], name=y,
                    ))  # fmt: skip
                    patches.append(y)
            y = f"{name}/patches"
            nodes.append(helper.make_node("Concat", patches, [y], name=y, axis=3))
            x = y
        y = f"{name}/matmul"
        nodes.append(helper.make_node(
            "MatMul", [x, constant(f"{name}/W", kernel.reshape(-1, units))], [y], name=y
        ))  # fmt: skip
        x = y
        if bias:
            y = f"{name}/add"
            nodes.append(helper.make_node("Add", [x, constant(f"{name}/B", bias[0])], [y], name=y))
            x = y
        if HEAD_ACTIVATIONS[activation]:
            y = f"{name}/{activation}"
            attrs = {"axis": -1} if activation == "softmax" else {}
            nodes.append(helper.make_node(HEAD_ACTIVATIONS[activation], [x], [y], name=y, **attrs))
            x = y
    if opset >= 18:
        axes = constant("head/axes", np.array([1, 2], np.int64))
        nodes.append(helper.make_node("ReduceMean", [x, axes], [OUTPUT_NAME], keepdims=0))
    else:
        nodes.append(helper.make_node("ReduceMean", [x], [OUTPUT_NAME], axes=[1, 2], keepdims=0))
    graph.initializer.extend(weights)
    graph.node.extend(nodes)
    graph.output.append(
        helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", classes])
    )


def _onnx_proto(model, twin, metadata, opset, expand_lrn, work_dir):
    """Convert the twin to an ONNX ModelProto with named I/O, dynamic axes and metadata."""
    import onnx
    import tensorflow as tf

    from keras_alexnet import onnx_graph

    raw = Path(work_dir) / "raw.onnx"
    body, head = _head(model, twin)
    signature = [tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT_NAME)]
    # tf2onnx runs grappler, which logs two INFO lines per call straight to fd 2, and
    # Keras's tf2onnx shim warns about np.object on import: noise in front of our report.
    with _quiet.filtered_stderr(GRAPPLER_INFO), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)
        body.export(
            str(raw), format="onnx", input_signature=signature, opset_version=opset, verbose=False
        )
    proto = onnx.load(str(raw))
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ExportError(f"expected one input and one output, got {len(graph.input)}, "
                          f"{len(graph.output)}")  # fmt: skip
    _rename(graph, graph.input[0].name, INPUT_NAME)
    _rename(graph, graph.output[0].name, FEATURES_NAME if head else OUTPUT_NAME)
    dim = graph.input[0].type.tensor_type.shape.dim
    for axis, param in zip(range(3), ("batch", "height", "width"), strict=True):
        dim[axis].dim_param = param
    if head:
        _append_head(proto, head, len(metadata.class_names))
    else:
        graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    if expand_lrn:
        proto = onnx_graph.expand_lrn(proto)
    proto = onnx_graph.fold_input_normalization(proto)
    graph = proto.graph
    graph.name = metadata.model
    proto.doc_string = (
        f"keras_alexnet {metadata.model}: float32 RGB 0-255 [N, H, W, 3] -> class probabilities; "
        f"H = W = {metadata.input_size} for a crop, larger for dense evaluation"
    )
    _set_properties(proto, metadata.to_properties())
    return proto


def export_onnx(
    model_path,
    output=None,
    *,
    opset=None,
    expand_lrn=True,
    quantize=None,
    calibration_data=None,
    calibration_data_dir=None,
    calibration_images=64,
    agreement_images=256,
    quant_format="qoperator",
    log=print,
):
    """Export a Keras model (file or run dir) to one ONNX file; verify it; optionally int8.

    Writes `output` (default export/<model>.onnx) atomically after
    `onnx.checker.check_model(full_check=True)` and a check that onnxruntime matches
    Keras within MAX_RELATIVE_ERROR on random crops and on one larger image (dense).
    With quantize="int8" also writes `<output stem>.int8.onnx` (see `quantize_int8`).
    `expand_lrn` rewrites LRN nodes into ops onnxruntime runs faster
    (`keras_alexnet.onnx_graph`). Returns a dict of what was measured.
    """
    import onnx

    if quantize not in (None, "int8"):
        raise ExportError(f"--quantize takes int8. Received: {quantize!r}")
    start = time.perf_counter()
    model, metadata = load_keras_model(model_path)
    output = Path(output) if output else EXPORT_DIR / f"{metadata.model}.onnx"
    if output.suffix.lower() != ".onnx":
        raise ExportError(f"the ONNX output must end in .onnx. Received: {output}")
    twin = _dense_twin(model)
    crops, whole = check_inputs(metadata.input_size)
    expected_crops = np.asarray(model.predict_on_batch(crops))
    expected_whole = np.asarray(twin.predict_on_batch(whole))
    with fileio.atomic_path(output) as tmp:
        proto = _onnx_proto(model, twin, metadata, opset, expand_lrn, tmp.parent)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        session = onnx_session(tmp, provider=VERIFY_PROVIDER)
        errors = [
            relative_error(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0], y)
            for x, y in ((crops, expected_crops), (whole, expected_whole))
        ]
        error = max(errors)
        log(
            f"ONNX vs Keras on {len(crops)} random {metadata.input_size}px crops and one "
            f"{whole.shape[1]}x{whole.shape[2]} image: max relative error {error:.3g} "
            f"(max |onnx - keras| / max |keras|; limit {MAX_RELATIVE_ERROR:g})"
        )
        if not error <= MAX_RELATIVE_ERROR:
            raise ExportError(
                f"onnxruntime differs from Keras by {error:.3g} (> {MAX_RELATIVE_ERROR:g}); "
                f"nothing written to {output}"
            )
    seconds = time.perf_counter() - start
    result = {
        "path": str(output),
        "model": metadata.model,
        "bytes": output.stat().st_size,
        "seconds": seconds,
        "max_relative_error": error,
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
    }
    log(f"Wrote {output} ({result['bytes'] / 2**20:.1f} MiB) in {seconds:.1f} s")
    if quantize == "int8":
        result["int8"] = quantize_int8(
            output,
            output.with_suffix(".int8.onnx"),
            data=calibration_data if calibration_data is not None else metadata.data,
            data_dir=calibration_data_dir if calibration_data is not None else metadata.data_dir,
            calibration_images=calibration_images,
            agreement_images=agreement_images,
            quant_format=quant_format,
            log=log,
        )
    return result


def center_crops(source, metadata, split, count, batch_size=16):
    """Up to `count` centre crops of `split`, float32 [N, S, S, 3] on 0-255, and labels."""
    from keras_alexnet.data import eval_dataset

    ds = eval_dataset(
        source, protocol="center", image_size=metadata.input_size, resize=metadata.resize,
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


def quantize_int8(
    fp32_path,
    output,
    *,
    data=None,
    data_dir=None,
    calibration_images=64,
    agreement_images=256,
    quant_format="qoperator",
    log=print,
):
    """Statically quantise an fp32 export to int8; return top-1 agreement with fp32.

    Follows onnxruntime's recipe: `quant_pre_process` (shape inference + graph
    optimisation), then `quantize_static` (signed int8 weights per channel; int8
    activations for QDQ, uint8 for QOperator; MinMax calibration; the first convolution
    and the expanded LRN stay fp32; QOperator max pools on uint8 in NHWC,
    `onnx_graph.nhwc_int8_maxpool`) calibrated on centre crops of `calibration_images`
    training images of `data` (None: the bundled demo set).
    The agreement is the fraction of held-out images (the validation split, or training
    images after the calibration ones when there is none) whose top-1 class is the same
    as fp32's.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from keras_alexnet import onnx_graph
    from keras_alexnet.data import load_source
    from keras_alexnet.runtime import onnx_metadata

    if quant_format not in QUANT_FORMATS:
        raise ExportError(f"quant_format must be one of {QUANT_FORMATS}. Received: {quant_format}")
    start = time.perf_counter()
    fp32 = onnx_session(fp32_path, provider=VERIFY_PROVIDER)
    metadata = onnx_metadata(fp32, fp32_path)
    source = load_source(data, data_dir)
    if not source.num_train:
        raise ExportError(f"{source.name} has no training images to calibrate on")
    calibration, _ = center_crops(source, metadata, "train", calibration_images)
    if source.num_val:
        held_out, labels = center_crops(source, metadata, "val", agreement_images)
        held_out_name = f"{len(held_out)} validation images of {source.name}"
    else:
        rest, labels = center_crops(
            source, metadata, "train", calibration_images + agreement_images
        )
        held_out, labels = rest[len(calibration) :], labels[len(calibration) :]
        held_out_name = f"{len(held_out)} training images of {source.name} not used to calibrate"
    if not len(held_out):
        raise ExportError(f"{source.name} has no images left to measure the int8 agreement on")
    output = Path(output)
    with fileio.atomic_path(output) as tmp:
        pre = tmp.with_name("preprocessed.onnx")
        quant_pre_process(str(fp32_path), str(pre))
        excluded = _name_nodes_and_find_fp32(pre)
        quantize_static(
            str(pre),
            str(tmp),
            _Calibration(calibration),
            nodes_to_exclude=excluded,
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            # onnxruntime's x86-64 QOperator kernels want uint8 activations (U8S8); QDQ S8S8.
            activation_type=QuantType.QInt8 if quant_format == "qdq" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
        proto = onnx.load(str(tmp))
        if quant_format == "qoperator":
            proto = onnx_graph.nhwc_int8_maxpool(proto)
        props = {p.key: p.value for p in onnx.load(str(fp32_path), load_external_data=False)
                 .metadata_props}  # fmt: skip
        props["keras_alexnet.quantization"] = f'"int8 {quant_format}"'
        _set_properties(proto, props)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        int8 = onnx_session(tmp, provider=VERIFY_PROVIDER)
        top_fp32 = _top1(fp32, held_out)
        top_int8 = _top1(int8, held_out)
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
    so the nodes `onnx_graph.expand_lrn` wrote (outputs under ".../expanded/") stay fp32.
    So does the first convolution (the nodes are in topological order): it reads the
    pixels and, in AlexNet, feeds that LRN. Keeping it fp32 raised the top-1 agreement of
    the demo-trained AlexNet from 98.9 % to 99.7 % at no measurable speed cost
    (benchmarks/RESULTS.md).
    """
    import onnx

    proto = onnx.load(str(path))
    excluded = []
    first_conv = True
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
        if any("/expanded/" in name for name in node.output):
            excluded.append(node.name)
        elif node.op_type == "Conv" and first_conv:
            excluded.append(node.name)
            first_conv = False
    onnx.save(proto, str(path))
    return excluded


def _top1(session, images, batch_size=16):
    """Top-1 classes of an onnxruntime session on `images`."""
    out = [
        session.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + batch_size]})[0].argmax(-1)
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out)


def export_savedmodel(model_path, output=None, *, log=print):
    """Export a Keras model (file or run dir) as a SavedModel with uint8 and float signatures.

    `serving_default` takes float32 images, `serving_uint8` uint8 images (cast in the
    graph); both [N, H, W, 3] RGB named "images", returning {"probabilities"}. The
    metadata is written to `assets/metadata.json`. Written atomically to `output`
    (default export/<model>_savedmodel) after checking it against Keras.
    """
    import keras
    import tensorflow as tf

    start = time.perf_counter()
    model, metadata = load_keras_model(model_path)
    output = Path(output) if output else EXPORT_DIR / f"{metadata.model}_savedmodel"
    twin = _dense_twin(model)

    def serve_float(images):
        return {OUTPUT_NAME: twin(images, training=False)}

    def serve_uint8(images):
        return {OUTPUT_NAME: twin(tf.cast(images, tf.float32), training=False)}

    archive = keras.export.ExportArchive()
    archive.track(twin)
    for name, fn, dtype in (
        (SERVING_SIGNATURE, serve_float, tf.float32),
        (UINT8_SIGNATURE, serve_uint8, tf.uint8),
    ):
        archive.add_endpoint(
            name, fn, input_signature=[tf.TensorSpec([None, None, None, 3], dtype, name=INPUT_NAME)]
        )
    crops, whole = check_inputs(metadata.input_size)
    crops, whole = np.round(crops), np.round(whole)  # integral: uint8 sees the same pixels
    expected = [np.asarray(model.predict_on_batch(crops)), np.asarray(twin.predict_on_batch(whole))]
    with fileio.atomic_path(output) as tmp:
        archive.write_out(str(tmp), verbose=False)
        metadata.save(tmp / SAVEDMODEL_METADATA)
        loaded = tf.saved_model.load(str(tmp))
        errors = []
        for name, cast in ((SERVING_SIGNATURE, np.float32), (UINT8_SIGNATURE, np.uint8)):
            fn = loaded.signatures[name]
            for x, y in zip((crops, whole), expected, strict=True):
                got = fn(**{INPUT_NAME: tf.constant(x.astype(cast))})[OUTPUT_NAME].numpy()
                errors.append(relative_error(got, y))
        error = max(errors)
        log(f"SavedModel vs Keras: max relative error {error:.3g} (limit {MAX_RELATIVE_ERROR:g})")
        if not error <= MAX_RELATIVE_ERROR:
            raise ExportError(
                f"the SavedModel differs from Keras by {error:.3g}; nothing written to {output}"
            )
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    log(f"Wrote {output} ({size / 2**20:.1f} MiB, metadata in {SAVEDMODEL_METADATA}) in "
        f"{seconds:.1f} s")  # fmt: skip
    return {
        "path": str(output),
        "model": metadata.model,
        "bytes": size,
        "seconds": seconds,
        "max_relative_error": error,
        "signatures": [SERVING_SIGNATURE, UINT8_SIGNATURE],
        "metadata": METADATA_FILENAME,
    }
