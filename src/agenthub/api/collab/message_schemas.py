"""Collab message bodies: sending, inbox, sent list, deletion and search results."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, field_validator

from agenthub.api.collab.schemas import CollabModel, Success
from agenthub.core.errors import ValidationFailed
from agenthub.core.storable import JSON_MAX_BYTES, json_problem, text_problem

# Ids are 64-bit on PostgreSQL; a larger number is refused here instead of by the driver.
MAX_ID = 2**63 - 1
MAX_CONTENT_CHARS = 64 * 1024
MAX_METADATA_BYTES = JSON_MAX_BYTES


def _storable_text(value: str, field: str) -> str:
    if problem := text_problem(value):
        raise ValueError(f"{field} {problem}")
    return value


class MessageCreate(CollabModel):
    message_type: str = Field(default="message", min_length=1, max_length=32)
    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    target_ai_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="The recipient; leave out to broadcast."
    )
    conversation_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    metadata: dict[str, Any] = Field(
        default_factory=dict, description=f"Any JSON object, at most {MAX_METADATA_BYTES} bytes."
    )

    @field_validator("message_type")
    @classmethod
    def _message_type(cls, value: str) -> str:
        return _storable_text(value, "message_type")

    @field_validator("content")
    @classmethod
    def _content(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("content must not be blank")
        return _storable_text(value, "content")

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        if problem := json_problem(value):
            raise ValueError(f"metadata {problem}")
        return value


class CollabMessageRead(BaseModel):
    message_id: int
    sender_id: int
    sender_name: str
    target_ai_id: int | None = Field(description="`null` for a broadcast.")
    conversation_id: int | None
    message_type: str
    content: str
    metadata: dict[str, Any]
    created_at: str


class MessageCreated(Success, CollabMessageRead):
    pass


class InboxMessageRead(CollabMessageRead):
    read: bool = Field(description="Whether it had been read before this request.")


class InboxRead(Success):
    messages: list[InboxMessageRead]
    total: int = Field(description="Messages matching the filters.")
    unread_count: int = Field(description="All the caller's unread messages, before this read.")
    limit: int
    offset: int


class MessageList(Success):
    messages: list[CollabMessageRead]
    total: int
    limit: int
    offset: int


class MessageDeleted(Success):
    message_id: int
    deleted_at: str


def parse_date_bound(value: str | None, field: str, *, upper: bool = False) -> datetime | None:
    """``date_from``/``date_to`` as a UTC instant, from an ISO 8601 date or date-time (naive
    means UTC). With ``upper`` it is an exclusive upper bound that still includes the value: a
    date-only ``date_to`` covers that whole day."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        try:
            day = date.fromisoformat(text)
            moment, step = datetime(day.year, day.month, day.day, tzinfo=UTC), timedelta(days=1)
        except ValueError:
            moment, step = datetime.fromisoformat(text), timedelta(microseconds=1)
            moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValidationFailed(
            f"{field} must be an ISO 8601 date (2026-02-06) or date-time "
            f"(2026-02-06T00:55:00Z), got {value!r}",
            details={"field": field},
        ) from exc
    if not upper:
        return moment
    try:
        return moment + step
    except OverflowError:
        return None  # the end of the calendar: no upper bound at all
