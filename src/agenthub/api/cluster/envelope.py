"""Cluster envelope: ``{"success": true, "data": ...}``; errors carry lower_snake codes."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel
from starlette.responses import JSONResponse

from agenthub.api.errors import ErrorContext
from agenthub.core.errors import AppError, ErrorKind, RateLimited

T = TypeVar("T")

CODES = {
    ErrorKind.VALIDATION: "invalid_request",
    ErrorKind.UNAUTHORIZED: "authentication_failed",
    ErrorKind.FORBIDDEN: "permission_denied",
    ErrorKind.NOT_FOUND: "resource_not_found",
    ErrorKind.METHOD_NOT_ALLOWED: "invalid_request",
    ErrorKind.CONFLICT: "resource_conflict",
    ErrorKind.LIMIT_EXCEEDED: "resource_conflict",
    ErrorKind.PAYLOAD_TOO_LARGE: "invalid_request",
    ErrorKind.RATE_LIMITED: "rate_limit_exceeded",
    ErrorKind.INTERNAL: "internal_error",
    ErrorKind.UNAVAILABLE: "internal_error",
}


def render_error(err: AppError, ctx: ErrorContext) -> JSONResponse:
    message = err.message
    if isinstance(err, RateLimited):
        message = f"Rate limit exceeded. Try again in {err.retry_after} seconds."
    error: dict[str, Any] = {"code": CODES[err.kind], "message": message}
    if ctx.validation_errors is not None:
        error["details"] = ctx.validation_errors
    elif err.details:
        error["details"] = err.details
    return JSONResponse(
        {"success": False, "error": error}, status_code=err.status_code, headers=err.headers
    )


class Envelope(BaseModel, Generic[T]):
    """``{"success": true, "data": ...}``: every successful Cluster response."""

    success: Literal[True] = True
    data: T


def wrap(data: T) -> Envelope[T]:
    return Envelope[T](data=data)
