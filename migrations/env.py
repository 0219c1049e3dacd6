"""alembic environment for sessdb: migrations run on a connection that sessdb hands in.

``sessdb.migrate`` builds the alembic ``Config`` in code and passes an open SQLAlchemy
connection as ``config.attributes["connection"]``; there is no alembic.ini. The version table
lives in the ``sessdb`` schema, which is created here first so that it can hold it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

SCHEMA = "sessdb"


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    context.configure(connection=connection, version_table_schema=SCHEMA, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("sessdb migrations run online only (use 'sessdb migrate')")
run_migrations_online()
