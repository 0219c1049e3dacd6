"""The first tables: the service catalog, the HTTP session registry and the state-server items.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "sessdb"


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False, server_default="OFF"),
        sa.Column("methods", sa.Text, nullable=False, server_default="*"),
        sa.Column("authorization", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("user_name", sa.Text),
        sa.Column("session", sa.Text, nullable=False, server_default="optional"),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("statement", sa.Text),
        sa.Column("group_name", sa.Text),
        sa.Column("format", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("type IN ('RAW','HTML','XML','JSON','SOAP','DISH')", name="services_type"),
        sa.CheckConstraint("url IN ('OFF','ON','ELEMENTS')", name="services_url"),
        sa.CheckConstraint("session IN ('optional','required','required-url')", name="services_session"),
        sa.CheckConstraint(
            "name ~ '^[A-Za-z0-9/_.!~*''()-]+$' AND name !~ '^/|/$|//' AND name !~* '^_sessdb(/|$)'",
            name="services_name",
        ),
        schema=SCHEMA,
    )
    # The HTTP session registry. The engine's memory is the authority; this table mirrors it
    # so that any SQL connection can list sessions (next_connection, connection_property).
    # Sessions die with the engine (SQL Anywhere), so the table is unlogged.
    op.create_table(
        "http_sessions",
        sa.Column("conn_id", sa.Integer, primary_key=True),
        sa.Column("session_id", sa.Text, nullable=False),
        sa.Column("engine_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_time", sa.DateTime(timezone=True)),
        sa.Column("timeout_minutes", sa.Float, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="idle"),
        sa.Column("waiting", sa.Integer, nullable=False, server_default="0"),
        sa.Column("client_addr", sa.Text),
        schema=SCHEMA,
        prefixes=["UNLOGGED"],
    )
    op.create_index("http_sessions_session_id", "http_sessions", ["session_id"], schema=SCHEMA)
    # ASP.NET session state: one row per item, keyed by the full item key the client sends.
    op.create_table(
        "state_items",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("data", sa.LargeBinary),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timeout_minutes", sa.Integer, nullable=False),
        sa.Column("flags", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lock_cookie", sa.Integer, nullable=False, server_default="0"),
        sa.Column("locked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("lock_date", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    op.create_index("state_items_expires_at", "state_items", ["expires_at"], schema=SCHEMA)


def downgrade() -> None:
    for table in ("state_items", "http_sessions", "services"):
        op.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{table} CASCADE")
    # the replaceable objects of sql/ go too, so that 'base' is an empty sessdb schema
    op.execute(f"""
        DO $$
        DECLARE f regprocedure;
        BEGIN
            FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
                     JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = '{SCHEMA}'
            LOOP
                EXECUTE format('DROP ROUTINE IF EXISTS %s CASCADE', f);
            END LOOP;
        END $$""")
