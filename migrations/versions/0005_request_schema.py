"""Schema ``sessdb_request``: what the last step of a session request calls, usable by any role.

That step runs with the request's role still in force until an expression of it resets it, so
PostgreSQL resolves its names (when it prepares the step, or prepares it again) as that role,
which need not have USAGE on schema ``sessdb``. Its one function therefore lives in a schema of
its own on which every role has USAGE; the function is defined in ``sql/sessions.sql``. It calls
into ``sessdb`` as whoever runs it, so a role without USAGE on ``sessdb`` that calls it gets
nothing but a permission error.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = "sessdb_request"


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    op.execute(f"GRANT USAGE ON SCHEMA {SCHEMA} TO PUBLIC")


def downgrade() -> None:
    op.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
