"""Collab request and response bodies for collaborations (``/api/v1/collaboration/...``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from agenthub.api.collab.schemas import CollabModel, Success

# Ids are 64-bit in the database; a larger number could never name a row.
MAX_ID = 2**63 - 1
# Task counts are 32-bit columns; a million tasks is beyond any plan an AI reports.
MAX_TASKS = 1_000_000
# Integer fields are strict: lax parsing would take JSON `true` or `1.0` as an id or a count.


class CollaborationCreate(CollabModel):
    target_ai_id: int = Field(ge=1, le=MAX_ID, strict=True)
    collaboration_type: str = Field(min_length=1, max_length=64, examples=["pair_programming"])
    title: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    metadata: dict[str, Any] | None = Field(
        default=None, description="Free-form notes for both AIs; at most 16 KiB as JSON."
    )


class CollaborationCreated(Success):
    collaboration_id: int
    requester_ai_id: int
    requester_name: str
    target_ai_id: int
    collaboration_type: str
    title: str
    description: str | None
    status: str
    created_at: str


class CollaborationRead(BaseModel):
    collaboration_id: int
    requester_ai_id: int
    requester_name: str
    target_ai_id: int
    target_name: str
    collaboration_type: str
    title: str
    description: str | None
    status: str
    created_at: str
    updated_at: str


class CollaborationList(Success):
    collaborations: list[CollaborationRead]
    total: int
    limit: int
    offset: int


class ResponseCreate(CollabModel):
    collaboration_id: int = Field(ge=1, le=MAX_ID, strict=True)
    response: Literal["accept", "decline"]
    message: str | None = Field(default=None, max_length=10_000)
    metadata: dict[str, Any] | None = Field(
        default=None, description="Free-form notes for the requester; at most 16 KiB as JSON."
    )


class ResponseRead(Success):
    collaboration_id: int
    status: str
    responded_at: str
    message: str


class ProgressUpdate(CollabModel):
    """A partial update: fields left out keep their value; ``current_task: null`` clears it."""

    tasks_completed: int | None = Field(default=None, ge=0, le=MAX_TASKS, strict=True)
    total_tasks: int | None = Field(default=None, ge=0, le=MAX_TASKS, strict=True)
    current_task: str | None = Field(default=None, max_length=1000)


class Progress(BaseModel):
    tasks_completed: int
    total_tasks: int
    percentage: int
    current_task: str | None
    last_updated: str | None = Field(description="When progress was last reported; null: never.")


class Participant(BaseModel):
    ai_id: int
    ai_name: str
    role: Literal["requester", "responder"]


class ProgressRead(Success):
    collaboration_id: int
    status: str
    progress: Progress
    participants: list[Participant]


class CompletionCreate(CollabModel):
    summary: str | None = Field(default=None, max_length=10_000)
    outcome: str | None = Field(
        default=None, min_length=1, max_length=32, examples=["success", "partial", "failure"]
    )
    final_stats: dict[str, Any] | None = Field(
        default=None, description="The participants' own accounting; at most 16 KiB as JSON."
    )


class CompletionRead(Success):
    collaboration_id: int
    status: str
    completed_at: str
    summary: str | None
