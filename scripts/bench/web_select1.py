#!/usr/bin/env python3
"""sessdb serving a JSON service ``SELECT 1`` against a hand-written aiohttp + psycopg_pool handler.

One run starts everything it needs and stops it again:

1. an embedded PostgreSQL (``python -m sessdb db start --data-dir DIR``; a temporary DIR
   unless ``--data-dir`` is given, which also reuses a cluster already there), migrated;
2. the JSON service ``bench/select1`` with ``SELECT 1 AS one`` (through ``sessdb sql``);
3. ``sessdb serve`` and ``scripts/bench/baseline_app.py``: one process each, the same pool
   size, both on 127.0.0.1 and both without an access log;
4. ``wrk`` (installed with apt-get when missing) against each in turn, after a short warm-up
   so neither is measured while its pool fills up; ``--rounds`` times, the order of the two
   swapped every round (a shared machine drifts, and what runs second sees a warmer system).

It prints, for each round, both throughputs, the ratio sessdb/baseline, both p99 latencies and
any non-2xx answers (which would make a throughput meaningless), then the median ratio. Every
step has a deadline; the whole run is bounded by about ``2 * rounds * (warmup + duration) + 90``
seconds.

    .venv/bin/python scripts/bench/web_select1.py [--duration 10] [--rounds 3] [--connections 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SERVICE = "bench/select1"
STATEMENT = "SELECT 1 AS one"
EXPECTED_BODY = [{"one": 1}]


@dataclass
class WrkResult:
    """What one wrk run measured."""

    requests_per_second: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sessdb(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
    """Run ``python -m sessdb ARGS``; its stdout, or exit with its stderr on failure."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SESSDB_")}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "sessdb", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"sessdb {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout


