"""``sessdb serve`` as a real subprocess, on a free port, waited for until /_sessdb/ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sessdb ARGS`` and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SESSDB_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "sessdb", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, input=stdin)


@dataclass
class ServerProcess:
    """A running ``sessdb serve`` and how to reach it."""

    proc: subprocess.Popen[str]
    port: int
    data_dir: Path | None
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        """GET a path; (status, body), or (0, b"") when nothing answers."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until /_sessdb/ready answers 200 (a process-level wait with a deadline)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sessdb serve exited with {self.proc.returncode}: {self.output()}")
            if self.get("/_sessdb/ready", timeout=1)[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"sessdb serve not ready in {timeout}s: {self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def output(self) -> str:
        """Everything the process printed on stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def start_server(*args: str, env: dict[str, str] | None = None, data_dir: Path | None = None) -> ServerProcess:
    """Start ``sessdb serve`` on a free port with the given extra flags."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SESSDB_")}
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "sessdb", "serve", "--port", str(port), *args]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    fd, log_name = tempfile.mkstemp(prefix="sessdb-serve-", suffix=".log")
    with os.fdopen(fd, "w") as log_file:
        proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=log_file, text=True)
    return ServerProcess(proc, port, data_dir, Path(log_name))


class ServerFactory:
    """Starts ``sessdb serve`` subprocesses (``factory(*args, **kwargs)``) and kills them."""

    def __init__(self) -> None:
        self.started: list[ServerProcess] = []

    def __call__(self, *args: str, **kwargs) -> ServerProcess:  # type: ignore[no-untyped-def]
        server = start_server(*args, **kwargs)
        self.started.append(server)
        return server

    def kill_all(self) -> None:
        """Kill every server still running (an embedded cluster of one is left running)."""
        for server in self.started:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(10)


@pytest.fixture
def server_factory() -> Iterator[ServerFactory]:
    """A factory of ``sessdb serve`` subprocesses, all stopped at the end of the test."""
    factory = ServerFactory()
    yield factory
    factory.kill_all()
    for server in factory.started:
        server.log_path.unlink(missing_ok=True)
