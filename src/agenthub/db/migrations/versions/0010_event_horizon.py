"""events: ``written_at`` on the database's clock, so that a replay never skips an event a
transaction still in flight will commit; the unused index on ``type`` dropped

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import agenthub.db.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("written_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        # Types are matched in Python (wildcards, two spellings); no query used the index,
        # and every event insert paid for it.
        batch_op.drop_index(batch_op.f("ix_events_type"))
    if op.get_bind().dialect.name == "postgresql":
        # clock_timestamp(), not now(): evaluated after the row's id was drawn, not when its
        # transaction began. Set once the column exists: as the default of the added column, a
        # volatile function would have made PostgreSQL rewrite every existing row under an
        # exclusive lock; existing rows keep NULL, which reads as "written long ago". SQLite
        # commits one writer at a time, in id order, and needs none of it.
        op.alter_column("events", "written_at", server_default=sa.text("clock_timestamp()"))


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_type"), ["type"], unique=False)
        batch_op.drop_column("written_at")