def ensure_wrk() -> str:
    """The path of wrk, installing the Debian/Ubuntu package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk not found: installing it with apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, timeout=300, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, timeout=300, env=env)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is still missing after apt-get install")
    return found


@contextlib.contextmanager
def cluster(data_dir: Path | None) -> Iterator[str]:
    """A DSN of an embedded PostgreSQL; stopped (and removed, if temporary) at the end if we started it."""
    temporary = data_dir is None
    if temporary:
        data_dir = Path(tempfile.mkdtemp(prefix="sessdb-bench-"))
        data_dir.chmod(0o755)  # the cluster runs as an unprivileged OS user that must reach it
    assert data_dir is not None
    started = "started" in sessdb("db", "start", "--data-dir", str(data_dir), timeout=180)
    try:
        yield sessdb("db", "url", "--data-dir", str(data_dir)).strip()
    finally:
        if started:
            sessdb("db", "stop", "--data-dir", str(data_dir), timeout=120)
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def process(name: str, cmd: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, stopped with SIGTERM (then SIGKILL) at the end."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SESSDB_")}
    full_env.update(env or {})
    logfile = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=logfile, stderr=subprocess.STDOUT)
    try:
        yield proc
    except BaseException:
        logfile.seek(0)
        sys.stderr.write(f"--- output of {name} ---\n{logfile.read().decode(errors='replace')[-4000:]}\n")
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        logfile.close()


def wait_answering(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Poll ``url`` until it answers the expected JSON (a process-level wait with a deadline)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body = json.loads(resp.read())
                if resp.status == 200 and body == EXPECTED_BODY:
                    return
                last = f"{resp.status} {body!r}"
        except (OSError, ValueError, urllib.error.HTTPError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer {EXPECTED_BODY} within {timeout}s (last: {last})")


def run_wrk(wrk: str, url: str, *, seconds: float, connections: int, threads: int) -> WrkResult:
    """One wrk run with ``--latency``; its figures."""
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "--timeout", "5s", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rps = float(_search(r"Requests/sec:\s+([\d.]+)", out))
    requests = int(_search(r"(\d+) requests in", out))
    non_2xx = int(_search(r"Non-2xx or 3xx responses:\s+(\d+)", out, "0"))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", _search(r"Socket errors:(.*)", out, "")))
    value, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE).groups()  # type: ignore[union-attr]
    p99_ms = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return WrkResult(rps, p99_ms, requests, non_2xx, errors)


def _search(pattern: str, text: str, default: str | None = None) -> str:
    found = re.search(pattern, text)
    if found:
        return found.group(1)
    if default is None:
        raise SystemExit(f"cannot read wrk's output ({pattern!r}):\n{text}")
    return default


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of load on each server (default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of unmeasured load first (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the order swapped each time (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--pool-size", type=int, default=10, help="database connections of each server (default 10)")
    parser.add_argument("--data-dir", type=Path, help="embedded cluster to start or reuse (default: a temporary one)")
    args = parser.parse_args()

    wrk = ensure_wrk()
    with cluster(args.data_dir) as dsn:
        sessdb("migrate", "--dsn", dsn)
        sessdb("sql", f"CREATE OR REPLACE SERVICE \"{SERVICE}\" TYPE 'JSON' AUTHORIZATION OFF AS {STATEMENT}",
               env={"SESSDB_DSN": dsn})
        ports = {"sessdb": free_port(), "baseline": free_port()}
        urls = {"sessdb": f"http://127.0.0.1:{ports['sessdb']}/{SERVICE}",
                "baseline": f"http://127.0.0.1:{ports['baseline']}/select1"}
        serve_cmd = [sys.executable, "-m", "sessdb", "serve", "--dsn", dsn, "--no-migrate", "--port",
                     str(ports["sessdb"]), "--pool-size", str(args.pool_size), "--log-level", "warning"]
        base_cmd = [sys.executable, str(HERE / "baseline_app.py"), "--dsn", dsn, "--port", str(ports["baseline"]),
                    "--pool-size", str(args.pool_size)]
        rounds: list[dict[str, WrkResult]] = []
        with process("sessdb serve", serve_cmd) as serve_proc, process("baseline", base_cmd) as base_proc:
            wait_answering(urls["sessdb"], serve_proc)
            wait_answering(urls["baseline"], base_proc)
            for number in range(max(1, args.rounds)):
                order = ("sessdb", "baseline") if number % 2 == 0 else ("baseline", "sessdb")
                rounds.append({name: load(wrk, name, urls[name], args) for name in order})
    report(rounds, args)
    return 0


def load(wrk: str, name: str, url: str, args: argparse.Namespace) -> WrkResult:
    """One server's measured run, after its warm-up; one at a time, since the servers share the
    CPUs with wrk and PostgreSQL."""
    log(f"loading {name}: {args.warmup:g}s warm-up, then {args.duration:g}s measured")
    if args.warmup > 0:
        run_wrk(wrk, url, seconds=max(1, args.warmup), connections=args.connections, threads=args.threads)
    return run_wrk(wrk, url, seconds=args.duration, connections=args.connections, threads=args.threads)


def report(rounds: list[dict[str, WrkResult]], args: argparse.Namespace) -> None:
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s on 127.0.0.1, "
          f"pool size {args.pool_size} each, one process each, {os.cpu_count()} CPUs")
    ratios = []
    for number, results in enumerate(rounds, 1):
        print(f"round {number} ({' then '.join(results)}):")
        for name in ("sessdb", "baseline"):
            res = results[name]
            print(f"{name:>9}: {res.requests_per_second:10.1f} req/s   p99 {res.p99_ms:8.2f} ms   "
                  f"{res.requests} requests, {res.non_2xx} non-2xx, {res.errors} socket errors")
            if res.non_2xx or res.errors:
                print(f"  WARNING: {name} answered {res.non_2xx} non-2xx responses and had {res.errors} socket "
                      "errors; its throughput is not comparable")
        base = results["baseline"].requests_per_second
        ratios.append(results["sessdb"].requests_per_second / base if base else 0.0)
        print(f"    ratio: {ratios[-1]:.2f}")
    print(f"median ratio over {len(ratios)} rounds: {statistics.median(ratios):.2f} "
          f"(sessdb / baseline throughput; target >= 1.0)")


if __name__ == "__main__":
    sys.exit(main())
