"""Soak test: a real tallybook server under steady mixed load, memory watched.

Starts `tallybook serve` on a free 127.0.0.1 port with a fresh SQLite store
in a temporary directory (or a fresh schema in the PostgreSQL database given
with `--postgres`), creates one data set with the CLI and a known token, then
keeps 32 connections busy for `--seconds` (default 60, 20 to 600). Each
connection sends, in turn: a write of a few records with new `_id`s, another
write, a raw read (`start_at`, `limit=100`), a write, and an aggregate query
over one day (`period=hour`, `group_by=channel`, `collect=count:sum`). The
server's RSS (its process and all its child processes, from
/proc/PID/status VmRSS) is sampled every second.

It prints requests/s and p50/p99 latency per kind, errors (non-200 answers
and socket errors), the RSS second by second, and the peak RSS of the first
10 s against the last 10 s. The exit code is 1 when there was any error,
when that peak grew by more than 10%, when the server did not stop cleanly
on SIGTERM, or when the store does not hold exactly the acknowledged
records. Before the server starts, `--seed` records (default 100,000,
spread over the same year) are written through the store, so the run
measures a server that starts on a store already in use, as a restarted
service does; `--seed 0` starts from an empty store. Only 127.0.0.1 is
contacted; the load stops by itself at the
deadline or at a request cap, whichever comes first.

    python bench/soak.py                        # SQLite, 60 s
    python bench/soak.py --seconds 300
    python bench/soak.py --seed 0               # from an empty store
    python bench/soak.py --summary channel:count  # queries from the summary
    python bench/soak.py --postgres postgresql://postgres@127.0.0.1:5432/test
    python bench/soak.py --postgres URL --workers 2

Results: docs/benchmarks.md, "Soak".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingest import (
    GROUP,
    HOST,
    PATH,
    TYPE,
    add_store_arguments,
    bench_store,
    count_stored,
    create_data_set,
    free_port,
    log_summary,
    server_command,
    stop,
    tree_cpu,
    wait_ready,
)

from tallybook import records
from tallybook.records import Limits
from tallybook.store import open_store

CONNECTIONS = 32
RECORDS_PER_WRITE = 5
READ_LIMIT = 100
# The order of requests on each connection: 3 writes, 1 read, 1 query.
MIX = ("write", "write", "read", "write", "query")
KINDS = ("write", "read", "query")
CHANNELS = ("digital", "phone", "paper", "face-to-face", "other")
YEAR_START = datetime(2014, 1, 1, tzinfo=UTC)
WINDOW = 10  # seconds compared at the start and the end
MAX_GROWTH = 0.10
# Safety bound on the requests of a run, far above any rate seen here.
MAX_REQUESTS_PER_SECOND = 50_000
TIMEOUT = 30.0
SEED_BATCH = 10_000


@dataclass
class Kind:
    """What the requests of one kind met."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    socket_errors: int = 0
    sample: str = ""

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != 200) + self.socket_errors


@dataclass
class Load:
    """The whole run: per kind, and requests finished per second of the run."""

    mix: tuple[str, ...] = MIX
    kinds: dict[str, Kind] = field(default_factory=lambda: {k: Kind() for k in KINDS})
    per_second: Counter[int] = field(default_factory=Counter)
    records_acked: int = 0
    sent: int = 0
    seconds: float = 0.0
    capped: bool = False
    generator_cpu: float = 0.0


# --- memory -------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One second's memory figures, in KiB, and the store file's size."""

    second: float
    own: int  # VmRSS of the server process
    total: int  # VmRSS of it and its descendants
    anon: int  # RssAnon of them: the heap, without mapped files
    store: int  # bytes of the SQLite file and its WAL (0 for PostgreSQL)


