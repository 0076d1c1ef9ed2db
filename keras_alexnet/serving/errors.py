"""Every error the server answers is JSON `{"error": ...}`: the error type and its handlers."""

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class ApiError(Exception):
    """An error answered with `status` (4xx: the request's fault, 5xx: ours) and a message."""

    def __init__(self, message, status=400, headers=None):
        super().__init__(message)
        self.status = status
        self.headers = headers  # e.g. Retry-After on a 503


def error_response(status, message, headers=None):
    """The JSON error response."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _http_error(request, exc):
    # exc.headers carries Allow on a 405.
    return error_response(exc.status_code, str(exc.detail), exc.headers)


async def _unexpected_error(request, exc):
    # A bug, not the request's fault: still JSON, as every error; the log has the trace.
    return error_response(500, f"internal server error ({type(exc).__name__})")


async def _api_error(request, exc):
    return error_response(exc.status, str(exc), exc.headers)


def add_error_handlers(app):
    """Answer Starlette's HTTP errors, our ApiErrors and any other exception in JSON."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_exception_handler(ApiError, _api_error)
