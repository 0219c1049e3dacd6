"""State-server items: a watcher flag for LISTEN/NOTIFY wake-ups, range checks, room for HOT updates.

``watched`` is set by a provider call that found the item locked and is going to wait for it;
the statement that next releases the lock sends one NOTIFY and clears the flag, so releases
nobody waits for cost no notification. Every read of an item writes it (sliding expiry), so
the table keeps 20% of each page free.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "sessdb"
TABLE = "state_items"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("watched", sa.Boolean, nullable=False, server_default=sa.false()), schema=SCHEMA)
    op.create_check_constraint("state_items_timeout", TABLE, "timeout_minutes BETWEEN 0 AND 525600", schema=SCHEMA)
    op.create_check_constraint("state_items_lock_cookie", TABLE, "lock_cookie >= 0", schema=SCHEMA)
    op.execute(f"ALTER TABLE {SCHEMA}.{TABLE} SET (fillfactor = 80)")


def downgrade() -> None:
    op.execute(f"ALTER TABLE {SCHEMA}.{TABLE} RESET (fillfactor)")
    op.drop_constraint("state_items_lock_cookie", TABLE, schema=SCHEMA, type_="check")
    op.drop_constraint("state_items_timeout", TABLE, schema=SCHEMA, type_="check")
    op.drop_column(TABLE, "watched", schema=SCHEMA)
