"""The command line as a newcomer uses it: serve, signals, recovery, and bad input."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sessdb.embedded import EmbeddedPostgres
from tests.fix_db import make_data_dir
from tests.fix_server import ServerFactory, free_port, run_cli

pytestmark = pytest.mark.slow


def assert_one_line_error(proc, status: int) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode == status, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sessdb: error: ")
    assert "Traceback" not in proc.stderr


@pytest.fixture
def data_dir(server_factory: ServerFactory) -> Iterator[Path]:
    """A new data dir under /tmp, removed after the test (an embedded cluster is some 46 MB).

    Its teardown runs before ``server_factory``'s (it depends on it), so it kills the test's
    servers itself, then stops a cluster left running in the dir (by a killed serve, by
    ``db start``, by a test that failed half-way) before removing it.
    """
    path = make_data_dir()
    yield path
    server_factory.kill_all()
    EmbeddedPostgres(path).stop()  # raises, and keeps the dir, when a running cluster does not stop
    shutil.rmtree(path)


def cluster_pid(data_dir: Path) -> int | None:
    pidfile = data_dir / "pgdata" / "postmaster.pid"
    if not pidfile.exists():
        return None
    pid = int(pidfile.read_text().split("\n", 1)[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def test_serve_sigterm_stops_cleanly_and_restarts(server_factory, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(data_dir=data_dir)
    server.wait_ready()
    url = run_cli("db", "url", "--data-dir", str(data_dir)).stdout.strip()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert cluster_pid(data_dir) is not None
    assert server.stop(signal.SIGTERM, timeout=10) == 0
    assert cluster_pid(data_dir) is None, "the embedded PostgreSQL must stop with serve"
    again = server_factory(data_dir=data_dir)
    again.wait_ready()
    assert again.stop(signal.SIGTERM, timeout=10) == 0


def test_serve_recovers_after_sigkill(server_factory, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(data_dir=data_dir)
    server.wait_ready()
    server.stop(signal.SIGKILL)
    pg = cluster_pid(data_dir)
    if pg is not None:  # kill the orphaned PostgreSQL too, the harshest case
        os.kill(pg, signal.SIGKILL)
    again = server_factory(data_dir=data_dir)
    again.wait_ready()
    assert again.stop(signal.SIGTERM, timeout=10) == 0
    assert cluster_pid(data_dir) is None


def test_serve_adopts_a_database_left_by_a_killed_serve(server_factory, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(data_dir=data_dir)
    server.wait_ready()
    server.stop(signal.SIGKILL)
    assert cluster_pid(data_dir) is not None
    again = server_factory(data_dir=data_dir)
    again.wait_ready()
    assert again.stop(signal.SIGTERM, timeout=10) == 0
    assert cluster_pid(data_dir) is None


def test_db_start_status_stop(data_dir: Path) -> None:
    where = str(data_dir)
    assert run_cli("db", "start", "--data-dir", where).returncode == 0
    status = run_cli("db", "status", "--data-dir", where)
    assert "running" in status.stdout and "cluster:" in status.stdout
    assert run_cli("migrate", "--data-dir", where).returncode == 0
    assert run_cli("migrate", "--data-dir", where).returncode == 0
    assert run_cli("db", "stop", "--data-dir", where).stdout.strip() == "stopped"
    assert "stopped" in run_cli("db", "status", "--data-dir", where).stdout


def test_db_url_names_a_private_socket_and_tcp_answers_too(data_dir: Path) -> None:
    where = str(data_dir)
    assert run_cli("db", "start", "--data-dir", where).returncode == 0
    url = run_cli("db", "url", "--data-dir", where).stdout.strip()
    sockets = data_dir / "run"
    assert f"host={sockets}&" in url, url
    assert stat.S_IMODE(sockets.stat().st_mode) == 0o700, "only PostgreSQL's OS user (and root) may enter"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,), "through the socket"
    info = psycopg.conninfo.conninfo_to_dict(url)
    with psycopg.connect(psycopg.conninfo.make_conninfo(url, host="127.0.0.1")) as conn:
        assert conn.execute("SELECT inet_server_addr()::text").fetchone() == ("127.0.0.1/32",)
        assert info["port"] == str(conn.info.port)


def test_a_data_dir_too_deep_for_a_socket_gets_tcp(server_factory) -> None:  # type: ignore[no-untyped-def]
    deep = make_data_dir(prefix="sessdb-test-" + "d" * 100 + "-")
    try:
        assert run_cli("db", "start", "--data-dir", str(deep)).returncode == 0
        url = run_cli("db", "url", "--data-dir", str(deep)).stdout.strip()
        assert "@127.0.0.1:" in url, url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        EmbeddedPostgres(deep).stop()
        shutil.rmtree(deep)


def test_unreachable_dsn_is_one_line() -> None:
    port = free_port()
    proc = run_cli("migrate", "--dsn", f"postgresql://nobody:x@127.0.0.1:{port}/none")
    assert_one_line_error(proc, 1)
    assert "cannot reach PostgreSQL" in proc.stderr


def test_port_in_use_is_one_line(dsn: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = run_cli("serve", "--dsn", dsn, "--port", str(port), "--no-migrate")
    assert_one_line_error(proc, 1)
    assert str(port) in proc.stderr


def test_data_dir_that_cannot_be_written() -> None:
    proc = run_cli("db", "start", "--data-dir", "/proc/sessdb-cannot-write-here")
    assert_one_line_error(proc, 1)
    assert "data dir" in proc.stderr


def test_data_dir_that_holds_something_else(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("mine")
    proc = run_cli("db", "start", "--data-dir", str(tmp_path))
    assert_one_line_error(proc, 1)
    assert "holds something else" in proc.stderr
    assert (tmp_path / "thesis.tex").read_text() == "mine"


@pytest.mark.parametrize(
    "args",
    [("serve", "--bogus"), ("serve", "--port", "http"), ("frobnicate",), ("db", "explode"),
     ("config", "--session-timeout", "0")],
)
def test_bad_usage_exits_2(args: tuple[str, ...]) -> None:
    assert_one_line_error(run_cli(*args), 2)


def test_unknown_setting_in_environment_exits_2() -> None:
    assert_one_line_error(run_cli("config", env={"SESSDB_PROT": "1"}), 2)


def test_config_shows_sources() -> None:
    proc = run_cli("config", "--port", "9999", env={"SESSDB_POOL_SIZE": "3"})
    assert proc.returncode == 0
    lines = {ln.split()[0]: ln for ln in proc.stdout.splitlines()}
    assert "9999" in lines["PORT"] and "(flag)" in lines["PORT"]
    assert "(env)" in lines["POOL_SIZE"]
    assert "(default)" in lines["HOST"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the root case needs root")
def test_root_leaves_parent_modes_unchanged() -> None:
    base = Path("/root") / f"sessdb-modes-{os.getpid()}"
    private = base / "private"
    private.mkdir(parents=True)
    base.chmod(0o711)
    private.chmod(0o700)
    data_dir = private / "data"
    watched = [Path("/"), Path("/root"), base, private]
    before = {p: stat.S_IMODE(p.stat().st_mode) for p in watched}
    try:
        assert run_cli("db", "start", "--data-dir", str(data_dir)).returncode == 0
        status = run_cli("db", "status", "--data-dir", str(data_dir)).stdout
        assert "/var/lib/sessdb/clusters/" in status, status
        url = run_cli("db", "url", "--data-dir", str(data_dir)).stdout.strip()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        after = {p: stat.S_IMODE(p.stat().st_mode) for p in watched}
        assert after == before
    finally:
        run_cli("db", "stop", "--data-dir", str(data_dir))
        import shutil

        cluster = [ln.split()[-1] for ln in status.splitlines() if ln.startswith("cluster:")]
        shutil.rmtree(base, ignore_errors=True)
        if cluster:
            shutil.rmtree(Path(cluster[0]).parent, ignore_errors=True)


def test_sigterm_with_a_request_in_flight(server_factory, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    import threading
    import time
    import urllib.request

    server = server_factory(data_dir=data_dir)
    server.wait_ready()
    created = run_cli("sql", "--data-dir", str(data_dir), "CREATE SERVICE slow TYPE 'RAW' AS SELECT pg_sleep(60)::text")
    assert created.returncode == 0, created.stderr
    answer: list[int] = []

    def slow_request() -> None:
        try:
            urllib.request.urlopen(server.url + "/slow", timeout=30)
            answer.append(200)
        except urllib.error.HTTPError as exc:
            answer.append(exc.code)
        except OSError:
            answer.append(0)

    thread = threading.Thread(target=slow_request)
    thread.start()
    url = run_cli("db", "url", "--data-dir", str(data_dir)).stdout.strip()
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' "
                               "AND state = 'active' AND pid <> pg_backend_pid()").fetchone()[0]:
            assert time.monotonic() < deadline, "the slow statement never started"
            time.sleep(0.05)
    started = time.monotonic()
    assert server.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - started < 10
    thread.join(10)
    assert answer == [503], "the in-flight request was answered, not dropped"
    assert cluster_pid(data_dir) is None


def test_a_pgdata_sessdb_did_not_make_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "pgdata").mkdir()
    (tmp_path / "pgdata" / "important.txt").write_text("mine")
    proc = run_cli("db", "start", "--data-dir", str(tmp_path))
    assert_one_line_error(proc, 1)
    assert "did not make" in proc.stderr
    assert (tmp_path / "pgdata" / "important.txt").read_text() == "mine"


def test_sigterm_while_starting_exits_0_and_leaves_nothing_running(server_factory, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    import time

    server = server_factory(data_dir=data_dir)
    deadline = time.monotonic() + 30
    while not (data_dir / "cluster.init").exists() and not (data_dir / "cluster.json").exists():
        assert time.monotonic() < deadline, "serve never began creating its cluster"
        time.sleep(0.01)
    assert server.stop(signal.SIGTERM, timeout=30) == 0, server.output()
    assert cluster_pid(data_dir) is None
    assert not list(data_dir.glob(".pw-*")), "no password file left behind"
    again = server_factory(data_dir=data_dir)
    again.wait_ready()
    assert again.stop(signal.SIGTERM, timeout=10) == 0
