"""Migrations: idempotent `sessdb migrate`, and a full downgrade/upgrade cycle."""

from __future__ import annotations

import psycopg

from sessdb.migrate import alembic_command, migrate

SCHEMA_QUERY = """
SELECT c.relname, c.relkind, string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod), ',' ORDER BY a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = 'sessdb' GROUP BY c.relname, c.relkind ORDER BY 1
"""
FUNCTIONS_QUERY = """
SELECT n.nspname, p.oid, p.proname, md5(p.prosrc), p.proacl::text FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname IN ('sessdb', 'sessdb_request') ORDER BY 1, 3, 2
"""


def snapshot(dsn: str) -> tuple[list, list]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(SCHEMA_QUERY).fetchall(), conn.execute(FUNCTIONS_QUERY).fetchall()


def test_migrate_twice_changes_nothing_the_second_time(scratch_dsn: str) -> None:
    migrate(scratch_dsn)
    first = snapshot(scratch_dsn)
    migrate(scratch_dsn)
    assert snapshot(scratch_dsn) == first
    tables = {row[0] for row in first[0]}
    assert {"services", "http_sessions", "state_items", "alembic_version"} <= tables
    assert ("sessdb_request", "sync_from_request") in {(row[0], row[2]) for row in first[1]}


def test_downgrade_base_then_upgrade_head(scratch_dsn: str) -> None:
    migrate(scratch_dsn)
    alembic_command(scratch_dsn, "downgrade", "base")
    with psycopg.connect(scratch_dsn) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'sessdb' AND tablename <> 'alembic_version'"
        ).fetchone()
    assert left == (0,)
    alembic_command(scratch_dsn, "upgrade", "head")
    migrate(scratch_dsn)
    with psycopg.connect(scratch_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM sessdb.services").fetchone() == (0,)


def test_the_alembic_command_downgrades_and_upgrades(scratch_dsn: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    migrate(scratch_dsn)

    def alembic(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "alembic", "-x", f"dsn={scratch_dsn}", *args], cwd=root,
                              capture_output=True, text=True, timeout=120)

    down = alembic("downgrade", "base")
    assert down.returncode == 0, down.stderr
    with psycopg.connect(scratch_dsn) as conn:
        left = conn.execute("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                            "WHERE n.nspname IN ('sessdb', 'sessdb_request')").fetchone()
        request_schema = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'sessdb_request'").fetchone()
    assert left == (0,), "downgrade base leaves no sessdb functions behind"
    assert request_schema == (0,)
    up = alembic("upgrade", "head")
    assert up.returncode == 0, up.stderr
    migrate(scratch_dsn)
    with psycopg.connect(scratch_dsn) as conn:
        assert conn.execute("SELECT sessdb.version()").fetchone() == ("0.1.0",)
