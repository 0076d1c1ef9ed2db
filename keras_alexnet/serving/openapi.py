"""OpenAPI descriptions of the request bodies the infer and classify routes read by hand.

The routes parse their bodies themselves (the binary data extension and multipart uploads
need the raw bytes), so FastAPI cannot derive these from type hints; they are given to
the routes as `openapi_extra` and `responses`.
"""

from pydantic import BaseModel

from keras_alexnet.serving.model import DATATYPES


class ErrorBody(BaseModel):
    """Every error answer: `{"error": "..."}`."""

    error: str


_PARAMETERS = {"type": "object", "additionalProperties": True}
_INPUT = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": [d for d, _ in DATATYPES.values()]},
        "data": {
            "type": "array",
            "description": "the values in row-major order, flat or nested as the shape",
        },
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
            "description": "binary_data_size: the tensor follows the JSON as raw bytes",
        },
    },
}
_OUTPUT = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
    },
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "minItems": 1, "items": _INPUT},
        "outputs": {"type": "array", "items": _OUTPUT},
        "parameters": {
            "type": "object",
            "properties": {"binary_data_output": {"type": "boolean"}},
        },
    },
}
INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "An Open Inference Protocol request. With the binary data extension "
        "the JSON is the first Inference-Header-Content-Length bytes and the tensors follow.",
        "content": {
            "application/json": {"schema": INFER_REQUEST},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
CLASSIFY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or more image files (JPEG, PNG, GIF, BMP...)",
                        }
                    },
                }
            }
        },
    }
}


def error_responses(reasons):
    """`responses=` for a route: {status: why} -> answers with an ErrorBody."""
    return {status: {"model": ErrorBody, "description": why} for status, why in reasons.items()}


TOO_SLOW = "the body did not arrive within the read timeout"
COMMON_ERRORS = {
    404: "unknown model or version",
    500: "inference failed inside the model, or an unexpected server error",
    503: "the model is not loaded yet, did not answer within the timeout, or the memory "
    "budget for requests in flight had no room in time (with Retry-After)",
}
INFER_ERRORS = error_responses(
    {
        400: "the request is not valid JSON or does not fit the model's inputs",
        408: TOO_SLOW,
        413: "the body or the batch is larger than the server's limit, or parsing it needs "
        "more memory than the whole budget for requests in flight",
        **COMMON_ERRORS,
    }
)
CLASSIFY_ERRORS = error_responses(
    {
        400: "no image files in the field 'file', or a model without keras_alexnet metadata",
        408: TOO_SLOW,
        413: "too many files, an image or body larger than the server's limit, or "
        "decoding needs more memory than the whole budget for requests in flight",
        415: "not multipart/form-data, or a file that is not a readable image",
        **COMMON_ERRORS,
    }
)
