"""Hub errors: ``{"success": false, "error": {code, message, details, request_id, timestamp}}``."""

from __future__ import annotations

from starlette.responses import JSONResponse

from agenthub.api.errors import ErrorContext
from agenthub.core.errors import AppError, ErrorKind

CODES = {
    ErrorKind.VALIDATION: "VALIDATION_ERROR",
    ErrorKind.UNAUTHORIZED: "UNAUTHORIZED",
    ErrorKind.FORBIDDEN: "FORBIDDEN",
    ErrorKind.NOT_FOUND: "NOT_FOUND",
    ErrorKind.METHOD_NOT_ALLOWED: "METHOD_NOT_ALLOWED",
    ErrorKind.CONFLICT: "CONFLICT",
    ErrorKind.LIMIT_EXCEEDED: "RESOURCE_LIMIT_EXCEEDED",
    ErrorKind.PAYLOAD_TOO_LARGE: "PAYLOAD_TOO_LARGE",
    ErrorKind.RATE_LIMITED: "RATE_LIMIT_EXCEEDED",
    ErrorKind.INTERNAL: "INTERNAL_ERROR",
    ErrorKind.UNAVAILABLE: "SERVICE_UNAVAILABLE",
}


def render_error(err: AppError, ctx: ErrorContext) -> JSONResponse:
    details = dict(err.details)
    if err.code:
        details.setdefault("reason", err.code)
    if ctx.validation_errors is not None:
        details.setdefault("errors", ctx.validation_errors)
    body = {
        "success": False,
        "error": {
            "code": CODES[err.kind],
            "message": err.message,
            "details": details,
            "request_id": ctx.request_id,
            "timestamp": ctx.timestamp,
        },
    }
    return JSONResponse(body, status_code=err.status_code, headers=err.headers)
