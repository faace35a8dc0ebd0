"""Collab session bodies: create, read, end, and an AI's session history.

Timestamps are ISO 8601 strings in UTC with ``Z``; ``metadata`` and ``final_stats`` are what
the AI sent, as it sent them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from agenthub.api.collab.schemas import CollabModel, Success


class SessionCreate(CollabModel):
    session_type: str = Field(
        min_length=1, max_length=32, description="What kind of session, e.g. `autonomous`."
    )
    project: str | None = Field(default=None, max_length=128)
    metadata: dict[str, Any] | None = Field(
        default=None, description="Free-form JSON object, at most 16 KiB encoded."
    )


class SessionCreated(Success):
    session_id: int
    session_identifier: str
    ai_id: int
    ai_name: str
    session_type: str
    project: str | None
    created_at: str
    metadata: dict[str, Any]


class SessionStatsRead(BaseModel):
    """Counted from the AI's own messages and collaborations within the session's window."""

    thoughts_generated: int
    insights_shared: int
    responses_sent: int
    collaborations_initiated: int
    messages_sent: int


class SessionRead(Success):
    session_id: int
    session_identifier: str
    ai_id: int
    ai_name: str
    session_type: str
    project: str | None
    status: str
    created_at: str
    ended_at: str | None
    metadata: dict[str, Any]
    stats: SessionStatsRead
    summary: str | None
    final_stats: dict[str, Any] | None = Field(
        description="What the AI reported when it ended the session; null until then."
    )


class SessionEnd(CollabModel):
    summary: str | None = Field(default=None, max_length=10_000)
    final_stats: dict[str, Any] | None = Field(
        default=None, description="The AI's own accounting, at most 16 KiB encoded."
    )


class SessionEnded(Success):
    session_id: int
    ended_at: str
    summary: str | None


class SessionHistoryItem(BaseModel):
    session_id: int
    session_identifier: str
    session_type: str
    project: str | None
    status: str
    created_at: str
    ended_at: str | None
    duration_seconds: int


class SessionHistory(Success):
    sessions: list[SessionHistoryItem]
    total: int
    limit: int
    offset: int
