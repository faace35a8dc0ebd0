"""collab: inbox counts kept by triggers, so an inbox read does not count the whole inbox;
indexes for unread-only and per-conversation reads

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 05:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A delivery counts while its message is not deleted: ``total`` all of them, ``unread`` those
# whose ``read_at`` is NULL. Three changes move the counts: a delivery is inserted (a message
# sent), its ``read_at`` changes (an inbox read), its message is soft-deleted.
SQLITE_TRIGGERS = {
    "collab_inbox_count_insert": (
        "CREATE TRIGGER collab_inbox_count_insert AFTER INSERT ON collab_deliveries BEGIN "
        "INSERT INTO collab_inbox_counts (recipient_id, total, unread) "
        "VALUES (new.recipient_id, 1, new.read_at IS NULL) "
        "ON CONFLICT (recipient_id) DO UPDATE SET total = total + 1, "
        "unread = unread + excluded.unread; END"
    ),
    "collab_inbox_count_read": (
        "CREATE TRIGGER collab_inbox_count_read AFTER UPDATE OF read_at ON collab_deliveries "
        "WHEN (old.read_at IS NULL) != (new.read_at IS NULL) AND "
        "(SELECT deleted_at FROM collab_messages WHERE id = new.message_id) IS NULL BEGIN "
        "UPDATE collab_inbox_counts SET unread = unread + (new.read_at IS NULL) "
        "- (old.read_at IS NULL) WHERE recipient_id = new.recipient_id; END"
    ),
    "collab_inbox_count_deleted": (
        "CREATE TRIGGER collab_inbox_count_deleted AFTER UPDATE OF deleted_at ON collab_messages "
        "WHEN old.deleted_at IS NULL AND new.deleted_at IS NOT NULL BEGIN "
        "UPDATE collab_inbox_counts SET total = total - 1, unread = unread - ("
        "SELECT d.read_at IS NULL FROM collab_deliveries d WHERE d.message_id = new.id "
        "AND d.recipient_id = collab_inbox_counts.recipient_id) "
        "WHERE recipient_id IN "
        "(SELECT recipient_id FROM collab_deliveries WHERE message_id = new.id); END"
    ),
}

# PostgreSQL: statement-level triggers with transition tables for deliveries (a broadcast's
# thousands of rows are one grouped upsert), a row trigger for the rare message deletion.
# Races between an inbox read and a deletion of the same message are ordered by the message
# row's lock: the read's trigger takes it FOR SHARE before looking at ``deleted_at``, and a
# deletion's UPDATE holds it, so whichever commits second sees the other's effect (each
# statement in a PL/pgSQL function sees what committed before it began).
POSTGRES_FUNCTIONS = {
    "collab_inbox_count_insert": """
        BEGIN
          INSERT INTO collab_inbox_counts AS c (recipient_id, total, unread)
          SELECT recipient_id, count(*), count(*) FILTER (WHERE read_at IS NULL)
          FROM new_rows GROUP BY recipient_id
          ON CONFLICT (recipient_id) DO UPDATE
            SET total = c.total + EXCLUDED.total, unread = c.unread + EXCLUDED.unread;
          RETURN NULL;
        END
    """,
    "collab_inbox_count_read": """
        BEGIN
          PERFORM 1 FROM collab_messages
          WHERE id IN (SELECT message_id FROM new_rows) ORDER BY id FOR SHARE;
          UPDATE collab_inbox_counts AS c SET unread = c.unread + x.delta
          FROM (
            SELECT n.recipient_id,
                   sum((n.read_at IS NULL)::int - (o.read_at IS NULL)::int) AS delta
            FROM new_rows n JOIN old_rows o USING (message_id, recipient_id)
            JOIN collab_messages m ON m.id = n.message_id
            WHERE m.deleted_at IS NULL
            GROUP BY n.recipient_id
          ) AS x
          WHERE c.recipient_id = x.recipient_id AND x.delta <> 0;
          RETURN NULL;
        END
    """,
    "collab_inbox_count_deleted": """
        BEGIN
          IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN
            UPDATE collab_inbox_counts AS c
            SET total = c.total - 1, unread = c.unread - (d.read_at IS NULL)::int
            FROM collab_deliveries d
            WHERE d.message_id = NEW.id AND c.recipient_id = d.recipient_id;
          END IF;
          RETURN NULL;
        END
    """,
}
POSTGRES_TRIGGERS = {
    "collab_inbox_count_insert": "AFTER INSERT ON collab_deliveries "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
    "collab_inbox_count_read": "AFTER UPDATE ON collab_deliveries "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT",
    "collab_inbox_count_deleted": "AFTER UPDATE OF deleted_at ON collab_messages FOR EACH ROW",
}
TRIGGER_TABLES = {
    "collab_inbox_count_insert": "collab_deliveries",
    "collab_inbox_count_read": "collab_deliveries",
    "collab_inbox_count_deleted": "collab_messages",
}


def upgrade() -> None:
    op.create_table(
        "collab_inbox_counts",
        sa.Column("recipient_id", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("unread", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["ai_identities.id"],
            name=op.f("fk_collab_inbox_counts_recipient_id_ai_identities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("recipient_id", name=op.f("pk_collab_inbox_counts")),
    )
    with op.batch_alter_table("collab_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_collab_deliveries_conversation", ["recipient_id", "conversation_id"], unique=False
        )
        batch_op.create_index(
            "ix_collab_deliveries_unread",
            ["recipient_id", "message_id"],
            unique=False,
            sqlite_where=sa.text("read_at IS NULL"),
            postgresql_where=sa.text("read_at IS NULL"),
        )
    # The inboxes as they are now.
    op.execute(
        "INSERT INTO collab_inbox_counts (recipient_id, total, unread) "
        "SELECT d.recipient_id, count(*), count(*) FILTER (WHERE d.read_at IS NULL) "
        "FROM collab_deliveries d JOIN collab_messages m ON m.id = d.message_id "
        "WHERE m.deleted_at IS NULL GROUP BY d.recipient_id"
    )
    if op.get_bind().dialect.name == "sqlite":
        for sql in SQLITE_TRIGGERS.values():
            op.execute(sql)
        return
    for name, body in POSTGRES_FUNCTIONS.items():
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $${body}$$")
        op.execute(f"CREATE TRIGGER {name} {POSTGRES_TRIGGERS[name]} EXECUTE FUNCTION {name}()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        for name, table in TRIGGER_TABLES.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    with op.batch_alter_table("collab_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_collab_deliveries_unread")
        batch_op.drop_index("ix_collab_deliveries_conversation")
    op.drop_table("collab_inbox_counts")
