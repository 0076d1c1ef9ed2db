"""The Open Inference Protocol's (KServe v2) inference request and response bodies.

A request is JSON, or, with the binary data extension, JSON followed by raw tensors:
the Inference-Header-Content-Length header then says how long the JSON part is.
"""

import dataclasses
import json
import math
import sys

import numpy as np
from fastapi.responses import JSONResponse, Response

from keras_alexnet.serving.errors import ApiError

VERSION = "1"  # the only version of the model a server serves
# Peak bytes of parsing a body's JSON into Python objects and arrays (json.loads, then
# np.asarray, then the batch's copy), measured, rounded up: per value (a float object, its
# list slot, the list's growth, its array elements), per list or object, and per byte of
# JSON (no value costs more than 16 per byte of its text).
JSON_VALUE_BYTES = 64
JSON_CONTAINER_BYTES = 112
JSON_BYTES_PER_BYTE = 16


@dataclasses.dataclass
class InferRequest:
    """A validated inference request."""

    feeds: dict  # input name -> array
    outputs: list  # (output name, answer in binary form?)
    id: str | None


def _check_shape(entry, spec, max_rows, batchable):
    """Check an input object's shape and datatype against `spec`; return (name, shape)."""
    if not isinstance(entry, dict):
        raise ApiError("each element of 'inputs' must be an object")
    name, shape, datatype = entry.get("name"), entry.get("shape"), entry.get("datatype")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ApiError(f"input {name!r}: 'shape' must be a list of non-negative integers")
    if datatype != spec.datatype:
        raise ApiError(f"input {name!r} has datatype {datatype!r}; the model takes {spec.datatype}")
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
    ):
        raise ApiError(
            f"input {name!r} has shape {shape}; the model takes {list(spec.shape)} (-1: any size)"
        )
    if batchable and shape[0] > max_rows:
        raise ApiError(
            f"input {name!r} has a batch of {shape[0]}, more than the server's limit of {max_rows}",
            413,
        )
    if batchable and shape[0] == 0:
        raise ApiError(f"input {name!r} has an empty batch")
    return name, shape


def _check_finite(name, spec, array):
    """Return `array`, unless it is floating point and holds NaN or infinite values."""
    if spec.datatype.startswith("FP") and not np.isfinite(array).all():
        raise ApiError(f"input {name!r} holds NaN or infinite values")
    return array


def _binary_tensor(name, shape, spec, raw):
    """The array of a tensor sent as `raw` little-endian bytes (binary data extension)."""
    need = math.prod(shape) * np.dtype(spec.dtype).itemsize
    if len(raw) != need:
        raise ApiError(
            f"input {name!r} has {len(raw)} bytes of binary data; shape {shape} of "
            f"{spec.datatype} needs {need}"
        )
    array = np.frombuffer(raw, np.dtype(spec.dtype).newbyteorder("<")).reshape(shape)
    return _check_finite(name, spec, array.astype(spec.dtype))  # native byte order, writable


def _json_tensor(name, shape, spec, data):
    """The array of a tensor sent as a (flat or nested) JSON list `data`."""
    if not isinstance(data, list):
        raise ApiError(f"input {name!r}: 'data' must be a (flat or nested) list")
    try:
        array = np.asarray(data, dtype=spec.dtype)
    except (ValueError, TypeError, OverflowError):
        raise ApiError(
            f"input {name!r}: 'data' must hold only {spec.datatype} numbers in a regular "
            "(flat or nested) list"
        ) from None
    if array.size != math.prod(shape):
        raise ApiError(
            f"input {name!r} has {array.size} values; shape {shape} needs {math.prod(shape)}"
        )
    return _check_finite(name, spec, array).reshape(shape)


def _parse_tensor(entry, spec, max_rows, batchable, raw=None):
    """Validate one protocol input object against the model's input spec; return the array.

    `raw` is the tensor's bytes when it came in the binary data extension's form.
    """
    name, shape = _check_shape(entry, spec, max_rows, batchable)
    if raw is None:
        return _json_tensor(name, shape, spec, entry.get("data"))
    if entry.get("data") is not None:
        raise ApiError(f"input {name!r} has both 'data' and binary_data_size")
    return _binary_tensor(name, shape, spec, raw)


def _binary_size(entry):
    """The binary data extension's `binary_data_size` of an input object, or None."""
    parameters = entry.get("parameters") if isinstance(entry, dict) else None
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ApiError("'binary_data_size' must be a non-negative integer")
    return size


