"""State items as aspnet-state.md section 8 names them, with keys of any length.

``key`` becomes ``item_key`` and ``timeout_minutes`` becomes ``timeout_min``. A btree entry
holds at most about 2.7 kB, and the protocol allows request targets of 8 kB, so the primary key
moves to ``key_md5``, a stored md5 of the key; lookups compare the md5 and then the key itself.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLE = "sessdb.state_items"


def upgrade() -> None:
    op.execute(f"ALTER TABLE {TABLE} RENAME COLUMN key TO item_key")
    op.execute(f"ALTER TABLE {TABLE} RENAME COLUMN timeout_minutes TO timeout_min")
    op.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT state_items_pkey")
    op.execute(f"ALTER TABLE {TABLE} ADD COLUMN key_md5 text GENERATED ALWAYS AS (md5(item_key)) STORED")
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT state_items_pkey PRIMARY KEY (key_md5)")


def downgrade() -> None:
    op.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT state_items_pkey")
    op.execute(f"ALTER TABLE {TABLE} DROP COLUMN key_md5")
    op.execute(f"ALTER TABLE {TABLE} RENAME COLUMN timeout_min TO timeout_minutes")
    op.execute(f"ALTER TABLE {TABLE} RENAME COLUMN item_key TO key")
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT state_items_pkey PRIMARY KEY (key)")
