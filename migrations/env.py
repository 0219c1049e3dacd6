"""alembic environment for sessdb: migrations run on a connection that sessdb hands in.

``sessdb.migrate`` builds the alembic ``Config`` in code and passes an open SQLAlchemy
connection as ``config.attributes["connection"]``. Run by hand (``alembic -x dsn=... upgrade
head`` with the checkout's alembic.ini), the DSN comes from ``-x dsn=`` or ``SESSDB_DSN``. The
version table lives in the ``sessdb`` schema, which is created here first so that it can hold it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

SCHEMA = "sessdb"


def _migrate(connection) -> None:  # type: ignore[no-untyped-def]
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    context.configure(connection=connection, version_table_schema=SCHEMA, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    import os

    import psycopg
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    dsn = context.get_x_argument(as_dictionary=True).get("dsn") or os.environ.get("SESSDB_DSN")
    if not dsn:
        raise SystemExit("give the database with -x dsn=... or SESSDB_DSN (or run 'sessdb migrate')")
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool)
    with engine.begin() as conn:
        _migrate(conn)


if context.is_offline_mode():
    raise SystemExit("sessdb migrations run online only (use 'sessdb migrate')")
run_migrations_online()
