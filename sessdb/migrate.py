"""Bringing a database to the schema this sessdb expects.

Tables, indexes and roles belong to alembic (``migrations/``); functions, views and triggers
belong to ``sql/`` and are applied after ``upgrade head`` in the order of ``sql/load.txt``.
Both steps run under one advisory lock, so two processes migrating at once take turns.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg

from sessdb.errors import DatabaseError, first_line

log = logging.getLogger("sessdb.sql")

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = ROOT / "migrations"
SQL_DIR = ROOT / "sql"
_LOCK_KEY = 0x5E55DB  # advisory lock that serializes migrations


def _alembic_config(connection):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    if not (MIGRATIONS_DIR / "env.py").exists():
        raise DatabaseError(f"migrations not found in {MIGRATIONS_DIR} (install sessdb from its checkout with pip -e)")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _sqlalchemy_engine(dsn: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool)


def alembic_command(dsn: str, action: str, revision: str) -> None:
    """Run alembic ``upgrade`` or ``downgrade`` to ``revision`` on the database at ``dsn``."""
    from alembic import command

    engine = _sqlalchemy_engine(dsn)
    try:
        with engine.begin() as connection:
            getattr(command, action)(_alembic_config(connection), revision)
    finally:
        engine.dispose()


def sql_files() -> list[Path]:
    """The files of ``sql/`` in load order."""
    manifest = SQL_DIR / "load.txt"
    names = [ln.strip() for ln in manifest.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return [SQL_DIR / name for name in names]


def apply_sql(conn: psycopg.Connection) -> None:
    """Apply every replaceable SQL object (idempotent)."""
    for path in sql_files():
        log.debug("applying %s", path.name)
        try:
            conn.execute(path.read_text().encode())  # bytes: run as a script, no placeholders
        except psycopg.Error as exc:
            raise DatabaseError(f"{path.name}: {exc}") from None


def migrate(dsn: str) -> None:
    """``alembic upgrade head`` then the ``sql/`` objects, under an advisory lock.

    Raises ``DatabaseError`` with a one-line reason when the database cannot be reached or a
    step fails.
    """
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as lock_conn:
            lock_conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
            try:
                alembic_command(dsn, "upgrade", "head")
                with lock_conn.transaction():
                    apply_sql(lock_conn)
            finally:
                lock_conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot reach PostgreSQL: {first_line(exc)}") from None
    except psycopg.Error as exc:
        raise DatabaseError(f"migration failed: {first_line(exc)}") from None
