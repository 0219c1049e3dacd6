"""The ``sessdb`` command line (contract section 1).

Every setting is a flag of every command that needs the database (flags win over
``SESSDB_*`` variables). Errors print one line on stderr and exit 1 (runtime) or 2 (usage);
``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from sessdb import config
from sessdb.errors import SessdbError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    # --debug may also follow the subcommand; SUPPRESS keeps a global --debug from being reset
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    group = parser.add_argument_group("settings (also SESSDB_<NAME> variables)")
    for setting in config.SETTINGS:
        group.add_argument(setting.flag, dest=f"setting_{setting.name}", metavar=setting.name,
                           help=f"{setting.help} (default: {setting.default or 'none'})")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(prog="sessdb", description="Web services and HTTP sessions on PostgreSQL.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="start the engine (and the embedded PostgreSQL)")
    serve.add_argument("--no-migrate", action="store_true", help="do not migrate the database first")
    sub.add_parser("migrate", help="alembic upgrade head, then the sql/ objects")
    db = sub.add_parser("db", help="manage the embedded PostgreSQL")
    db.add_argument("action", choices=["start", "stop", "status", "url"])
    sql = sub.add_parser("sql", help="run SQL (and SQL Anywhere service statements) in sessdb's database")
    sql.add_argument("statement", nargs="?", help="the SQL to run")
    sql.add_argument("-f", "--file", help="a file of SQL to run ('-' for standard input)")
    sessions = sub.add_parser("sessions", help="list the live HTTP sessions")
    sessions.add_argument("--json", action="store_true", help="print JSON")
    drop = sub.add_parser("drop", help="drop a session's connection (as DROP CONNECTION)")
    drop.add_argument("conn_id", type=int, help="the connection id (PostgreSQL backend pid)")
    sub.add_parser("config", help="print every effective setting and its source")
    for command in (serve, sub.choices["migrate"], db, sql, sessions, drop, sub.choices["config"]):
        _settings_flags(command)
    return parser


def _resolve(args: argparse.Namespace) -> config.Resolved:
    flags = {s.name: getattr(args, f"setting_{s.name}", None) for s in config.SETTINGS}
    return config.resolve(os.environ, flags)


@contextmanager
def database(settings: config.Settings, *, owner_pid: int | None = None) -> Iterator[str]:
    """Yield a DSN: ``SESSDB_DSN``, or the embedded cluster (started here, stopped after if so)."""
    if settings.dsn:
        yield settings.dsn
        return
    from sessdb.embedded import EmbeddedPostgres

    cluster = EmbeddedPostgres(settings.data_dir)
    was_running = cluster.status().running
    try:
        url, started = cluster.start(owner_pid=owner_pid)
    except BaseException:
        if not was_running and owner_pid is not None and cluster.status().running:
            cluster.stop()  # interrupted while starting it: leave nothing running
        raise
    try:
        yield url
    finally:
        if started or (owner_pid is not None and cluster.owned_by(owner_pid)):
            logging.getLogger("sessdb.db").info("stopping the embedded PostgreSQL")
            cluster.stop()
            logging.getLogger("sessdb.db").info("embedded PostgreSQL stopped")


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if level != "debug":
        logging.getLogger("alembic").setLevel(logging.WARNING)


class StopRequested(BaseException):
    """SIGTERM or SIGINT before the server runs: unwind (stopping what was started), exit 0."""


def _stop_on_signal(signum: int, frame: object) -> None:
    raise StopRequested()


def cmd_serve(args: argparse.Namespace, settings: config.Settings) -> int:
    from sessdb.migrate import migrate
    from sessdb.serve import serve

    _check_port_free(settings)
    # until the event loop takes the signals over, a stop request unwinds the start-up
    previous = {sig: signal.signal(sig, _stop_on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with database(settings, owner_pid=os.getpid()) as dsn:
            if not args.no_migrate:
                migrate(dsn)
            asyncio.run(serve(settings, dsn))
    except StopRequested:
        logging.getLogger("sessdb.web").info("stopped while starting")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _check_port_free(settings: config.Settings) -> None:
    import socket

    if settings.port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.host, settings.port))
        except OSError as exc:
            raise SessdbError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None


def cmd_migrate(args: argparse.Namespace, settings: config.Settings) -> int:
    from sessdb.migrate import migrate

    with database(settings) as dsn:
        migrate(dsn)
    print("migrated")
    return 0


def cmd_db(args: argparse.Namespace, settings: config.Settings) -> int:
    from sessdb.embedded import EmbeddedPostgres

    if settings.dsn and args.action != "url":
        raise UsageError("'sessdb db' manages the embedded PostgreSQL; SESSDB_DSN points elsewhere")
    if args.action == "url":
        print(settings.dsn or EmbeddedPostgres(settings.data_dir).url())
        return 0
    cluster = EmbeddedPostgres(settings.data_dir)
    if args.action == "start":
        url, started = cluster.start()
        print("started" if started else "already running")
    elif args.action == "stop":
        print("stopped" if cluster.stop() else "not running")
    else:
        _print_status(cluster.status())
    return 0


def _print_status(status) -> None:  # type: ignore[no-untyped-def]
    print(f"data dir:  {status.data_dir}")
    if status.pgdata is None:
        print("cluster:   none (created by 'sessdb db start' or 'sessdb serve')")
        return
    print(f"cluster:   {status.pgdata}")
    print(f"os user:   {status.os_user}")
    print(f"state:     {'running (pid %s)' % status.pid if status.running else 'stopped'}")
    print(f"port:      {status.port}")


def cmd_sql(args: argparse.Namespace, settings: config.Settings) -> int:
    from sessdb.sqlcli import run_script

    if (args.statement is None) == (args.file is None):
        raise UsageError("give either a statement or -f FILE")
    if args.file == "-":
        text = sys.stdin.read()
    elif args.file:
        try:
            with open(args.file, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    else:
        text = args.statement
    with database(settings) as dsn:
        return run_script(dsn, text, out=sys.stdout)


def cmd_sessions(args: argparse.Namespace, settings: config.Settings) -> int:
    from sessdb.admin import engine_sessions, list_sessions

    # the running engine knows the queues; without one answering, the database's mirror lists the sessions
    rows = engine_sessions(settings.host, settings.port, settings.admin_token)
    if rows is None:
        with database(settings) as dsn:
            rows = list_sessions(dsn)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    columns = ["conn_id", "session_id", "created", "last_used", "timeout", "state", "waiting"]
    table = [columns] + [[str(r[c] if r[c] is not None else "") for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip())
    return 0


def cmd_drop(args: argparse.Namespace, settings: config.Settings) -> int:
    from sessdb.admin import drop_connection

    with database(settings) as dsn:
        drop_connection(dsn, args.conn_id)
    print(f"dropped connection {args.conn_id}")
    return 0


def cmd_config(args: argparse.Namespace, settings: config.Settings, resolved: config.Resolved) -> int:
    rows = config.describe(resolved)
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value:<24}  ({source})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sessdb`` console script; returns the exit status."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        args = build_parser().parse_args(argv)
        resolved = _resolve(args)
        settings = resolved.settings
        _configure_logging("debug" if args.debug else settings.log_level)
        if args.command == "config":
            return cmd_config(args, settings, resolved)
        handler = {"serve": cmd_serve, "migrate": cmd_migrate, "db": cmd_db, "sql": cmd_sql,
                   "sessions": cmd_sessions, "drop": cmd_drop}[args.command]
        return handler(args, settings)
    except UsageError as exc:
        print(f"sessdb: error: {exc}", file=sys.stderr)
        return 2
    except SessdbError as exc:
        if debug:
            raise
        print(f"sessdb: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # anything unforeseen still gets one line
        if debug:
            raise
        print(f"sessdb: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
