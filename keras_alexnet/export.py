"""Export a trained model to ONNX (optionally int8) and to a SavedModel, with its metadata.

Both exports are the model's fully-convolutional twin (`keras_alexnet.models.dense`): on a
crop of the model's input size it computes what the Keras model computes (the export
verifies that), and on a larger whole image it returns the spatial average of the class
score map, the VGG paper's dense evaluation. The names, signatures and metadata files are
the artifact contract of `keras_alexnet.artifacts`: float32 RGB pixels on the 0-255 scale
[N, H, W, 3] in, the training mean subtracted inside the graph, class probabilities
[N, classes] out. The metadata (model name, classes, input size, resize, mean, protocol,
package version) travels inside: ONNX metadata properties, the SavedModel's assets. The
ONNX work itself is in `keras_alexnet.onnx`; this module converts, verifies and writes
atomically.
"""

import time
from pathlib import Path

import numpy as np

from keras_alexnet import fileio
from keras_alexnet.artifacts import (
    INPUT_NAME,
    METADATA_FILENAME,
    OUTPUT_NAME,
    SAVEDMODEL_METADATA,
    SERVING_SIGNATURE,
    UINT8_SIGNATURE,
    ExportError,
)
from keras_alexnet.backend import require_tensorflow
from keras_alexnet.calibration import calibration_images as cut_crops
from keras_alexnet.errors import field
from keras_alexnet.onnx import quantize as quantize_defaults
from keras_alexnet.onnx.convert import to_onnx
from keras_alexnet.onnx.proto import opset_version
from keras_alexnet.onnx.quantize import quantize_int8
from keras_alexnet.onnx.session import VERIFY_PROVIDER, onnx_session
from keras_alexnet.runtime import load_keras_model, load_metadata

EXPORT_DIR = Path("export")
MAX_RELATIVE_ERROR = 1e-5


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


def _reference(model, twin, size, integral=False):
    """Verification inputs (crops, whole) and Keras's outputs on them: the model's, the twin's.

    `integral` rounds the pixels, so that a uint8 signature sees the same images.
    """
    crops, whole = check_inputs(size)
    if integral:
        crops, whole = np.round(crops), np.round(whole)
    expected = [np.asarray(model.predict_on_batch(crops)), np.asarray(twin.predict_on_batch(whole))]
    return (crops, whole), expected


def _check_error(error, subject, output):
    """Refuse an export whose relative error to Keras exceeds MAX_RELATIVE_ERROR."""
    if not error <= MAX_RELATIVE_ERROR:
        raise ExportError(
            f"{subject} differs from Keras by {error:.3g} (> {MAX_RELATIVE_ERROR:g}); "
            f"nothing written to {output}"
        )


def _verify_onnx(path, inputs, expected):
    """Max relative error of the ONNX file at `path` against Keras's `expected` outputs."""
    session = onnx_session(path, provider=VERIFY_PROVIDER)
    return max(
        relative_error(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0], y)
        for x, y in zip(inputs, expected, strict=True)
    )


def _write_onnx(model, metadata, output, opset, expand_lrn, log):
    """Convert `model` to ONNX at `output`, atomically, once checked and verified; return it."""
    import onnx

    twin = _dense_twin(model)
    (crops, whole), expected = _reference(model, twin, metadata.input_size)
    with fileio.atomic_path(output) as tmp:
        proto = to_onnx(model, twin, metadata, opset, expand_lrn, tmp.parent)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        error = _verify_onnx(tmp, (crops, whole), expected)
        log(
            f"ONNX vs Keras on {len(crops)} random {metadata.input_size}px crops and one "
            f"{whole.shape[1]}x{whole.shape[2]} image: max relative error {error:.3g} "
            f"(max |onnx - keras| / max |keras|; limit {MAX_RELATIVE_ERROR:g})"
        )
        _check_error(error, "onnxruntime", output)
    return proto, error


