"""``sessdb sql``: run a script in sessdb's database, statement by statement.

Plain SQL goes to PostgreSQL untouched. SQL Anywhere's ``CREATE/ALTER/DROP SERVICE`` and
``DROP CONNECTION n`` are parsed (``sessdb.servicesql``) and turned into calls of the
``sessdb`` functions, with every value bound as a parameter.
"""

from __future__ import annotations

from typing import TextIO

import psycopg
from psycopg import sql

from sessdb.errors import DatabaseError, SessdbError
from sessdb.servicesql import Command, ServiceSyntaxError, parse_command, split_script

_FUNCTIONS = {
    "create_service": "create_service",
    "alter_service": "alter_service",
    "drop_service": "drop_service",
    "drop_connection": "drop_connection",
}


def command_call(command: Command) -> tuple[sql.Composed, list[object]]:
    """The ``SELECT sessdb.<fn>(name => %s, ...)`` call for a parsed SA statement."""
    args = dict(command.args)
    if command.kind == "create_service" and args.pop("replace", False):
        args["replace"] = True
    names = list(args)
    call = sql.SQL("SELECT sessdb.{}({})").format(
        sql.Identifier(_FUNCTIONS[command.kind]),
        sql.SQL(", ").join(sql.SQL("{} => %s").format(sql.Identifier(n)) for n in names),
    )
    return call, [args[n] for n in names]


def run_script(dsn: str, text: str, *, out: TextIO) -> int:
    """Run every statement of ``text``; print rows and notices; stop at the first error.

    Raises ``SessdbError`` with the statement's error (SQLSTATE and message) on failure.
    """
    try:
        statements = split_script(text)
    except ValueError as exc:
        raise SessdbError(str(exc)) from None
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot reach PostgreSQL: {str(exc).strip().splitlines()[-1]}") from None
    with conn:
        conn.add_notice_handler(lambda d: print(f"{d.severity}: {d.message_primary}", file=out, flush=True))
        for number, statement in enumerate(statements, 1):
            _run_one(conn, statement, number, out)
    return 0


def _run_one(conn: psycopg.Connection, statement: str, number: int, out: TextIO) -> None:
    try:
        command = parse_command(statement)
    except ServiceSyntaxError as exc:
        raise SessdbError(f"statement {number}: {exc}") from None
    try:
        if command is not None:
            query, params = command_call(command)
            cur = conn.execute(query, params)
        else:
            cur = conn.execute(statement.encode())  # bytes: sent as written, no placeholders
    except psycopg.Error as exc:
        state = f" [{exc.sqlstate}]" if exc.sqlstate else ""
        raise SessdbError(f"statement {number}{state}: {str(exc).strip().splitlines()[0]}") from None
    _print_result(cur, out)


def _print_result(cur: psycopg.Cursor, out: TextIO) -> None:
    while True:
        if cur.description is not None:
            columns = [c.name for c in cur.description]
            rows = cur.fetchall()
            print(" | ".join(columns), file=out)
            for row in rows:
                print(" | ".join("" if v is None else str(v) for v in row), file=out)
            print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", file=out)
        elif cur.statusmessage:
            print(cur.statusmessage, file=out)
        if not cur.nextset():
            break
