"""Gateway errors: ``{"error": "<message>", "code": "<code>"}``.

The document answers 403 "Invalid token" for a missing, unknown or expired token, so every
authentication failure is a 403 here, and invalid input is a 400 "Invalid payload".
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from agenthub.api.errors import ErrorContext
from agenthub.core.errors import AppError, ErrorKind

CODES = {
    ErrorKind.VALIDATION: "invalid_payload",
    ErrorKind.UNAUTHORIZED: "invalid_token",
    ErrorKind.FORBIDDEN: "forbidden",
    ErrorKind.NOT_FOUND: "not_found",
    ErrorKind.METHOD_NOT_ALLOWED: "method_not_allowed",
    ErrorKind.CONFLICT: "conflict",
    ErrorKind.LIMIT_EXCEEDED: "limit_exceeded",
    ErrorKind.PAYLOAD_TOO_LARGE: "payload_too_large",
    ErrorKind.RATE_LIMITED: "rate_limit_exceeded",
    ErrorKind.INTERNAL: "internal_error",
    ErrorKind.UNAVAILABLE: "unavailable",
}


def render_error(err: AppError, ctx: ErrorContext) -> JSONResponse:
    if err.kind is ErrorKind.UNAUTHORIZED:
        return JSONResponse(
            {"error": "Invalid token", "code": "invalid_token"},
            status_code=403,
            headers=err.headers,
        )
    message = "Invalid payload" if ctx.validation_errors is not None else err.message
    code = err.code or CODES[err.kind]
    return JSONResponse(
        {"error": message, "code": code}, status_code=err.status_code, headers=err.headers
    )
