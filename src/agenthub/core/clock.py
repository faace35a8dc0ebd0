"""Time helpers: every timestamp agenthub stores or returns is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat_z(value: datetime) -> str:
    """ISO-8601 in UTC with a trailing ``Z`` (the documents' timestamp form)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
