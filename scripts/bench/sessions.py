#!/usr/bin/env python3
"""HTTP sessions under load: sessdb against one pinned psycopg connection per client session.

One run starts everything it needs, measures four things side by side, and stops it all:

1. an embedded PostgreSQL (``python -m sessdb db start --data-dir DIR``; a temporary DIR unless
   ``--data-dir`` is given), migrated, with ``max_connections`` raised (``ALTER SYSTEM`` and a
   restart) when the idle sessions of step (d) would not fit;
2. the SQL functions ``bench_*`` and the RAW services ``bench/new``, ``bench/kv``, ``bench/stamp``,
   ``bench/stamps`` and ``bench/end`` (through ``sessdb sql``);
3. one ``sessdb serve`` process and one ``scripts/bench/baseline_pinned.py`` process, both on
   127.0.0.1 without an access log;
4. an asyncio load generator in this process (aiohttp client, keep-alive):

   (a) throughput: ``--sessions`` client sessions (64), each sending one request after another
       that upserts a row of its temp table and reads it back (``bench_kv``), against one server at a
       time after a warm-up, ``--pairs`` times (2) with the order swapped each time; the ratio
       sessdb/baseline of each pair and their median (target >= 1.0);
   (b) handoff: rounds of ``--burst`` requests fired at once at one session; each statement
       records ``transaction_timestamp()`` (its BEGIN) and ``clock_timestamp()`` (its end) in a
       temp table; a handoff is the gap from one request's end to the next one's BEGIN, counted
       only when the next request had been sent before the previous one ended (so it was
       queued); p50 and p99 (target p99 < 5 ms);
   (c) session creation, on a second ``sessdb serve`` with ``SESSION_RESERVE`` = ``--reserve``
       (500) connections opened ahead: once the reserve is full, ``--creators`` clients (32) with
       a raw HTTP/1.1 client create half as many sessions as the reserve holds (so that no
       connection is opened while they run) as fast as they can, and the rate is sessions per
       second; the sessions are deleted again afterwards. The bursts: one on connections no
       request used before (sessdb warms each one up when it opens it), ``--creation-bursts``
       (5) on connections given back by the ended sessions of the bursts before, whose median
       is the figure (target >= 2000), and one with two temp tables (``bench/new``). Then
       create-and-delete cycles for ``--creation-seconds``, which open no connection;
   (d) memory: ``--idle`` sessions created and left idle; the growth of the sessdb process's RSS
       per session, and the private memory (``Private_*`` of ``/proc/PID/smaps_rollup``) and PSS
       of the PostgreSQL backends of the sessions.

Every step has a deadline; the whole run takes about ``2 * (warmup + duration) + creation-seconds
+ 60`` seconds.

    .venv/bin/python scripts/bench/sessions.py [--duration 10] [--sessions 64] [--idle 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from web_select1 import cluster, free_port, log, process, sessdb  # noqa: E402

SETUP_SQL = """
CREATE OR REPLACE FUNCTION public.bench_new(sid text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF sid IS NOT NULL THEN
        PERFORM sa_set_http_option('SessionID', sid);
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS kv (k int PRIMARY KEY, v int NOT NULL);
    CREATE TEMP TABLE IF NOT EXISTS stamps (sent timestamptz, started timestamptz, ended timestamptz);
    RETURN 'new';
END $$;

CREATE OR REPLACE FUNCTION public.bench_new0(sid text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sa_set_http_option('SessionID', sid);
    RETURN 'new';
END $$;

CREATE OR REPLACE FUNCTION public.bench_kv(key int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    value int;
BEGIN
    INSERT INTO pg_temp.kv AS t VALUES (key, 1) ON CONFLICT (k) DO UPDATE SET v = t.v + 1;
    SELECT t.v INTO value FROM pg_temp.kv t WHERE t.k = key;
    RETURN key || ':' || value;
END $$;

CREATE OR REPLACE FUNCTION public.bench_stamp(sent text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.stamps VALUES (to_timestamp(sent::float8), transaction_timestamp(), clock_timestamp());
    RETURN 'stamped';
END $$;

CREATE OR REPLACE FUNCTION public.bench_stamps() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    result text;
BEGIN
    SELECT coalesce(json_agg(json_build_array(extract(epoch FROM s.sent), extract(epoch FROM s.started),
                                              extract(epoch FROM s.ended)) ORDER BY s.started), '[]')
      INTO result FROM pg_temp.stamps s;
    DELETE FROM pg_temp.stamps;
    RETURN result;
END $$;

CREATE OR REPLACE FUNCTION public.bench_end() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sa_set_http_option('SessionID', '');
    RETURN 'ended';
END $$;

SELECT sessdb.create_service(name => 'bench/new', type => 'RAW', statement => 'SELECT bench_new(:sid)', replace => true);
SELECT sessdb.create_service(name => 'bench/new0', type => 'RAW', statement => 'SELECT bench_new0(:sid)',
                             replace => true);
SELECT sessdb.create_service(name => 'bench/kv', type => 'RAW', statement => 'SELECT bench_kv(cast(:k AS int))',
                             replace => true);
SELECT sessdb.create_service(name => 'bench/stamp', type => 'RAW', statement => 'SELECT bench_stamp(:t)',
                             replace => true);
SELECT sessdb.create_service(name => 'bench/stamps', type => 'RAW', statement => 'SELECT bench_stamps()',
                             replace => true);
SELECT sessdb.create_service(name => 'bench/end', type => 'RAW', statement => 'SELECT bench_end()', replace => true);
"""


@dataclass
class Routes:
    """How to address one server: create, use and end a client session."""

    new: Callable[[str], str]
    kv: Callable[[str, int], str]
    end: Callable[[str], str]


def sessdb_routes(base: str) -> Routes:
    return Routes(new=lambda sid: f"{base}/bench/new?sid={sid}",
                  kv=lambda sid, k: f"{base}/bench/kv?sessionid={sid}&k={k}",
                  end=lambda sid: f"{base}/bench/end?sessionid={sid}")


def pinned_routes(base: str) -> Routes:
    return Routes(new=lambda sid: f"{base}/new?sid={sid}",
                  kv=lambda sid, k: f"{base}/kv?sid={sid}&k={k}",
                  end=lambda sid: f"{base}/end?sid={sid}")


@dataclass
class Throughput:
    """What phase (a) measured on one server."""

    requests_per_second: float
    requests: int
    bad: int
    p99_ms: float


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as resp:
        return resp.status, await resp.text()


def new_http(limit: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=30))


async def create_sessions(http: aiohttp.ClientSession, routes: Routes, count: int, concurrency: int) -> list[str]:
    """``count`` new sessions, ``concurrency`` creations at a time; raises on any failure."""
    sids = [f"b{uuid.uuid4().hex}" for _ in range(count)]
    gate = asyncio.Semaphore(concurrency)

    async def one(sid: str) -> None:
        async with gate:
            status, body = await get(http, routes.new(sid))
        if (status, body) != (200, "new"):
            raise SystemExit(f"creating session {sid} answered {status}: {body[:300]}")

    await asyncio.gather(*(one(sid) for sid in sids))
    return sids


async def end_sessions(http: aiohttp.ClientSession, routes: Routes, sids: list[str], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(sid: str) -> None:
        async with gate:
            await get(http, routes.end(sid))

    await asyncio.gather(*(one(sid) for sid in sids))


async def throughput(routes: Routes, sessions: int, warmup: float, seconds: float) -> Throughput:
    """Phase (a) on one server: ``sessions`` clients in a closed loop of ``bench_kv`` requests."""
    async with new_http() as http:
        sids = await create_sessions(http, routes, sessions, concurrency=sessions)
        loop = asyncio.get_running_loop()
        start = loop.time() + warmup
        stop = start + seconds
        latencies: list[float] = []
        bad = 0

        async def client(sid: str) -> None:
            nonlocal bad
            rng = random.Random(sid)
            while (now := loop.time()) < stop:
                k = rng.randrange(100)
                status, body = await get(http, routes.kv(sid, k))
                done = loop.time()
                if now >= start:
                    latencies.append(done - now)
                    if status != 200 or not body.startswith(f"{k}:"):
                        bad += 1

        await asyncio.gather(*(client(sid) for sid in sids))
        await end_sessions(http, routes, sids, concurrency=sessions)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0
    return Throughput(len(latencies) / seconds, len(latencies), bad, p99)


async def handoff(routes: Routes, base: str, burst: int, rounds: int) -> list[float]:
    """Phase (b): gaps in ms between one request's end and the next queued one's BEGIN."""
    gaps: list[float] = []
    async with new_http() as http:
        (sid,) = await create_sessions(http, routes, 1, 1)
        for _ in range(rounds):
            async def one() -> tuple[int, str]:
                return await get(http, f"{base}/bench/stamp?sessionid={sid}&t={time.time():.6f}")

            answers = await asyncio.gather(*(one() for _ in range(burst)))
            failed = [a for a in answers if a != (200, "stamped")]
            if failed:
                raise SystemExit(f"handoff: {len(failed)} requests failed, e.g. {failed[0][0]} {failed[0][1][:300]}")
            status, body = await get(http, f"{base}/bench/stamps?sessionid={sid}")
            if status != 200:
                raise SystemExit(f"handoff: reading the stamps answered {status}: {body[:300]}")
            stamps = json.loads(body)
            for (_, _, ended), (sent, started, _) in zip(stamps, stamps[1:]):
                if sent < ended:  # the next request was already waiting: a true handoff
                    gaps.append((float(started) - float(ended)) * 1000)
        await end_sessions(http, routes, [sid], 1)
    return gaps


class RawClient:
    """One keep-alive HTTP/1.1 connection that sends a GET and reads the answer, and little else.

    Phase (c) uses it instead of aiohttp's client, which costs as much CPU per request as the
    server does, on the same two cores.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base: str) -> RawClient:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def get(self, target: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return int(head[9:12]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def raw_clients(base: str, count: int) -> AsyncIterator[list[RawClient]]:
    """``count`` open raw clients, closed at the end."""
    clients = list(await asyncio.gather(*(RawClient.open(base) for _ in range(count))))
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


async def wait_reserve(base: str, expected: int, timeout: float = 180) -> None:
    """Wait until sessdb's pool and reserve hold ``expected`` connections, not counting those
    still being opened and warmed up (a spare runs two statements of its own before it joins the
    reserve) or, for an ended session's connection, reset: sessdb's ``sessdb_pool_connections``
    metric leaves those out, where ``pg_stat_activity`` would count them, and the burst would
    measure their work too."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{base}/_sessdb/metrics") as resp:
                resp.raise_for_status()
                text = await resp.text()
            found = next((int(line.split()[1]) for line in text.splitlines()
                          if line.startswith("sessdb_pool_connections ")), 0)
            if found >= expected:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"sessdb's reserve did not fill up: {found} of {expected} connections")
            await asyncio.sleep(0.2)


async def creation_burst(base: str, service: str, count: int, creators: int) -> tuple[float, int]:
    """Phase (c): (sessions/s, failures) of ``count`` sessions created by ``creators`` clients
    from a full reserve; the sessions are deleted again afterwards, outside the measurement."""
    sids = [f"c{uuid.uuid4().hex}" for _ in range(count)]
    failures = 0

    async def create(client: RawClient, todo: Iterator[str]) -> None:
        nonlocal failures
        for sid in todo:
            if await client.get(f"/bench/{service}?sid={sid}") != (200, b"new"):
                failures += 1

    async def end(client: RawClient, todo: Iterator[str]) -> None:
        for sid in todo:
            await client.get(f"/bench/end?sessionid={sid}")

    async with raw_clients(base, creators) as clients:
        began = time.perf_counter()
        todo = iter(sids)
        await asyncio.gather(*(create(client, todo) for client in clients))
        elapsed = time.perf_counter() - began
        todo = iter(sids)
        await asyncio.gather(*(end(client, todo) for client in clients))
    return count / elapsed, failures


async def creation_cycles(base: str, creators: int, seconds: float) -> tuple[float, int, int]:
    """Phase (c), sustained: (sessions/s, created, failures) of ``creators`` clients each creating
    a session and deleting it again, for ``seconds``."""
    created = failures = 0
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds

    async def cycle(client: RawClient) -> None:
        nonlocal created, failures
        while loop.time() < stop:
            sid = f"c{uuid.uuid4().hex}"
            if await client.get(f"/bench/new0?sid={sid}") != (200, b"new"):
                failures += 1
                continue
            created += 1
            await client.get(f"/bench/end?sessionid={sid}")

    async with raw_clients(base, creators) as clients:
        began = loop.time()
        await asyncio.gather(*(cycle(client) for client in clients))
        elapsed = loop.time() - began
    return created / elapsed, created, failures


def proc_memory(pid: int) -> dict[str, int]:
    """kB figures of one process: VmRSS from status, Pss and Private_* from smaps_rollup."""
    figures: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                figures["rss"] = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in ("Pss", "Private_Clean", "Private_Dirty"):
                figures[name] = int(rest.split()[0])
    figures["private"] = figures.get("Private_Clean", 0) + figures.get("Private_Dirty", 0)
    return figures


async def memory(routes: Routes, dsn: str, serve_pid: int, idle: int) -> dict[str, float]:
    """Phase (d): memory per idle session, on the sessdb side and the PostgreSQL side."""
    before = proc_memory(serve_pid)["rss"]
    async with new_http() as http:
        began = time.monotonic()
        sids = await create_sessions(http, routes, idle, concurrency=32)
        burst_rate = idle / (time.monotonic() - began)
        after = proc_memory(serve_pid)["rss"]
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            cur = await conn.execute("SELECT conn_id FROM sessdb.http_sessions")
            pids = [pid for (pid,) in await cur.fetchall()]
        backends = [proc_memory(pid) for pid in pids]
        await end_sessions(http, routes, sids, concurrency=32)
    if len(backends) < idle:
        raise SystemExit(f"memory: {idle} sessions created but sessdb.http_sessions lists {len(backends)}")
    return {
        "sessions": idle,
        "create_burst_per_s": burst_rate,
        "sessdb_rss_kb_per_session": (after - before) / idle,
        "pg_private_kb": statistics.mean(b["private"] for b in backends),
        "pg_pss_kb": statistics.mean(b["Pss"] for b in backends),
        "pg_rss_kb": statistics.mean(b["rss"] for b in backends),
    }


def wait_http(url: str, proc, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    """Poll ``url`` until it answers at all (a process-level wait with a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def bench_cluster(data_dir: Path | None, need_connections: int) -> Iterator[str]:
    """A migrated cluster with the bench SQL, and room for ``need_connections`` connections."""
    temporary = data_dir is None
    if temporary:
        data_dir = Path(tempfile.mkdtemp(prefix="sessdb-bench-"))
        data_dir.chmod(0o755)
    assert data_dir is not None
    try:
        with cluster(data_dir) as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                current = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
                if current < need_connections:
                    log(f"raising max_connections from {current} to {need_connections} (ALTER SYSTEM, restart)")
                    conn.execute(f"ALTER SYSTEM SET max_connections = {int(need_connections)}")
            if current < need_connections:
                sessdb("db", "stop", "--data-dir", str(data_dir), timeout=120)
                sessdb("db", "start", "--data-dir", str(data_dir), timeout=180)
            sessdb("migrate", "--dsn", dsn)
            sessdb("sql", SETUP_SQL, env={"SESSDB_DSN": dsn})
            yield dsn
    finally:
        if temporary:
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of measured load per server in (a)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of unmeasured load first in (a)")
    parser.add_argument("--sessions", type=int, default=64, help="client sessions in (a) (default 64)")
    parser.add_argument("--pairs", type=int, default=2,
                        help="runs of each server in (a), the order swapped each time (default 2)")
    parser.add_argument("--burst", type=int, default=100, help="requests fired at once at one session in (b)")
    parser.add_argument("--rounds", type=int, default=5, help="bursts in (b)")
    parser.add_argument("--creators", type=int, default=32, help="concurrent creating clients in (c)")
    parser.add_argument("--reserve", type=int, default=500,
                        help="SESSION_RESERVE of the sessdb of (c); each burst creates half as many sessions (default 500)")
    parser.add_argument("--creation-bursts", type=int, default=5,
                        help="bursts on connections of ended sessions in (c); their median is the figure (default 5)")
    parser.add_argument("--creation-seconds", type=float, default=5, help="length of the create-and-delete part of (c)")
    parser.add_argument("--idle", type=int, default=500, help="idle sessions in (d) (default 500)")
    parser.add_argument("--pool-size", type=int, default=10, help="sessdb's POOL_SIZE (default 10)")
    parser.add_argument("--tcp", action="store_true",
                        help="both servers reach PostgreSQL through TCP on loopback instead of its Unix socket")
    parser.add_argument("--data-dir", type=Path, help="embedded cluster to start or reuse (default: a temporary one)")
    args = parser.parse_args()

    need = args.reserve + args.idle + 2 * args.sessions + args.pool_size + 50
    with bench_cluster(args.data_dir, need) as dsn:
        if args.tcp:  # the cluster's URL names its Unix socket
            dsn = psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1")
        ports = {"sessdb": free_port(), "baseline": free_port()}
        bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        serve_cmd = [sys.executable, "-m", "sessdb", "serve", "--dsn", dsn, "--no-migrate",
                     "--port", str(ports["sessdb"]), "--pool-size", str(args.pool_size),
                     "--max-sessions", str(args.idle + args.sessions + args.creators + 10),
                     "--session-queue-limit", str(args.burst + 10), "--log-level", "warning"]
        base_cmd = [sys.executable, str(HERE / "baseline_pinned.py"), "--dsn", dsn, "--port", str(ports["baseline"])]
        routes = {"sessdb": sessdb_routes(bases["sessdb"]), "baseline": pinned_routes(bases["baseline"])}
        with process("sessdb serve", serve_cmd) as serve_proc, process("baseline", base_cmd) as base_proc:
            wait_http(bases["sessdb"] + "/_sessdb/ready", serve_proc)
            wait_http(bases["baseline"] + "/kv", base_proc)
            results = asyncio.run(run_all(args, routes, bases, dsn, serve_proc.pid))
        # (c) on a sessdb of its own, so that its reserve of idle connections weighs on nothing else
        port = free_port()
        creation_cmd = [*serve_cmd[:serve_cmd.index("--port")], "--port", str(port), "--pool-size", str(args.pool_size),
                        "--max-sessions", str(args.reserve + args.creators + 10),
                        "--session-reserve", str(args.reserve), "--log-level", "warning"]
        with process("sessdb serve (creation)", creation_cmd) as creation_proc:
            wait_http(f"http://127.0.0.1:{port}/_sessdb/ready", creation_proc)
            results.update(asyncio.run(run_creation(args, f"http://127.0.0.1:{port}")))
    report(results, args)
    return 0


async def run_all(args: argparse.Namespace, routes: dict[str, Routes], bases: dict[str, str], dsn: str,
                  serve_pid: int) -> dict[str, object]:
    results: dict[str, object] = {}
    pairs: list[dict[str, Throughput]] = []
    for number in range(max(1, args.pairs)):
        # one at a time, since they share the CPUs with the client and PostgreSQL; the order is
        # swapped every pair, since what runs second measures slower on a shared machine
        order = ("sessdb", "baseline") if number % 2 == 0 else ("baseline", "sessdb")
        pair = {}
        for name in order:
            log(f"(a) {name}: {args.sessions} sessions, {args.warmup:g}s warm-up, {args.duration:g}s measured")
            pair[name] = await throughput(routes[name], args.sessions, args.warmup, args.duration)
        pairs.append(pair)
    results["pairs"] = pairs
    log(f"(b) handoff: {args.rounds} bursts of {args.burst} requests at one session")
    results["gaps"] = await handoff(routes["sessdb"], bases["sessdb"], args.burst, args.rounds)
    log(f"(d) memory: {args.idle} idle sessions")
    results["memory"] = await memory(routes["sessdb"], dsn, serve_pid, args.idle)
    return results


async def run_creation(args: argparse.Namespace, base: str) -> dict[str, object]:
    """Phase (c): bursts of creations from a full reserve (first of connections never used, then
    of connections given back by ended sessions), then create-and-delete cycles."""
    results: dict[str, object] = {}
    plan = [("cold", "new0"), *(("warm", "new0") for _ in range(max(1, args.creation_bursts))), ("warm_tables", "new")]
    for key, service in plan:
        log(f"(c) creation: waiting for the reserve of {args.reserve}, then {args.creators} clients create half as "
            f"many sessions ({service}, {key})")
        await wait_reserve(base, args.pool_size + args.reserve)
        # half the reserve: the reserve is opened again once half of it is used, and opening
        # connections during the burst would measure that instead
        burst = await creation_burst(base, service, args.reserve // 2, args.creators)
        if key == "warm":
            results.setdefault("bursts_warm", []).append(burst)  # type: ignore[union-attr]
        else:
            results[f"burst_{key}"] = burst
    log(f"(c) creation: {args.creators} clients creating and deleting sessions for {args.creation_seconds:g}s")
    await wait_reserve(base, args.pool_size + args.reserve)
    results["cycles"] = await creation_cycles(base, args.creators, args.creation_seconds)
    return results


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def report(results: dict[str, object], args: argparse.Namespace) -> None:
    print(f"sessions benchmark on 127.0.0.1, {os.cpu_count()} CPUs, load generator in-process (aiohttp client)")
    print(f"(a) throughput, {args.sessions} sessions, upsert + read of a temp table per request, "
          f"{args.duration:g}s each, the order swapped every pair:")
    pairs = results["pairs"]
    assert isinstance(pairs, list)
    ratios = []
    for pair in pairs:
        for name in ("sessdb", "baseline"):
            res = pair[name]
            print(f"    {name:>8}: {res.requests_per_second:8.1f} req/s   p99 {res.p99_ms:7.2f} ms   "
                  f"{res.requests} requests, {res.bad} bad answers")
            if res.bad:
                print(f"  WARNING: {name} gave {res.bad} bad answers; its throughput is not comparable")
        base = pair["baseline"].requests_per_second
        ratios.append(pair["sessdb"].requests_per_second / base if base else 0.0)
        print(f"    ratio: {ratios[-1]:.2f} ({' first, '.join(pair)} second)")
    print(f"    median ratio: {statistics.median(ratios):.2f} (sessdb / pinned baseline; target >= 1.0)")
    gaps = results["gaps"]
    assert isinstance(gaps, list)
    print(f"(b) handoff, end of one request's statement to BEGIN of the next queued one, {len(gaps)} handoffs:")
    print(f"    p50 {_percentile(gaps, 0.5):.2f} ms   p99 {_percentile(gaps, 0.99):.2f} ms   "
          f"max {max(gaps, default=float('nan')):.2f} ms (target p99 < 5 ms)")
    print(f"(c) creation of {args.reserve // 2} sessions by {args.creators} clients (raw HTTP/1.1 client), from a "
          f"reserve of {args.reserve} connections opened ahead:")
    rate, failures = results["burst_cold"]  # type: ignore[misc]
    print(f"    {rate:6.0f} sessions/s setting SessionID, on connections opened ahead and no request used before "
          f"({failures} failures)")
    warm = results["bursts_warm"]
    assert isinstance(warm, list)
    print(f"    {statistics.median(r for r, _ in warm):6.0f} sessions/s setting SessionID, on connections of ended "
          f"sessions: the median of {len(warm)} bursts, one after another (target >= 2000)")
    print(f"           bursts: {', '.join(f'{r:.0f}' for r, _ in warm)} sessions/s "
          f"({sum(f for _, f in warm)} failures)")
    rate, failures = results["burst_warm_tables"]  # type: ignore[misc]
    print(f"    {rate:6.0f} sessions/s setting SessionID and creating two temp tables, on connections of ended "
          f"sessions ({failures} failures)")
    rate, created, failures = results["cycles"]  # type: ignore[misc]
    print(f"    sustained: {rate:.0f} sessions/s created and deleted again by {args.creators} clients "
          f"({created} in {args.creation_seconds:g}s, {failures} failures; no connection opened)")
    mem = results["memory"]
    assert isinstance(mem, dict)
    print(f"(d) memory, {mem['sessions']} idle sessions (created at {mem['create_burst_per_s']:.0f}/s, 32 at a time):")
    print(f"    sessdb process: {mem['sessdb_rss_kb_per_session']:.1f} kB RSS per session")
    print(f"    PostgreSQL backend per session: {mem['pg_private_kb']:.0f} kB private, "
          f"{mem['pg_pss_kb']:.0f} kB PSS, {mem['pg_rss_kb']:.0f} kB RSS")


if __name__ == "__main__":
    sys.exit(main())
