from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.core.clock import utcnow
from agenthub.db.base import Base
from agenthub.db.types import BigIntPK, PortableJSON


class Event(Base):
    """One state change, written in the transaction that made it.

    The key is an increasing integer rather than a UUID: the log is read in order, and a stream
    client resumes from the last id it saw (SSE ``Last-Event-ID``).
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(sa.String(64))
    data: Mapped[dict[str, Any]] = mapped_column(PortableJSON)
    actor: Mapped[str | None] = mapped_column(sa.String(80), default=None)
    project_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None, index=True)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None, index=True)
    # Who besides project/tenant members receives it: ``ai:<id>`` (one AI) or ``ai:*`` (all AIs).
    audience: Mapped[str | None] = mapped_column(sa.String(32), default=None, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # PostgreSQL: when the row was written, on the database's clock, after its id was drawn
    # (a server default; NULL on SQLite, whose one writer commits in id order). A replay uses
    # it to tell a gap in the ids that a transaction in flight may still fill; see
    # ``services.events.horizon``.
    written_at: Mapped[datetime | None] = mapped_column(server_default=sa.FetchedValue())
