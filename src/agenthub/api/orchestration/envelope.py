"""Orchestration errors: ``{"detail": "..."}``; validation errors keep FastAPI's 422 list."""

from __future__ import annotations

from starlette.responses import JSONResponse

from agenthub.api.errors import ErrorContext
from agenthub.core.errors import AppError


def render_error(err: AppError, ctx: ErrorContext) -> JSONResponse:
    if ctx.validation_errors is not None:
        return JSONResponse({"detail": ctx.validation_errors}, status_code=422)
    return JSONResponse({"detail": err.message}, status_code=err.status_code, headers=err.headers)
