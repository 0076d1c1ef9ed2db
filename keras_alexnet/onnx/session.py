"""onnxruntime sessions and the keras_alexnet Metadata inside ONNX files, for every reader.

`onnx_session` is the one maker of onnxruntime sessions (export verification, int8 calibration,
`keras_alexnet.runtime`, the server), so they all run with the same options and the same
choice of execution provider; `read_metadata` is the one decoder of the Metadata an export
stores in its metadata properties. Importing this module loads neither onnx nor
onnxruntime.
"""

import dataclasses
import os
from pathlib import Path

from keras_alexnet.artifacts import (
    ONNX_SOURCE,
    OUTPUT_NAME,
    PROPERTY_PREFIX,
    ModelPathError,
    check_class_count,
    first_line,
)
from keras_alexnet.errors import Error
from keras_alexnet.metadata import Metadata

AUTO = "auto"
CPU_PROVIDER = "CPUExecutionProvider"
# What "auto" picks from, best first: the GPU providers, then CPU. TensorRT, OpenVINO and
# CoreML compile the graph for each input shape (whole images vary: dense evaluation) and
# Azure runs remotely, so they are used only when named.
AUTO_PROVIDERS = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
    CPU_PROVIDER,
)
# Exports are checked on the CPU whatever GPU onnxruntime offers: GPU kernels (TF32
# convolutions) differ by more than the export's error limit, and the int8 kernels are CPU
# ones.
VERIFY_PROVIDER = CPU_PROVIDER


class ProviderError(Error, ValueError):
    """An onnxruntime execution provider this installation does not offer."""


def available_providers():
    """The execution providers this onnxruntime installation offers, in its own order."""
    import onnxruntime as ort

    return ort.get_available_providers()


def provider_choices():
    """What `--provider` accepts: "auto" and each available provider."""
    return [AUTO, *available_providers()]


def provider_help():
    """The `--provider` help text shared by the scripts, listing this machine's providers."""
    return (
        "onnxruntime execution provider for .onnx models: auto (the best available, GPU "
        f"before CPU) or one of {', '.join(available_providers())}, in full or short "
        "('cuda') (default: %(default)s)"
    )


def choose_providers(provider=AUTO):
    """The providers list for a session: `provider`, or the best available for "auto", then CPU.

    A provider is named in full (`CUDAExecutionProvider`) or short (`cuda`, any case); CPU
    stays last as the fallback for operators the chosen one lacks.
    """
    available = available_providers()
    if provider in (None, AUTO):
        chosen = next((p for p in AUTO_PROVIDERS if p in available), CPU_PROVIDER)
    else:
        chosen = next(
            (p for p in available if provider.lower() in (p.lower(), _short_name(p))), None
        )
        if chosen is None:
            raise ProviderError(
                f"onnxruntime here has no execution provider {provider!r}; choose from "
                f"{', '.join(provider_choices())} (CUDA needs the onnxruntime-gpu package)"
            )
    fallback = [CPU_PROVIDER] if chosen != CPU_PROVIDER and CPU_PROVIDER in available else []
    return [chosen, *fallback]


def _short_name(provider):
    """`CUDAExecutionProvider` -> `cuda`."""
    return provider.removesuffix("ExecutionProvider").lower()


def onnx_session(path, threads=None, provider=AUTO, *, spin=True):
    """The one maker of onnxruntime sessions: `threads` intra-op threads, `provider` (see above).

    `threads` 0 or None lets onnxruntime choose (one per core). With `spin` False the
    intra-op threads sleep instead of busy-waiting between operators: the server's choice,
    where image decoding and HTTP share the cores with the model (benchmarks/RESULTS.md,
    Serving).
    """
    import onnxruntime as ort

    providers = choose_providers(provider)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or 0)
    # Operators run one after another (sequential mode); parallelism is inside each one.
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelPathError.unreadable(path, "ONNX model", e) from e


def properties(source):
    """The metadata properties (str -> str) of an onnxruntime session or an ONNX file's path.

    A file is read without its weights and without onnxruntime.
    """
    if not isinstance(source, str | os.PathLike):
        return dict(source.get_modelmeta().custom_metadata_map)
    import onnx

    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as e:
        raise ModelPathError.unreadable(source, "ONNX model", e) from e
    return {p.key: p.value for p in model.metadata_props}


def read_metadata(props, path, *, required=True):
    """The Metadata in ONNX metadata properties `props` of the model at `path`.

    Without keras_alexnet properties: a ModelPathError, or None when not `required` (the
    server also runs other ONNX models).
    """
    if not required and not any(k.startswith(PROPERTY_PREFIX) for k in props):
        return None
    try:
        return Metadata.from_properties(props)
    except (KeyError, ValueError, TypeError) as e:
        raise ModelPathError(
            f"{path} has no keras_alexnet metadata ({first_line(e)}): export it with "
            "keras-alexnet-export-onnx"
        ) from e


def probabilities_output(session):
    """The name of a session's class-probability output: OUTPUT_NAME, else its first output."""
    names = [o.name for o in session.get_outputs()]
    return OUTPUT_NAME if OUTPUT_NAME in names else names[0]


@dataclasses.dataclass(frozen=True)
class OnnxFile:
    """An ONNX file opened for inference: its session, Metadata and probability output."""

    path: Path
    session: object  # onnxruntime.InferenceSession
    metadata: Metadata | None  # None: a file without keras_alexnet metadata (not required)
    probabilities: str  # the name of the class-probability output


def open_onnx(path, threads=None, provider=AUTO, *, spin=True, required=True):
    """The one opener of ONNX files for inference (`keras_alexnet.runtime`, the server).

    A session (`onnx_session`), the Metadata of its properties (`read_metadata`; None for a
    file without any when not `required`) and the probability output, whose size must be
    the metadata's number of class names (ModelPathError otherwise).
    """
    session = onnx_session(path, threads, provider, spin=spin)
    metadata = read_metadata(properties(session), path, required=required)
    output = probabilities_output(session)
    if metadata is not None:
        classes = next(o for o in session.get_outputs() if o.name == output).shape[-1]
        classes = classes if isinstance(classes, int) else None
        check_class_count(classes, metadata, path, ONNX_SOURCE)
    return OnnxFile(Path(path), session, metadata, output)
