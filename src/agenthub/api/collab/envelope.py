"""Collab errors: ``{"error": "<message>", "code": "ERROR_CODE", "details": {...}}``."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from agenthub.api.errors import ErrorContext
from agenthub.core.errors import AppError, ErrorKind, RateLimited

CODES = {
    ErrorKind.VALIDATION: "VALIDATION_ERROR",
    ErrorKind.UNAUTHORIZED: "INVALID_TOKEN",
    ErrorKind.FORBIDDEN: "FORBIDDEN",
    ErrorKind.NOT_FOUND: "RESOURCE_NOT_FOUND",
    ErrorKind.METHOD_NOT_ALLOWED: "METHOD_NOT_ALLOWED",
    ErrorKind.CONFLICT: "CONFLICT",
    ErrorKind.LIMIT_EXCEEDED: "LIMIT_EXCEEDED",
    ErrorKind.PAYLOAD_TOO_LARGE: "PAYLOAD_TOO_LARGE",
    ErrorKind.RATE_LIMITED: "RATE_LIMIT_EXCEEDED",
    ErrorKind.INTERNAL: "INTERNAL_ERROR",
    ErrorKind.UNAVAILABLE: "SERVICE_UNAVAILABLE",
}


def render_error(err: AppError, ctx: ErrorContext) -> JSONResponse:
    details: dict[str, Any] = dict(err.details)
    if ctx.validation_errors is not None:
        details.setdefault("errors", ctx.validation_errors)
    body: dict[str, Any] = {
        "error": err.message,
        "code": err.code.upper() if err.code else CODES[err.kind],
        "details": details,
    }
    if isinstance(err, RateLimited):
        body["retry_after"] = err.retry_after
    return JSONResponse(body, status_code=err.status_code, headers=err.headers)
