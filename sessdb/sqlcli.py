"""``sessdb sql``: run a script in sessdb's database, statement by statement.

Plain SQL goes to PostgreSQL untouched. SQL Anywhere's ``CREATE/ALTER/DROP SERVICE``,
``DROP CONNECTION n`` and ``SET OPTION PUBLIC.http_session_timeout = n`` are parsed (``sessdb.servicesql``) and turned into calls of the
``sessdb`` functions, with every value bound as a parameter.
"""

from __future__ import annotations

import re
from typing import TextIO

import psycopg
from psycopg import sql

from sessdb.errors import DatabaseError, SessdbError, first_line
from sessdb.servicesql import Command, ServiceSyntaxError, parse_command, split_script

_FUNCTIONS = {
    "create_service": "create_service",
    "alter_service": "alter_service",
    "drop_service": "drop_service",
    "drop_connection": "drop_connection",
    "set_option": "set_option",
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
        raise DatabaseError(f"cannot reach PostgreSQL: {first_line(exc)}") from None
    with conn:
        conn.add_notice_handler(lambda d: print(f"{d.severity}: {d.message_primary}", file=out, flush=True))
        for number, statement in enumerate(statements, 1):
            _run_one(conn, statement, number, out)
    return 0


_SET_OPTION = re.compile(
    r"^\s*SET\s+OPTION\s+(?:PUBLIC\s*\.\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*?)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)


def set_option_command(statement: str) -> Command | None:
    """SQL Anywhere's ``SET OPTION PUBLIC.name = value`` as a ``sessdb.set_option`` call, or None."""
    match = _SET_OPTION.match(statement)
    if match is None:
        return None
    value: str | None = match.group("value").strip()
    if value and value[0] == value[-1] and value[0] in "'\"" and len(value) >= 2:
        value = value[1:-1]
    if value == "" or (value or "").upper() == "NULL":
        value = None
    return Command(kind="set_option", args={"name": match.group("name"), "value": value})  # type: ignore[arg-type]


def _run_one(conn: psycopg.Connection, statement: str, number: int, out: TextIO) -> None:
    try:
        command = set_option_command(statement) or parse_command(statement)
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
        raise SessdbError(f"statement {number}{state}: {first_line(exc)}") from None
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
