from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.db.base import Base


class RateLimitCounter(Base):
    """Fixed-window request counters, used when no Redis is configured."""

    __tablename__ = "rate_limit_counters"

    subject: Mapped[str] = mapped_column(sa.String(96), primary_key=True)
    window_s: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    window_start: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class HubInfo(Base):
    """Facts about this hub installation shared by its replicas (its uuid, ...)."""

    __tablename__ = "hub_info"

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(255))