def _tree(root: int) -> list[int]:
    """A process and its descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found, todo = [root], [root]
    while todo:
        parent = todo.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        todo += children
    return found


def _status_kib(pid: int) -> dict[str, int]:
    """The VmRSS and RssAnon lines of /proc/PID/status, in KiB."""
    figures = {"VmRSS": 0, "RssAnon": 0}
    with contextlib.suppress(OSError):  # gone since it was listed
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in figures:
                figures[name] = int(value.split()[0])
    return figures


class Sampler(threading.Thread):
    """Samples the server's memory once a second until `finished` is set."""

    def __init__(self, pid: int, files: Sequence[Path]) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.files = files
        self.samples: list[Sample] = []
        self.finished = threading.Event()

    def run(self) -> None:
        """Sample on whole seconds from the start, not drifting."""
        started = time.monotonic()
        while not self.finished.is_set():
            self.samples.append(self.sample(time.monotonic() - started))
            next_tick = started + len(self.samples)
            self.finished.wait(max(0.0, next_tick - time.monotonic()))

    def sample(self, second: float) -> Sample:
        figures = [_status_kib(pid) for pid in _tree(self.pid)]
        return Sample(
            second,
            figures[0]["VmRSS"],
            sum(f["VmRSS"] for f in figures),
            sum(f["RssAnon"] for f in figures),
            sum(path.stat().st_size for path in self.files if path.exists()),
        )


# --- the store before the run ----------------------------------------------------


def seed(store: str, count: int) -> float:
    """Write `count` records (ids `s<n>`) into the soak's data set; the seconds."""
    started = time.perf_counter()
    asyncio.run(_seed(store, count))
    return time.perf_counter() - started


async def _seed(location: str, count: int) -> None:
    rng = random.Random(-1)
    async with open_store(location) as store:
        data_set = await store.get_data_set(f"{GROUP}_{TYPE}".replace("-", "_"))
        if data_set is None:
            raise SystemExit("the soak's data set was not created")
        for first in range(0, count, SEED_BATCH):
            batch = [
                _record(f"s{n}", rng)
                for n in range(first, min(first + SEED_BATCH, count))
            ]
            await store.write(data_set, records.prepare(batch, data_set, Limits()))


def _record(record_id: str, rng: random.Random) -> dict[str, object]:
    return {
        "_id": record_id,
        "_timestamp": _z(_timestamp(rng)),
        "channel": rng.choice(CHANNELS),
        "count": rng.randrange(100),
    }


# --- the load -------------------------------------------------------------------


def _timestamp(rng: random.Random) -> datetime:
    return YEAR_START + timedelta(seconds=rng.randrange(365 * 86400))


def _z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Requests:
    """Builds the raw HTTP/1.1 requests of one connection."""

    def __init__(self, port: int, token: str, number: int) -> None:
        self.number = number
        self.count = 0
        self.rng = random.Random(number)
        self.head = f"Host: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"

    def write(self) -> bytes:
        self.count += 1
        batch = [
            _record(f"c{self.number}-{self.count}-{index}", self.rng)
            for index in range(RECORDS_PER_WRITE)
        ]
        body = json.dumps(batch, separators=(",", ":")).encode()
        return (
            f"POST {PATH} HTTP/1.1\r\n{self.head}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    def read(self) -> bytes:
        start_at = _z(_timestamp(self.rng))
        return self._get(f"start_at={start_at}&limit={READ_LIMIT}")

    def query(self) -> bytes:
        day = YEAR_START + timedelta(days=self.rng.randrange(365))
        window = f"start_at={_z(day)}&end_at={_z(day + timedelta(days=1))}"
        return self._get(f"{window}&period=hour&group_by=channel&collect=count:sum")

    def _get(self, query: str) -> bytes:
        return f"GET {PATH}?{query} HTTP/1.1\r\n{self.head}\r\n".encode()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one answer: its status and body (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.lower().split(":", 1) for line in lines[1:] if ":" in line)
    if "chunked" in headers.get("transfer-encoding", ""):
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append((await reader.readexactly(size + 2))[:-2])
        await reader.readuntil(b"\r\n")  # the empty trailer section
        return status, b"".join(chunks)
    return status, await reader.readexactly(int(headers.get("content-length", "0")))


async def _connection(
    load: Load, requests: Requests, port: int, deadline: float, cap: int
) -> None:
    """Send the mix on one keep-alive connection until the deadline."""
    reader, writer = await asyncio.open_connection(HOST, port)
    turn = requests.number
    started = time.monotonic()
    try:
        while time.monotonic() < deadline and load.sent < cap:
            kind = load.mix[turn % len(load.mix)]
            turn += 1
            load.sent += 1
            request = getattr(requests, kind)()
            sent_at = time.perf_counter()
            try:
                writer.write(request)
                status, body = await asyncio.wait_for(_answer(reader), TIMEOUT)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                # Counted; then a new connection, as a client would open.
                load.kinds[kind].socket_errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
                continue
            _note(load, kind, status, body, time.perf_counter() - sent_at)
            load.per_second[int(time.monotonic() - started)] += 1
    finally:
        writer.close()


def _note(load: Load, kind: str, status: int, body: bytes, latency: float) -> None:
    result = load.kinds[kind]
    result.latencies.append(latency)
    result.statuses[status] += 1
    if status != 200:
        result.sample = result.sample or f"{status}: {body[:300].decode()}"
    elif kind == "write":
        load.records_acked += RECORDS_PER_WRITE


async def run_load(port: int, token: str, seconds: float, mix: Sequence[str]) -> Load:
    load = Load(tuple(mix))
    cap = int(seconds * MAX_REQUESTS_PER_SECOND)
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _connection(load, Requests(port, token, n), port, deadline, cap)
            for n in range(CONNECTIONS)
        )
    )
    load.seconds = time.monotonic() - started
    load.capped = load.sent >= cap
    return load


