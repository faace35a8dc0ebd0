"""Domain errors. Services raise these; each API surface renders them in its own envelope.

An error has a *kind* (which fixes the HTTP status and the generic code of each surface) and an
optional specific *code* (``machine_not_found``, ``ai_name_exists``) that surfaces which name
specific codes (Gateway, Collab) show instead of the generic one.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorKind(Enum):
    # Values are names, not status codes: two kinds may share a status (CONFLICT and
    # LIMIT_EXCEEDED are both 409) and must stay distinct members.
    VALIDATION = "validation"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    LIMIT_EXCEEDED = "limit_exceeded"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"

    @property
    def status_code(self) -> int:
        return _STATUS[self]


_STATUS = {
    ErrorKind.VALIDATION: 400,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.METHOD_NOT_ALLOWED: 405,
    ErrorKind.CONFLICT: 409,
    ErrorKind.LIMIT_EXCEEDED: 409,
    ErrorKind.PAYLOAD_TOO_LARGE: 413,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.INTERNAL: 500,
    ErrorKind.UNAVAILABLE: 503,
}


class AppError(Exception):
    """Base of every error a service may raise on purpose."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        kind: ErrorKind | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details or {}
        self.headers = headers or {}
        if kind is not None:
            self.kind = kind

    @property
    def status_code(self) -> int:
        return self.kind.status_code


class ValidationFailed(AppError):
    kind = ErrorKind.VALIDATION


class Unauthorized(AppError):
    kind = ErrorKind.UNAUTHORIZED


class Forbidden(AppError):
    kind = ErrorKind.FORBIDDEN


class NotFound(AppError):
    kind = ErrorKind.NOT_FOUND


class Conflict(AppError):
    kind = ErrorKind.CONFLICT


class LimitExceeded(AppError):
    """A budget or quota would be passed (Hub: 409 RESOURCE_LIMIT_EXCEEDED)."""

    kind = ErrorKind.LIMIT_EXCEEDED


class PayloadTooLarge(AppError):
    kind = ErrorKind.PAYLOAD_TOO_LARGE


class RateLimited(AppError):
    kind = ErrorKind.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: int, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.headers.setdefault("Retry-After", str(retry_after))


class Unavailable(AppError):
    kind = ErrorKind.UNAVAILABLE
