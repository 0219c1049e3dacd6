#!/usr/bin/env python3
"""Benchmark: sessdb's ASP.NET state server against redis-server, side by side on loopback.

Run from the checkout: ``.venv/bin/python scripts/bench/state_vs_redis.py`` (or
``scripts/bench/state_vs_redis.sh``). It installs redis-server with apt-get if it is missing,
starts ``sessdb serve`` (embedded PostgreSQL in a temporary data dir, state server on) and
``redis-server`` (no persistence), and measures on one machine in one run:

1. exclusive-get-then-put cycles per second and cycle latency (p50/p99) with 50 and 200
   concurrent clients, one session each. sessdb gets the wire protocol an ASP.NET front end
   sends (``GET Exclusive: acquire`` then ``PUT LockCookie``); Redis gets the operations of
   Microsoft's Redis session-state provider as Lua scripts (SETNX write lock + data + timeout
   keys under one hash tag; check-lock, write, expire, delete-lock), run with EVALSHA.
2. the time from a lock's release to the next waiter's successful acquire: sessdb's aiohttp
   middleware (woken by PostgreSQL NOTIFY, holder and waiter in separate store instances)
   against ASP.NET's SessionStateModule, which polls every 500 ms (against Redis, and against
   sessdb's own wire protocol for reference).

Everything is bounded: ``--duration`` seconds per load point (default 5) plus a one-second
warm-up, ``--rounds`` hand-overs per method (default 16), and a global ``--limit``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sessdb.aspnet_session import AspNetSessionMiddleware  # noqa: E402
from sessdb.statestore import SessionStateStore  # noqa: E402

BODY = os.urandom(1024)  # a small serialized session
APP = "/LM/W3SVC/1/ROOT/Bench(2Yt0dOYbzTWsmwF9k2gwUjMfBbpqBxQGmVgDjpl1ZUk=)/"
POLL_INTERVAL = 0.5  # ASP.NET's LOCKED_ITEM_POLLING_INTERVAL
LOCK_TTL = 110  # executionTimeout in seconds: the Redis provider's lock expiry

# Microsoft's Redis provider, operation by operation (aspnet-state.md 5.1), as Lua.
# KEYS: 1 write lock, 2 data, 3 timeout. ARGV: 1 lock id, 2 lock TTL s (acquire) / data (set), 3 timeout s.
REDIS_ACQUIRE = """
local lock = ARGV[1]
local taken = redis.call('SETNX', KEYS[1], ARGV[1])
if taken == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) else lock = redis.call('GET', KEYS[1]) end
local data = false
if lock == ARGV[1] then data = redis.call('GET', KEYS[2]) end
local timeout = redis.call('GET', KEYS[3])
if timeout then
  redis.call('EXPIRE', KEYS[2], timeout)
  redis.call('EXPIRE', KEYS[3], timeout)