def parse_cost(content, header_length):
    """About the most bytes `parse_infer_request` holds at once beyond the body itself.

    Counted from the bytes, before parsing: JSON's values (at most one per comma, plus one),
    its lists and objects and its text; binary tensors are copied twice (cut from the body,
    made native and writable).
    """
    length = len(content)
    if header_length is not None and header_length.isdigit():
        length = min(int(header_length), length)
    text = content if length == len(content) else content[:length]
    binary = len(content) - length
    # json.loads decodes the bytes to a str first; strings cost their length again.
    per_value = JSON_VALUE_BYTES * (text.count(b",") + 1) + 2 * len(text)
    containers = text.count(b"[") + text.count(b"{")
    parsed = min(per_value, JSON_BYTES_PER_BYTE * len(text)) + JSON_CONTAINER_BYTES * containers
    return parsed + 2 * binary


def _json_header(content, header_length):
    """Split the body into (its JSON object, the binary tensors' bytes that follow it)."""
    if header_length is None:
        header, binary = content, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(content):
            raise ApiError(
                f"Inference-Header-Content-Length {header_length!r} is not a byte count "
                f"within the {len(content)}-byte body"
            )
        header, binary = content[: int(header_length)], content[int(header_length) :]
    try:
        body = json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(f"the request body is not JSON ({e})") from None
    except RecursionError:
        raise ApiError("the request body's JSON is nested too deeply") from None
    except ValueError:  # valid JSON, but an integer past Python's int-digit limit
        raise ApiError(
            f"the request body holds an integer of more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object")
    return body, binary


def _parse_inputs(entries, binary, model, max_rows):
    """The feeds of the request's `inputs` list, binary tensors taken from `binary` in order."""
    if not isinstance(entries, list) or not entries:
        raise ApiError("the request needs a non-empty 'inputs' list")
    specs = {s.name: s for s in model.inputs}
    feeds, offset = {}, 0
    for entry in entries:
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in specs:
            raise ApiError(f"unknown input {name!r}; the model's inputs are {list(specs)}")
        if name in feeds:
            raise ApiError(f"input {name!r} is given twice")
        size, raw = _binary_size(entry), None
        if size is not None:
            if offset + size > len(binary):
                raise ApiError(f"input {name!r}: the body ends before its binary data")
            raw, offset = binary[offset : offset + size], offset + size
        feeds[name] = _parse_tensor(entry, specs[name], max_rows, model.batchable, raw)
        small = model.too_small(specs[name], feeds[name].shape)
        if small:
            raise ApiError(f"input {name!r}: {small}")
    if offset != len(binary):
        raise ApiError(f"{len(binary) - offset} bytes of binary data belong to no input")
    missing = [n for n in specs if n not in feeds]
    if missing:
        raise ApiError(f"missing input(s) {missing}")
    if len({a.shape[0] for a in feeds.values()}) > 1:
        raise ApiError("all inputs must have the same batch size")
    return feeds


def _parse_outputs(body, model):
    """The outputs to answer, each with whether to send it in binary form."""
    parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    binary_default = parameters.get("binary_data_output") is True
    outputs = [(o.name, binary_default) for o in model.outputs]
    requested = body.get("outputs")
    if requested is None:
        return outputs
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise ApiError("'outputs' must be a list of objects with a 'name'")
    names = [name for name, _ in outputs]
    unknown = [o["name"] for o in requested if o["name"] not in names]
    if unknown:
        raise ApiError(f"unknown output(s) {unknown}; the model's outputs are {names}")
    return [
        (o["name"], (o.get("parameters") or {}).get("binary_data", binary_default) is True)
        for o in requested
    ]


def parse_infer_request(content, header_length, model, max_rows):
    """Validate a protocol inference request (JSON, or JSON + binary tensors) for `model`.

    `header_length` is the Inference-Header-Content-Length header of the binary data
    extension: the JSON part is that many leading bytes and the tensors follow, in order.
    """
    body, binary = _json_header(content, header_length)
    feeds = _parse_inputs(body.get("inputs"), binary, model, max_rows)
    outputs = _parse_outputs(body, model)
    request_id = body.get("id")
    return InferRequest(feeds, outputs, request_id if isinstance(request_id, str) else None)


def infer_response(model, request, result):
    """The protocol's answer: JSON, or JSON + binary tensors where the request asked."""
    specs = {o.name: o for o in model.outputs}
    answer = {"model_name": model.name, "model_version": VERSION, "outputs": []}
    if request.id is not None:
        answer["id"] = request.id
    chunks = []
    for name, binary in request.outputs:
        value = result[name]
        item = {"name": name, "datatype": specs[name].datatype, "shape": list(value.shape)}
        if binary:
            chunks.append(np.ascontiguousarray(value, value.dtype.newbyteorder("<")).tobytes())
            item["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            item["data"] = value.ravel().tolist()
        answer["outputs"].append(item)
    if not chunks:
        return JSONResponse(answer)
    header = json.dumps(answer).encode()
    return Response(
        header + b"".join(chunks),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