def _run(port: int, token: str, seconds: float, mix: Sequence[str]) -> Load:
    with contextlib.suppress(ImportError):
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(run_load(port, token, seconds, mix))
    return asyncio.run(run_load(port, token, seconds, mix))


# --- reporting --------------------------------------------------------------------


def _percentile(ordered: Sequence[float], share: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1e3


def print_kinds(load: Load) -> None:
    print()
    print(
        f"{'kind':<8}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'non-200':>9}{'sock err':>9}"
    )
    for name, kind in load.kinds.items():
        ordered = sorted(kind.latencies)
        non_200 = sum(n for s, n in kind.statuses.items() if s != 200)
        print(
            f"{name:<8}{len(ordered):>10,}{len(ordered) / load.seconds:>9,.0f}"
            f"{_percentile(ordered, 0.5):>9.2f}{_percentile(ordered, 0.99):>9.2f}"
            f"{_percentile(ordered, 1.0):>9.1f}{non_200:>9}{kind.socket_errors:>9}"
        )
    total = sum(len(k.latencies) for k in load.kinds.values())
    print(f"{'all':<8}{total:>10,}{total / load.seconds:>9,.0f}")
    for name, kind in load.kinds.items():
        if kind.errors:
            print(f"{name}: statuses {dict(kind.statuses)}; first: {kind.sample}")
    if load.capped:
        print("the load stopped at the request cap, not at the deadline")


def print_memory(samples: list[Sample], load: Load) -> float:
    """Print RSS and throughput by second and window; return the peak growth."""
    print()
    print("server RSS (MiB, the process and its children), one sample a second:")
    totals = [sample.total / 1024 for sample in samples]
    for start in range(0, len(samples), WINDOW):
        window = samples[start : start + WINDOW]
        done = sum(load.per_second[s] for s in range(start, start + WINDOW))
        span = min(WINDOW, len(window))
        store = (
            f", store {window[-1].store / 2**20:.0f} MiB" if window[-1].store else ""
        )
        print(
            f"  {start:>4}-{start + span:<4}s "
            + " ".join(f"{sample.total / 1024:6.1f}" for sample in window)
            + f"  ({done / span:,.0f} req/s, anon {window[-1].anon / 1024:.1f}"
            + f" MiB{store})"
        )
    print(
        f"  min {min(totals):.1f}, median {statistics.median(totals):.1f}, "
        f"max {max(totals):.1f} MiB; the main process alone at most "
        f"{max(sample.own for sample in samples) / 1024:.1f} MiB"
    )
    first, last = max(totals[:WINDOW]), max(totals[-WINDOW:])
    growth = last / first - 1
    verdict = "PASS" if growth <= MAX_GROWTH else "FAIL"
    print(
        f"peak RSS first {WINDOW} s {first:.1f} MiB, last {WINDOW} s {last:.1f} MiB: "
        f"growth {growth:+.1%} ({verdict}, limit {MAX_GROWTH:.0%})"
    )
    return growth


# --- running ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="of load")
    parser.add_argument(
        "--mix",
        default=",".join(MIX),
        help=f"the kinds each connection sends in turn, from {', '.join(KINDS)}",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=100_000,
        help="records in the store before the server starts (0: empty)",
    )
    add_store_arguments(
        parser,
        "give the data set this summary, e.g. channel:count, so the queries add "
        "up summary cells instead of records",
    )
    args = parser.parse_args(argv)
    args.mix = tuple(kind.strip() for kind in args.mix.split(",") if kind.strip())
    if not args.mix or set(args.mix) - set(KINDS):
        parser.error(f"--mix takes kinds from {', '.join(KINDS)}")
    if not 0 <= args.seed <= 10_000_000:
        parser.error("--seed must be in [0, 10,000,000]")
    if not 2 * WINDOW <= args.seconds <= 600:
        parser.error(f"--seconds must be in [{2 * WINDOW}, 600]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tallybook-soak-", dir=args.dir))
    token = "tb_" + secrets.token_urlsafe(32)
    try:
        with bench_store(args, work) as store:
            return soak(args, work, store, token)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def soak(args: argparse.Namespace, work: Path, store: str, token: str) -> int:
    """Serve, load, watch memory, stop; print everything; 0 when it passed."""
    create_data_set(store, token, args.summary)
    seeded = seed(store, args.seed)
    port = free_port()
    command = server_command("uvicorn", store, port, args.workers)
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"server:  {' '.join(command)}")
    print(f"store:   {args.seed:,} records written before the start ({seeded:.1f} s)")
    print(
        f"load:    {CONNECTIONS} connections for {args.seconds:.0f} s, mix {args.mix}"
    )
    log = work / "server.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://{HOST}:{port}", server, 30)
        files = [] if args.postgres else [Path(store), Path(store + "-wal")]
        sampler = Sampler(server.pid, files)
        cpu_before = tree_cpu(server.pid)
        sampler.start()
        generator_before = time.process_time()
        load = _run(port, token, args.seconds, args.mix)
        load.generator_cpu = time.process_time() - generator_before
        sampler.finished.set()
        sampler.join()
        cores = (tree_cpu(server.pid) - cpu_before) / load.seconds
    finally:
        took = stop(server)
    clean = server.returncode in (0, -signal.SIGTERM)
    outcome = Outcome(cores, clean, took, args.seed)
    return report(load, sampler, outcome, store, log)