end
return {lock, data, taken}
"""
REDIS_SET_AND_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[3])
redis.call('DEL', KEYS[1])
return 1
"""
REDIS_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ticks() -> str:
    """A lock id as the Redis provider makes one: DateTime.Now.Ticks."""
    return str(time.time_ns() // 100 + 621_355_968_000_000_000)


# -- clients -----------------------------------------------------------------------------------


class StateWire:
    """A minimal client of the ASP.NET state-server protocol."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> StateWire:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def call(self, method: str, key: str, headers: str = "", body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        target = key.replace("/", "%2f").replace("=", "%3d")
        head = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines[1:] if line)
        data = await self.reader.readexactly(int(fields["Content-Length"]))
        return int(lines[0].split(" ")[1]), fields, data

    def close(self) -> None:
        self.writer.close()


class Resp:
    """A minimal RESP2 client (enough for SCRIPT LOAD, EVALSHA and SET)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Resp:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def call(self, *args: str | bytes | int) -> object:
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        self.writer.write(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        return await self._reply()

    async def _reply(self) -> object:
        line = (await self.reader.readline())[:-2]
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else (await self.reader.readexactly(n + 2))[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [await self._reply() for _ in range(n)]
        raise RuntimeError(f"bad RESP line {line!r}")

    def close(self) -> None:
        self.writer.close()


@dataclass
class RedisScripts:
    acquire: str
    set_and_release: str
    release: str

    @classmethod
    async def load(cls, r: Resp) -> RedisScripts:
        shas = [await r.call("SCRIPT", "LOAD", s) for s in (REDIS_ACQUIRE, REDIS_SET_AND_RELEASE, REDIS_RELEASE)]
        return cls(*(s.decode() if isinstance(s, bytes) else str(s) for s in shas))


def redis_keys(sid: str) -> tuple[str, str, str]:
    tag = "{/Bench_" + sid + "}"
    return tag + "_WriteLock", tag + "_SessionStateItemCollection", tag + "_SessionTimeout"


# -- 1. throughput -------------------------------------------------------------------------------


async def sessdb_cycle(c: StateWire, key: str) -> None:
    status, fields, _ = await c.call("GET", key, "Exclusive: acquire\r\n")
    assert status == 200, status
    status, _, _ = await c.call("PUT", key, f"Timeout: 20\r\nLockCookie: {fields['LockCookie']}\r\n", BODY)
    assert status == 200, status


async def redis_cycle(r: Resp, scripts: RedisScripts, sid: str) -> None:
    keys, lock = redis_keys(sid), ticks()
    reply = await r.call("EVALSHA", scripts.acquire, 3, *keys, lock, LOCK_TTL)
    assert isinstance(reply, list) and reply[2] == 1, reply
    assert await r.call("EVALSHA", scripts.set_and_release, 3, *keys, lock, BODY, 1200) == 1


async def load(system: str, ports: dict[str, int], clients: int, duration: float) -> dict[str, float]:
    """Cycles/s and latency percentiles with ``clients`` concurrent connections."""
    sids = [f"{system}{clients}x{i:04d}{random.randrange(1 << 30):08x}" for i in range(clients)]
    if system == "sessdb":
        conns = [await StateWire.open(ports["state"]) for _ in sids]
        for c, sid in zip(conns, sids):
            await c.call("PUT", APP + sid, "Timeout: 20\r\n", BODY)
        cycle = [lambda c=c, sid=sid: sessdb_cycle(c, APP + sid) for c, sid in zip(conns, sids)]
    else:
        conns = [await Resp.open(ports["redis"]) for _ in sids]  # type: ignore[misc]
        scripts = await RedisScripts.load(conns[0])  # type: ignore[arg-type]
        for c, sid in zip(conns, sids):
            lock_key, data_key, timeout_key = redis_keys(sid)
            await c.call("SET", data_key, BODY, "EX", 1200)
            await c.call("SET", timeout_key, 1200, "EX", 1200)
        cycle = [lambda c=c, sid=sid: redis_cycle(c, scripts, sid) for c, sid in zip(conns, sids)]  # type: ignore[misc]
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    warm_until = loop.time() + 1.0
    end = warm_until + duration

    async def worker(run) -> None:  # type: ignore[no-untyped-def]
        while (now := loop.time()) < end:
            started = time.perf_counter()
            await run()
            if now >= warm_until:
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker(run) for run in cycle))
    for c in conns:
        c.close()
    latencies.sort()
    return {"rate": len(latencies) / duration, "p50": latencies[len(latencies) // 2] * 1000,
            "p99": latencies[int(len(latencies) * 0.99)] * 1000}


# -- 2. release -> next acquire ------------------------------------------------------------------


async def handover_notify(dsn: str, rounds: int) -> list[float]:
    """Holder and waiter in separate store instances; the waiter runs the middleware's wait."""
    async with SessionStateStore(dsn, application="/bench") as holder, \
            SessionStateStore(dsn, application="/bench") as waiter_store:
        waiter = AspNetSessionMiddleware(waiter_store)
        sid = f"handover{random.randrange(1 << 40):x}"
        await holder.create_uninitialized_item(sid, 20)
        delays = []
        for _ in range(rounds):
            lock = (await holder.get_item_exclusive(sid)).lock_id
            acquiring = asyncio.ensure_future(waiter.wait_for_item(sid, True))
            await asyncio.sleep(random.uniform(0.05, 0.15))  # the holder's work; the waiter is waiting by now
            released = time.perf_counter()
            await holder.release_item_exclusive(sid, lock)  # type: ignore[arg-type]
            result = await acquiring
            delays.append(time.perf_counter() - released)
            await waiter_store.release_item_exclusive(sid, result.lock_id)  # type: ignore[arg-type]
        return delays


async def handover_polling(system: str, ports: dict[str, int], rounds: int) -> list[float]:
    """ASP.NET's module: retry the exclusive get every 500 ms until it succeeds."""
    sid = f"poll{system}{random.randrange(1 << 40):x}"
    if system == "sessdb":
        holder, waiter = await StateWire.open(ports["state"]), await StateWire.open(ports["state"])
        key = APP + sid
        await holder.call("PUT", key, "Timeout: 20\r\n", BODY)

        async def acquire(c: StateWire) -> str | None:
            status, fields, _ = await c.call("GET", key, "Exclusive: acquire\r\n")
            return fields["LockCookie"] if status == 200 else None

        async def release(c: StateWire, lock: str) -> None:
            await c.call("GET", key, f"Exclusive: release\r\nLockCookie: {lock}\r\n")
    else:
        holder, waiter = await Resp.open(ports["redis"]), await Resp.open(ports["redis"])  # type: ignore[assignment]
        scripts = await RedisScripts.load(holder)  # type: ignore[arg-type]
        keys = redis_keys(sid)
        await holder.call("SET", keys[1], BODY, "EX", 1200)  # type: ignore[arg-type]
        await holder.call("SET", keys[2], 1200, "EX", 1200)  # type: ignore[arg-type]

        async def acquire(c) -> str | None:  # type: ignore[no-untyped-def]
            lock = ticks()
            reply = await c.call("EVALSHA", scripts.acquire, 3, *keys, lock, LOCK_TTL)
            return lock if reply[2] == 1 else None

        async def release(c, lock: str) -> None:  # type: ignore[no-untyped-def]
            await c.call("EVALSHA", scripts.release, 3, *keys, lock)

    delays = []
    for _ in range(rounds):
        lock = await acquire(holder)
        assert lock is not None
        released_at: list[float] = []

        async def poll() -> float:
            while True:
                got = await acquire(waiter)
                if got is not None:
                    done = time.perf_counter()
                    await release(waiter, got)
                    return done - released_at[0]
                await asyncio.sleep(POLL_INTERVAL)

        polling = asyncio.ensure_future(poll())
        await asyncio.sleep(random.uniform(0.05, 0.55))  # the holder's work, at a random poll phase
        released_at.append(time.perf_counter())
        await release(holder, lock)
        delays.append(await polling)
    holder.close()
    waiter.close()
    return delays


# -- processes -----------------------------------------------------------------------------------


def ensure_redis() -> str:
    path = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if path:
        return path
    print("redis-server not found: installing it with apt-get", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "redis-server"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready in {timeout}s")


def wait_tcp(port: int, proc: subprocess.Popen, timeout: float) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"port {port} not open in {timeout}s")


def start_sessdb(data_dir: Path, ports: dict[str, int]) -> subprocess.Popen:  # type: ignore[type-arg]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSDB_")}
    proc = subprocess.Popen([sys.executable, "-m", "sessdb", "serve", "--data-dir", str(data_dir),
                             "--port", str(ports["http"]), "--state-port", str(ports["state"]),
                             "--log-level", "warning"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{ports['http']}/_sessdb/ready", proc, 120)
    return proc


def start_processes(data_dir: Path) -> tuple[dict[str, int], list[subprocess.Popen]]:  # type: ignore[type-arg]
    ports = {"http": free_port(), "state": free_port(), "redis": free_port()}
    redis = subprocess.Popen([ensure_redis(), "--port", str(ports["redis"]), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    sessdb = start_sessdb(data_dir, ports)
    wait_tcp(ports["redis"], redis, 30)
    return ports, [sessdb, redis]


def database_url(data_dir: Path) -> str:
    """The DSN of the embedded PostgreSQL that ``sessdb serve`` runs now (its port may change)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSDB_")}
    return subprocess.run([sys.executable, "-m", "sessdb", "db", "url", "--data-dir", str(data_dir)], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=True).stdout.strip()


def set_synchronous_commit(dsn: str, value: str) -> None:
    """Set the database default; the state server's connections opened afterwards use it."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute(f'ALTER DATABASE "{dbname}" SET synchronous_commit TO {value}')


def stop_processes(procs: list[subprocess.Popen]) -> None:  # type: ignore[type-arg]
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- report ----------------------------------------------------------------------------------------


def summary(delays: list[float]) -> str:
    ms = sorted(d * 1000 for d in delays)
    return f"mean {statistics.mean(ms):7.1f} ms  p50 {ms[len(ms) // 2]:7.1f} ms  max {ms[-1]:7.1f} ms"


async def measure_load(args: argparse.Namespace, ports: dict[str, int], label: str, systems: tuple[str, ...],
                       results: dict[tuple[str, int], dict[str, float]]) -> None:
    for clients in args.clients:
        for system in systems:
            r = await load(system, ports, clients, args.duration)
            results[(label if system == "sessdb" else system, clients)] = r
            print(f"{clients:>8} {label if system == 'sessdb' else system:>14} {r['rate']:>10.0f} {r['p50']:>8.2f}"
                  f" {r['p99']:>8.2f}", flush=True)


async def run_handover(args: argparse.Namespace, ports: dict[str, int], dsn: str) -> None:
    print(f"\nrelease -> next waiter's acquire, {args.rounds} hand-overs each")
    notify = await handover_notify(dsn, args.rounds)
    print(f"  sessdb middleware (NOTIFY, two store instances)  {summary(notify)}")
    poll_redis = await handover_polling("redis", ports, args.rounds)
    print(f"  ASP.NET 500 ms polling against redis            {summary(poll_redis)}")
    poll_sessdb = await handover_polling("sessdb", ports, args.rounds)
    print(f"  ASP.NET 500 ms polling against sessdb wire      {summary(poll_sessdb)}")
    print(f"  ratio polling(redis) / middleware, means: {statistics.mean(poll_redis) / statistics.mean(notify):.0f}x")


def print_ratios(args: argparse.Namespace, results: dict[tuple[str, int], dict[str, float]]) -> None:
    print("\nratios to redis (cycles/s, p99)")
    for label in ("sessdb", "sessdb-async"):
        for clients in args.clients:
            if (label, clients) in results:
                s, r = results[(label, clients)], results[("redis", clients)]
                print(f"  {label:>12} @ {clients:>3} clients: throughput x{s['rate'] / r['rate']:.2f},"
                      f" p99 x{s['p99'] / r['p99']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per load point")
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[50, 200])
    parser.add_argument("--rounds", type=int, default=16, help="hand-overs measured per method")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds before the whole run is abandoned")
    parser.add_argument("--no-async-commit", dest="async_commit", action="store_false",
                        help="skip the second sessdb pass with synchronous_commit off")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="sessdb-bench-"))
    data_dir.chmod(0o755)
    procs: list[subprocess.Popen] = []  # type: ignore[type-arg]
    results: dict[tuple[str, int], dict[str, float]] = {}
    deadline = time.monotonic() + args.limit
    try:
        ports, procs = start_processes(data_dir)
        print(f"machine: {os.cpu_count()} CPUs; sessdb state server :{ports['state']} (pool 10, PostgreSQL"
              f" {'synchronous_commit on'}), redis-server :{ports['redis']} (no persistence)\n")
        print(f"exclusive-get-then-put cycles, {args.duration:g} s per point, 1 KiB sessions, one session per client")
        print(f"{'clients':>8} {'system':>14} {'cycles/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
        asyncio.run(asyncio.wait_for(measure_load(args, ports, "sessdb", ("sessdb", "redis"), results),
                                     deadline - time.monotonic()))
        if args.async_commit:
            # Same server with synchronous_commit off: commits stop waiting for the WAL flush
            # (a PostgreSQL crash may lose the last moments of writes; nothing is corrupted).
            set_synchronous_commit(database_url(data_dir), "off")
            stop_processes(procs[:1])
            procs[0] = start_sessdb(data_dir, ports)
            asyncio.run(asyncio.wait_for(measure_load(args, ports, "sessdb-async", ("sessdb",), results),
                                         deadline - time.monotonic()))
        print_ratios(args, results)
        asyncio.run(asyncio.wait_for(run_handover(args, ports, database_url(data_dir)), deadline - time.monotonic()))
    finally:
        stop_processes(procs)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
