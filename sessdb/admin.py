"""Administration from any SQL connection: listing sessions and dropping them.

These read and call the ``sessdb`` SQL objects, so they work against any engine that uses
the database, from any process (the CLI, tests, scripts).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from sessdb.errors import DatabaseError, SessdbError, first_line

_SESSIONS = """
SELECT s.conn_id, s.session_id, s.created_at AS created,
       sessdb._session_last_time(s.last_time, a.state, a.state_change) AS last_used, s.timeout_minutes AS timeout,
       CASE WHEN a.state IN ('active', 'idle in transaction') THEN 'busy' ELSE 'idle' END AS state,
       s.waiting, s.engine_id, s.client_addr
FROM sessdb.http_sessions s
JOIN pg_stat_activity a ON a.pid = s.conn_id AND a.backend_start <= s.created_at
ORDER BY s.created_at DESC
"""


def _connect(dsn: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot reach PostgreSQL: {first_line(exc)}") from None


def list_sessions(dsn: str) -> list[dict[str, Any]]:
    """Every live HTTP session of the database, newest first, from the sessdb.http_sessions mirror."""
    with _connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_SESSIONS)
        return cur.fetchall()


def engine_sessions(host: str, port: int, token: str | None, timeout: float = 2.0) -> list[dict[str, Any]] | None:
    """The live sessions with their queues from a running engine's admin surface, or None if none answers."""
    import json
    import urllib.error
    import urllib.request

    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    url = f"http://{host}:{port}/_sessdb/sessions" if ":" not in host else f"http://[{host}]:{port}/_sessdb/sessions"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            rows = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return rows if isinstance(rows, list) else None


def drop_connection(dsn: str, conn_id: int) -> None:
    """``sessdb.drop_connection(conn_id)``; raises ``SessdbError`` with PostgreSQL's reason."""
    with _connect(dsn) as conn:
        try:
            conn.execute("SELECT sessdb.drop_connection(%s)", [conn_id])
        except psycopg.Error as exc:
            raise SessdbError(exc.diag.message_primary or str(exc)) from None