@dataclass(frozen=True)
class Outcome:
    """What is known of the server once it stopped."""

    cores: float  # CPU used over the load, in cores
    clean: bool  # it stopped on SIGTERM without an error
    took: float  # seconds from SIGTERM to its end
    seeded: int  # records in the store before it started


def report(
    load: Load, sampler: Sampler, outcome: Outcome, store: str, log: Path
) -> int:
    """Print the figures; return the exit code."""
    cores, clean, took = outcome.cores, outcome.clean, outcome.took
    print_kinds(load)
    print(
        f"CPU over the load: server {cores:.2f} cores, load generator "
        f"{load.generator_cpu / load.seconds:.2f} (2.0 = both cores)"
    )
    growth = print_memory(sampler.samples, load)
    errors = sum(kind.errors for kind in load.kinds.values())
    print(f"errors: {errors} ({'PASS' if errors == 0 else 'FAIL'}, must be 0)")
    print(f"server stopped (SIGTERM) in {took:.1f} s, {'clean' if clean else 'NOT'}")
    stored = count_stored(store)
    expected = outcome.seeded + load.records_acked
    print(
        f"stored records {stored:,}; seeded {outcome.seeded:,} + acknowledged "
        f"{load.records_acked:,} = {expected:,}"
    )
    log_summary(log)
    consistent = stored == expected
    ok = errors == 0 and growth <= MAX_GROWTH and clean and consistent
    print("SOAK PASS" if ok else "SOAK FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