def export_onnx(
    model_path,
    output=None,
    *,
    opset=None,
    expand_lrn=True,
    quantize=None,
    calibration_data=None,
    calibration_data_dir=None,
    calibration_images=quantize_defaults.CALIBRATION_IMAGES,
    agreement_images=quantize_defaults.AGREEMENT_IMAGES,
    quant_format=quantize_defaults.DEFAULT_FORMAT,
    log=print,
):
    """Export a Keras model (file or run dir) to one ONNX file; verify it; optionally int8.

    Writes `output` (default export/<model>.onnx) atomically after
    `onnx.checker.check_model(full_check=True)` and a check that onnxruntime matches
    Keras within MAX_RELATIVE_ERROR on random crops and on one larger image (dense).
    With quantize="int8" also writes `<output stem>.int8.onnx` (see
    `keras_alexnet.onnx.quantize.quantize_int8`). `expand_lrn` rewrites LRN nodes into ops
    onnxruntime runs faster (`keras_alexnet.onnx.graph`). Returns a dict of what was measured.
    """
    require_tensorflow("ONNX export (tf2onnx)")

    if quantize not in (None, "int8"):
        raise ExportError(f"{field('quantize')} takes int8. Received: {quantize!r}")
    start = time.perf_counter()
    model, metadata = load_keras_model(model_path)
    output = Path(output) if output else EXPORT_DIR / f"{metadata.model}.onnx"
    if output.suffix.lower() != ".onnx":
        raise ExportError(f"the ONNX output must end in .onnx. Received: {output}")
    proto, error = _write_onnx(model, metadata, output, opset, expand_lrn, log)
    seconds = time.perf_counter() - start
    result = {
        "path": str(output),
        "model": metadata.model,
        "bytes": output.stat().st_size,
        "seconds": seconds,
        "max_relative_error": error,
        "opset": opset_version(proto),
    }
    log(f"Wrote {output} ({result['bytes'] / 2**20:.1f} MiB) in {seconds:.1f} s")
    if quantize == "int8":
        own_data = calibration_data is None
        result["int8"] = quantize_export(
            output,
            output.with_suffix(".int8.onnx"),
            data=metadata.data if own_data else calibration_data,
            data_dir=metadata.data_dir if own_data else calibration_data_dir,
            calibration_images=calibration_images,
            agreement_images=agreement_images,
            quant_format=quant_format,
            log=log,
        )
    return result


def quantize_export(
    fp32_path,
    output,
    *,
    data=None,
    data_dir=None,
    calibration_images=quantize_defaults.CALIBRATION_IMAGES,
    agreement_images=quantize_defaults.AGREEMENT_IMAGES,
    quant_format=quantize_defaults.DEFAULT_FORMAT,
    log=print,
):
    """Quantise an fp32 export to int8 (`quantize_int8`), calibrated on `data`'s crops.

    Centre crops of `calibration_images` training images of `data` (None: the bundled demo
    set) calibrate it; `agreement_images` held-out ones measure its top-1 agreement with
    fp32 (`keras_alexnet.calibration`). Returns `quantize_int8`'s result.
    """
    from keras_alexnet.data import load_source

    images = cut_crops(
        load_source(data, data_dir), load_metadata(fp32_path), calibration_images,
        agreement_images,
    )  # fmt: skip
    return quantize_int8(fp32_path, output, images, quant_format=quant_format, log=log)


def _savedmodel_archive(twin):
    """A Keras ExportArchive of `twin` with the float32 and uint8 serving signatures."""
    import keras
    import tensorflow as tf

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
    return archive


def _verify_savedmodel(path, inputs, expected):
    """Max relative error of both signatures of the SavedModel at `path` against Keras."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    errors = []
    for name, cast in ((SERVING_SIGNATURE, np.float32), (UINT8_SIGNATURE, np.uint8)):
        fn = loaded.signatures[name]
        for x, y in zip(inputs, expected, strict=True):
            got = fn(**{INPUT_NAME: tf.constant(x.astype(cast))})[OUTPUT_NAME].numpy()
            errors.append(relative_error(got, y))
    return max(errors)


def export_savedmodel(model_path, output=None, *, log=print):
    """Export a Keras model (file or run dir) as a SavedModel with uint8 and float signatures.

    `serving_default` takes float32 images, `serving_uint8` uint8 images (cast in the
    graph); both [N, H, W, 3] RGB named "images", returning {"probabilities"}. The
    metadata is written to `assets/metadata.json`. Written atomically to `output`
    (default export/<model>_savedmodel) after checking it against Keras.
    """
    require_tensorflow("SavedModel export")
    start = time.perf_counter()
    model, metadata = load_keras_model(model_path)
    output = Path(output) if output else EXPORT_DIR / f"{metadata.model}_savedmodel"
    twin = _dense_twin(model)
    archive = _savedmodel_archive(twin)
    inputs, expected = _reference(model, twin, metadata.input_size, integral=True)
    with fileio.atomic_path(output) as tmp:
        archive.write_out(str(tmp), verbose=False)
        metadata.save(tmp / SAVEDMODEL_METADATA)
        error = _verify_savedmodel(tmp, inputs, expected)
        log(f"SavedModel vs Keras: max relative error {error:.3g} (limit {MAX_RELATIVE_ERROR:g})")
        _check_error(error, "the SavedModel", output)
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
