"""The Collab domain: AI identities, their sessions, messages and collaborations.

Keys are integers (the Collab document's ``ai_id``, ``session_id``, ``message_id`` and
``collaboration_id`` are numbers). An AI identity also has a UUID, which is what the shared
:class:`~agenthub.core.auth.Principal` carries, like every other principal.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.core.clock import utcnow
from agenthub.db.base import Base
from agenthub.db.types import BigIntPK, PortableJSON


class AiIdentity(Base):
    """An AI that can log in to the Collab surface (registered, or made for a running machine).

    ``access`` is what its tokens may do beyond Collab: ``collab`` (nothing else, the default)
    or ``member`` (the routes a member API key may call, within ``project_id``/``tenant_id``).
    """

    __tablename__ = "ai_identities"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    principal_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, unique=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    nickname: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    expertise: Mapped[str | None] = mapped_column(sa.String(128), default=None, index=True)
    version: Mapped[str | None] = mapped_column(sa.String(32), default=None)
    project: Mapped[str | None] = mapped_column(sa.String(128), default=None)
    # sha256 of the secret: secrets are 256-bit random strings, so a fast hash is enough.
    secret_hash: Mapped[str] = mapped_column(sa.String(64))
    role: Mapped[str] = mapped_column(sa.String(16), default="member")
    access: Mapped[str] = mapped_column(sa.String(16), default="collab")
    project_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None)
    # The Hub machine this identity belongs to, for identities made at spawn.
    machine_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None, index=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[str | None] = mapped_column(sa.String(80), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime | None] = mapped_column(default=None, index=True)


class CollabSession(Base):
    """A working session of one AI (``status``: ``active`` or ``ended``)."""

    __tablename__ = "collab_sessions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    identifier: Mapped[str] = mapped_column(sa.String(16), unique=True)
    ai_id: Mapped[int] = mapped_column(
        sa.BigInteger, sa.ForeignKey("ai_identities.id", ondelete="CASCADE"), index=True
    )
    session_type: Mapped[str] = mapped_column(sa.String(32))
    project: Mapped[str | None] = mapped_column(sa.String(128), default=None)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", PortableJSON, default=dict)
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    summary: Mapped[str | None] = mapped_column(sa.Text, default=None)
    # What the AI reported when it ended the session (its own accounting).
    final_stats: Mapped[dict[str, Any] | None] = mapped_column(PortableJSON, default=None)


class CollabMessage(Base):
    """A message from one AI to another (``target_ai_id``) or to all (``None``: broadcast).

    Who received it, and whether they read it, is in :class:`MessageDelivery`. Deleting is soft
    (``deleted_at``): the row stays, and is hidden from every listing and search.
    """

    __tablename__ = "collab_messages"
    __table_args__ = (sa.Index("ix_collab_messages_sender_created", "sender_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    sender_id: Mapped[int] = mapped_column(
        sa.BigInteger, sa.ForeignKey("ai_identities.id", ondelete="CASCADE")
    )
    target_ai_id: Mapped[int | None] = mapped_column(
        sa.BigInteger, sa.ForeignKey("ai_identities.id", ondelete="CASCADE"), default=None
    )
    conversation_id: Mapped[int | None] = mapped_column(sa.BigInteger, default=None)
    message_type: Mapped[str] = mapped_column(sa.String(32), default="message")
    content: Mapped[str] = mapped_column(sa.Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", PortableJSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class MessageDelivery(Base):
    """One message in one recipient's inbox, with that recipient's read state."""

    __tablename__ = "collab_deliveries"
    __table_args__ = (
        # The inbox: a recipient's messages, newest first.
        sa.Index("ix_collab_deliveries_inbox", "recipient_id", "message_id"),
        # Unread messages of an inbox, newest first: an unread-only read does not walk past
        # the read ones.
        sa.Index(
            "ix_collab_deliveries_unread",
            "recipient_id",
            "message_id",
            sqlite_where=sa.text("read_at IS NULL"),
            postgresql_where=sa.text("read_at IS NULL"),
        ),
        # One conversation of an inbox (its total when an inbox read names it).
        sa.Index("ix_collab_deliveries_conversation", "recipient_id", "conversation_id"),
    )

    message_id: Mapped[int] = mapped_column(
        sa.BigInteger,
        sa.ForeignKey("collab_messages.id", ondelete="CASCADE"),
        primary_key=True,
    )
    recipient_id: Mapped[int] = mapped_column(
        sa.BigInteger,
        sa.ForeignKey("ai_identities.id", ondelete="CASCADE"),
        primary_key=True,
    )
    conversation_id: Mapped[int | None] = mapped_column(sa.BigInteger, default=None)
    read_at: Mapped[datetime | None] = mapped_column(default=None)


class InboxCount(Base):
    """How many messages one AI's inbox holds (``total``) and how many it has not read
    (``unread``), deleted messages not counted: an inbox read reports both without counting
    the whole inbox. Kept by database triggers on ``collab_deliveries`` (insert, ``read_at``)
    and ``collab_messages`` (``deleted_at`` set), in the transaction that changes them (see
    migration 0009); deliveries and messages are never deleted outright."""

    __tablename__ = "collab_inbox_counts"

    recipient_id: Mapped[int] = mapped_column(
        sa.BigInteger,
        sa.ForeignKey("ai_identities.id", ondelete="CASCADE"),
        primary_key=True,
    )
    total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    unread: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class Collaboration(Base):
    """A collaboration between a requester and a target AI.

    ``status``: ``pending`` → ``active`` (accepted) or ``declined``; ``active`` → ``completed``.
    """

    __tablename__ = "collaborations"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    requester_id: Mapped[int] = mapped_column(
        sa.BigInteger, sa.ForeignKey("ai_identities.id", ondelete="CASCADE"), index=True
    )
    target_id: Mapped[int] = mapped_column(
        sa.BigInteger, sa.ForeignKey("ai_identities.id", ondelete="CASCADE"), index=True
    )
    collaboration_type: Mapped[str] = mapped_column(sa.String(64))
    title: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str | None] = mapped_column(sa.Text, default=None)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", PortableJSON, default=dict)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    responded_at: Mapped[datetime | None] = mapped_column(default=None)
    response_message: Mapped[str | None] = mapped_column(sa.Text, default=None)
    response_metadata: Mapped[dict[str, Any] | None] = mapped_column(PortableJSON, default=None)
    tasks_completed: Mapped[int] = mapped_column(default=0)
    total_tasks: Mapped[int] = mapped_column(default=0)
    current_task: Mapped[str | None] = mapped_column(sa.Text, default=None)
    progress_updated_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    summary: Mapped[str | None] = mapped_column(sa.Text, default=None)
    outcome: Mapped[str | None] = mapped_column(sa.String(32), default=None)
    final_stats: Mapped[dict[str, Any] | None] = mapped_column(PortableJSON, default=None)
