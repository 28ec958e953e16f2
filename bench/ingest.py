"""Ingest benchmark: records per second through a real tallybook server.

Starts `tallybook serve` (uvicorn) or granian on a free 127.0.0.1 port with a
fresh SQLite store in a temporary directory (or a fresh schema in the
PostgreSQL database given with `--postgres`), loads it with batches of 1,000,
100 and 10,000 records and with single-record requests, prints a table
against the targets, then stops the server with SIGTERM and counts the stored
records in the store. Every load is bounded in time (`--seconds`) and in
request count, and stops by itself. Only 127.0.0.1 is ever contacted.

    python bench/ingest.py                      # uvicorn, 10 s per case
    python bench/ingest.py --server granian --seconds 5
    python bench/ingest.py --postgres postgresql://postgres@127.0.0.1:5432/test
    python bench/ingest.py --postgres URL --workers 2
    python bench/ingest.py --summary channel:count   # with a summary kept

The load comes from wrk (Debian package `wrk`) with a generated Lua script;
without wrk, or with `--generator python`, from a lean asyncio client in this
process. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

HOST = "127.0.0.1"
GROUP = "bench-group"
TYPE = "bench-type"
PATH = f"/data/{GROUP}/{TYPE}"
TIMESTAMP = "2014-01-06T00:00:00Z"
SINGLE_CONNECTIONS = 32
# Safety bound on the requests of one case, far above any rate seen here.
MAX_RECORDS_PER_SECOND = 1_000_000


@dataclass(frozen=True)
class Goals:
    """Targets (issues) and ceilings (machine notes) for one kind of store."""

    store: str
    batch_records: int  # target, records/s, 1,000-record batches
    single_requests: int  # target, acknowledged requests/s, one record each
    batch_ceiling: int  # the store alone, 1,000-record batches
    single_ceiling: int  # single records with group commit


SQLITE_GOALS = Goals("SQLite", 80_000, 2_000, 125_000, 12_000)
POSTGRES_GOALS = Goals("PostgreSQL (1 worker)", 30_000, 1_500, 37_000, 7_600)
CLK_TCK = os.sysconf("SC_CLK_TCK")
WRK_HINT = "wrk not found: install it with `apt-get install wrk` (Debian package)."


@dataclass(frozen=True)
class Case:
    """One load: `batch` records per request, or one JSON object if None."""

    name: str
    batch: int | None
    connections: int

    @property
    def records_per_request(self) -> int:
        return self.batch or 1

    def pieces(self) -> list[str]:
        """The body split where the per-request id goes.

        `request_id.join(pieces)` is the body, so every request has its own
        `_id`s for the cost of one join; none of the pieces holds a newline.
        """
        prefix = f"{self.name}-"
        if self.batch is None:
            return [
                '{"_id":"' + prefix,
                f'","_timestamp":"{TIMESTAMP}","count":5,"channel":"digital"}}',
            ]
        pieces = ['[{"_id":"' + prefix]
        for index in range(self.batch):
            tail = (
                f'-{index}","_timestamp":"{TIMESTAMP}",'
                f'"count":{index % 100},"channel":"digital"}}'
            )
            last = index == self.batch - 1
            pieces.append(tail + ("]" if last else ',{"_id":"' + prefix))
        return pieces


@dataclass
class Result:
    """What one case measured."""

    case: Case
    generator: str
    seconds: float = 0.0
    ok: int = 0
    other: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    socket_errors: int = 0
    error_sample: str = ""
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    capped: bool = False
    server_cpu: float = 0.0
    generator_cpu: float = 0.0
    machine_busy: float = 0.0

    @property
    def requests_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def records_per_second(self) -> float:
        return self.requests_per_second * self.case.records_per_request

    @property
    def records_acked(self) -> int:
        return self.ok * self.case.records_per_request


# --- the server -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def tool(name: str) -> str:
    """A console script of this interpreter's environment, else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        sys.exit(f"{name} not found beside {sys.executable} nor on PATH")
    return found


def create_data_set(store: str, token: str, summary: str | None = None) -> None:
    summarised = ["--summary", summary] if summary else []
    for command in (
        ["migrate"],
        ["datasets", "create", GROUP, TYPE, "--token", token, *summarised],
    ):
        subprocess.run(
            [tool("tallybook"), *command, "--store", store],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )


def server_command(kind: str, store: str, port: int, workers: int) -> list[str]:
    if kind == "uvicorn":
        serve = [tool("tallybook"), "serve", "--store", store]
        return [*serve, "--host", HOST, "--port", str(port), "--workers", str(workers)]
    return [
        tool("granian"),
        "--interface",
        "asgi",
        "--loop",
        "uvloop",
        "--workers",
        "1",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "tallybook.app:create_app",
    ]


def wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/_status", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    sys.exit(f"the server did not answer GET /_status within {seconds:.0f} s")


def stop(process: subprocess.Popen[bytes], seconds: float = 60) -> float:
    """SIGTERM, wait; return how long the server took to exit."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        print(f"server still running {seconds:.0f} s after SIGTERM: SIGKILL")
        process.kill()
        process.wait(timeout=10)
    return time.monotonic() - started


def settle(pid: int, limit: float = 30.0) -> float:
    """Wait until the server is idle; return how long that took.

    A load stops with requests in flight (up to 4 x 10,000 records), which
    the server still finishes; without this the next case would start
    behind them and its first answers would be late.
    """
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = tree_cpu(pid)
        time.sleep(0.25)
        if tree_cpu(pid) - before < 0.025:
            break
    return time.monotonic() - started


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of a live process and its descendants."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- wrk --------------------------------------------------------------------

_LUA = """
-- Generated by bench/ingest.py: unique ids per request, status counts.
local pieces = {}
for line in io.lines(PIECES) do pieces[#pieces + 1] = line end
local headers = {
  ["Authorization"] = "Bearer " .. TOKEN,
  ["Content-Type"] = "application/json",
}
local threads = {}
counter, ok, other, statuses, error_sample = 0, 0, 0, "", ""

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local body = table.concat(pieces, "w" .. tid .. "-" .. counter)
  return wrk.format("POST", PATH, headers, body)
end

function response(status, hdrs, body)
  if status == 200 then
    ok = ok + 1
  else
    other = other + 1
    statuses = statuses .. status .. " "
    if error_sample == "" then error_sample = string.sub(body, 1, 300) end
  end
  if ok + other >= LIMIT then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local t_ok, t_other, t_statuses, sample = 0, 0, "", ""
  for _, thread in ipairs(threads) do
    t_ok = t_ok + thread:get("ok")
    t_other = t_other + thread:get("other")
    t_statuses = t_statuses .. thread:get("statuses")
    if sample == "" then sample = thread:get("error_sample") end
  end
  local e = summary.errors
  io.write(string.format(
    "TBRESULT %d %d %d %d %d %d %d %d %d %d %d\\n",
    t_ok, t_other, summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.timeout, #threads))
  io.write("TBSTATUSES " .. t_statuses .. "\\n")
  io.write("TBSAMPLE " .. string.gsub(sample, "\\n", " ") .. "\\n")
end
"""


def lua_script(case: Case, token: str, pieces_file: Path, limit: int) -> str:
    header = (
        f"local PIECES = {json.dumps(str(pieces_file))}\n"
        f"local TOKEN = {json.dumps(token)}\n"
        f"local PATH = {json.dumps(PATH)}\n"
        f"local LIMIT = {limit}\n"
    )
    return header + _LUA


def run_wrk(
    case: Case, url: str, token: str, seconds: float, threads: int, work: Path
) -> Result:
    pieces_file = work / f"{case.name}.pieces"
    pieces_file.write_text("\n".join(case.pieces()) + "\n")
    limit = request_cap(case, seconds)
    script = work / f"{case.name}.lua"
    script.write_text(lua_script(case, token, pieces_file, math.ceil(limit / threads)))
    command = [
        "wrk",
        f"-t{min(threads, case.connections)}",
        f"-c{case.connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url + PATH,
    ]
    before = children_cpu()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    result = Result(case, "wrk", generator_cpu=children_cpu() - before)
    lines = {
        line.split(" ", 1)[0]: line.partition(" ")[2]
        for line in done.stdout.splitlines()
        if line.startswith("TB")
    }
    if done.returncode != 0 or "TBRESULT" not in lines:
        print(done.stdout, done.stderr, sep="\n")
        sys.exit(f"wrk failed with code {done.returncode}")
    values = [int(v) for v in lines["TBRESULT"].split()]
    ok, other, requests, duration_us, socket_errors, p50, p99, top = values[:8]
    result.seconds = duration_us / 1e6
    result.ok, result.other = ok, other
    result.socket_errors = socket_errors
    result.statuses = Counter(int(s) for s in lines.get("TBSTATUSES", "").split())
    result.error_sample = lines.get("TBSAMPLE", "").strip()
    result.p50_ms, result.p99_ms, result.max_ms = p50 / 1e3, p99 / 1e3, top / 1e3
    result.capped = ok + other >= limit
    if requests != ok + other:
        print(f"  note: wrk counted {requests} responses, the script {ok + other}")
    return result


def request_cap(case: Case, seconds: float) -> int:
    return math.ceil(seconds * MAX_RECORDS_PER_SECOND / case.records_per_request)


# --- the Python load generator ------------------------------------------------


async def _read_status(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise ValueError("chunked answers are not expected here")
    return status, await reader.readexactly(length)


async def _python_load(
    case: Case, port: int, token: str, seconds: float, result: Result
) -> list[float]:
    pieces = [piece.encode() for piece in case.pieces()]
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        "Content-Length: "
    ).encode()
    cap = request_cap(case, seconds)
    latencies: list[float] = []
    sent = 0
    deadline = time.monotonic() + seconds

    async def connection(number: int) -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while time.monotonic() < deadline and sent < cap:
                sent += 1
                body = f"p{number}-{sent}".encode().join(pieces)
                started = time.perf_counter()
                writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
                status, answer = await _read_status(reader)
                latencies.append(time.perf_counter() - started)
                if status == 200:
                    result.ok += 1
                else:
                    result.other += 1
                    result.statuses[status] += 1
                    result.error_sample = result.error_sample or answer[:300].decode()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            result.socket_errors += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(connection(n) for n in range(case.connections)))
    result.seconds = time.monotonic() - started
    result.capped = sent >= cap
    return latencies


def run_python(case: Case, port: int, token: str, seconds: float) -> Result:
    result = Result(case, "python")
    before = time.process_time()
    with _event_loop() as runner:
        latencies = runner.run(_python_load(case, port, token, seconds, result))
    result.generator_cpu = time.process_time() - before
    if latencies:
        latencies.sort()
        result.p50_ms = latencies[len(latencies) // 2] * 1e3
        result.p99_ms = latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)]
        result.p99_ms *= 1e3
        result.max_ms = latencies[-1] * 1e3
    return result


@contextlib.contextmanager
def _event_loop() -> Iterator[asyncio.Runner]:
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        yield runner


# --- running and reporting ----------------------------------------------------


def measure(
    case: Case,
    server: subprocess.Popen[bytes],
    port: int,
    args: argparse.Namespace,
    token: str,
    work: Path,
) -> Result:
    url = f"http://{HOST}:{port}"
    server_before = tree_cpu(server.pid)
    busy_before, total_before = machine_ticks()
    profiler = None
    if args.profile:
        output = Path(args.profile) / f"{args.server}-{case.name}.txt"
        profiler = start_profiler(server.pid, args.seconds, output)
    if args.generator == "wrk":
        result = run_wrk(case, url, token, args.seconds, args.wrk_threads, work)
    else:
        result = run_python(case, port, token, args.seconds)
    busy_after, total_after = machine_ticks()
    result.server_cpu = tree_cpu(server.pid) - server_before
    if total_after > total_before:
        cpus = os.cpu_count() or 1
        result.machine_busy = cpus * (busy_after - busy_before)
        result.machine_busy /= total_after - total_before
    if profiler is not None:
        profiler.wait(timeout=60)
        print_profile(output)
    return result


# --- profiling (optional, --profile DIR) --------------------------------------


def start_profiler(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    """Sample the server (and its child processes) with py-spy meanwhile."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        sys.exit("--profile needs py-spy on PATH: `pip install py-spy`")
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [py_spy, "record", "--pid", str(pid), "--subprocesses"]
    command += ["--duration", str(max(1, math.floor(seconds))), "--rate", "100"]
    # --gil: only the thread holding the GIL, i.e. what the one core is spent on.
    command += ["--gil"]
    command += ["--nonblocking", "--format", "raw", "--output", str(output)]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def print_profile(raw: Path, top: int = 12) -> None:
    """The busiest functions of a py-spy raw (collapsed stacks) file."""
    if not raw.exists():
        print(f"  profile: py-spy wrote no {raw}")
        return
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, text = line.rpartition(" ")
        if not text.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        name, _, where = leaf.partition(" (")
        if leaf.startswith("process "):
            name, where = "(no Python frame)", ""
        own[f"{name} ({where.rsplit(':', 1)[0].removesuffix(')')})"] += int(text)
        total += int(text)
    print(f"  profile ({total} samples, {raw}); own time:")
    for name, count in own.most_common(top):
        print(f"    {100 * count / total:5.1f}%  {name}")


def ratio(value: float, target: float) -> str:
    return f"{value / target:.2f}x"


def print_table(results: Sequence[Result], goals: Goals) -> None:
    print()
    print(
        f"{'case':<14}{'gen':<7}{'conns':>6}{'requests/s':>12}{'records/s':>11}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'non-200':>8}{'sock err':>9}"
    )
    for r in results:
        print(
            f"{r.case.name:<14}{r.generator:<7}{r.case.connections:>6}"
            f"{r.requests_per_second:>12,.0f}{r.records_per_second:>11,.0f}"
            f"{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.max_ms:>9.1f}"
            f"{r.other:>8}{r.socket_errors:>9}"
        )
    if any(r.generator == "wrk" for r in results):
        print(
            "latency from wrk: from writing a request to its whole answer, with "
            "wrk's\ncoordinated-omission correction (a slow answer adds synthetic "
            "samples)"
        )
    print()
    print("CPU over each case (seconds of CPU per second of wall time; 2.0 = 2 cores)")
    print(f"{'case':<14}{'server':>8}{'load gen':>10}{'other':>7}{'machine':>9}")
    for r in results:
        wall = r.seconds or 1.0
        server, generator = r.server_cpu / wall, r.generator_cpu / wall
        other = max(0.0, r.machine_busy - server - generator)
        print(
            f"{r.case.name:<14}{server:>8.2f}{generator:>10.2f}{other:>7.2f}"
            f"{r.machine_busy:>9.2f}"
        )
    print("(other: kernel threads, e.g. disk flushes, and every other process)")
    print()
    by_name = {r.case.name: r for r in results}
    print(f"{'figure':<40}{'measured':>11}{'target':>9}{'ratio':>7}{'ceiling':>9}")
    if "batch-1000" in by_name:
        value = by_name["batch-1000"].records_per_second
        print(
            f"{'1,000-record batches, records/s':<40}{value:>11,.0f}"
            f"{goals.batch_records:>9,}{ratio(value, goals.batch_records):>7}"
            f"{goals.batch_ceiling:>9,}  ({ratio(value, goals.batch_ceiling)}"
            f" of {goals.store} alone)"
        )
    if "single" in by_name:
        value = by_name["single"].requests_per_second
        print(
            f"{'single records, acknowledged requests/s':<40}{value:>11,.0f}"
            f"{goals.single_requests:>9,}{ratio(value, goals.single_requests):>7}"
            f"{goals.single_ceiling:>9,}  ({ratio(value, goals.single_ceiling)}"
            " of the group-commit ceiling)"
        )
    print(
        f"ceilings (machine notes), {goals.store}: 1,000-record batches "
        f"~{goals.batch_ceiling:,} records/s; single records with group commit "
        f"~{goals.single_ceiling:,} requests/s"
    )
    for r in results:
        if r.other or r.socket_errors:
            codes = ", ".join(f"{s}: {n}" for s, n in sorted(r.statuses.items()))
            errors = r.socket_errors
            print(f"{r.case.name}: non-200 {{{codes}}}, socket errors {errors}")
            if r.error_sample:
                print(f"  first non-200 body: {r.error_sample}")
        if r.capped:
            print(f"{r.case.name}: stopped by the request cap, not by time")


COUNT = (
    "SELECT count(*) FROM records r JOIN data_sets d ON d.id = r.data_set_id "
    "WHERE d.data_group = {} AND d.data_type = {}"
)


def count_stored(store: str) -> int:
    if store.startswith("postgresql://"):
        return asyncio.run(_count_postgres(store))
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        row = db.execute(COUNT.format("?", "?"), (GROUP, TYPE)).fetchone()
    return int(row[0])


async def _count_postgres(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval(COUNT.format("$1", "$2"), GROUP, TYPE))
    finally:
        await connection.close()


@contextlib.contextmanager
def bench_store(args: argparse.Namespace, work: Path) -> Iterator[str]:
    """The store to load: a SQLite file, or a new schema in --postgres."""
    if not args.postgres:
        yield str(work / "bench.db")
        return
    schema = "bench_" + secrets.token_hex(6)
    asyncio.run(_postgres(args.postgres, f"CREATE SCHEMA {schema}"))
    try:
        yield f"{args.postgres}?search_path={schema}"
    finally:
        asyncio.run(_postgres(args.postgres, f"DROP SCHEMA {schema} CASCADE"))


async def _postgres(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def log_summary(log: Path) -> None:
    lines = log.read_text(errors="replace").splitlines()
    bad = [ln for ln in lines if "ERROR" in ln or "Traceback" in ln or "WARN" in ln]
    print(f"server log: {len(lines)} lines, {len(bad)} with ERROR/WARN/Traceback")
    for line in bad[:5]:
        print(f"  {line[:200]}")


CASES = {
    "batch-1000": 1000,
    "batch-100": 100,
    "batch-10000": 10000,
    "single": None,
}


def add_store_arguments(parser: argparse.ArgumentParser, summary: str) -> None:
    """The options of the store and server a bench runs: where, how many, kept."""
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="load a new schema in this PostgreSQL database instead of SQLite, "
        "e.g. postgresql://postgres@127.0.0.1:5432/test",
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--summary", metavar="SPEC", help=summary)
    parser.add_argument("--dir", help="parent of the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the directory")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per case")
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk if installed, else the asyncio client",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help="comma-separated, from: " + ", ".join(CASES),
    )
    parser.add_argument(
        "--batch-connections", type=int, default=4, help="for the batch cases"
    )
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument(
        "--log-level", help="sets TALLYBOOK_LOG_LEVEL (only `tallybook serve` reads it)"
    )
    parser.add_argument(
        "--profile", metavar="DIR", help="sample the server with py-spy into DIR"
    )
    add_store_arguments(
        parser, "give the data set a summary, e.g. channel:count (its cost on writes)"
    )
    args = parser.parse_args(argv)
    args.cases = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    if not 0 < args.seconds <= 120:
        parser.error("--seconds must be in (0, 120]")
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "python"
        if args.generator == "python":
            print(WRK_HINT + " Falling back to the Python load generator.")
    elif args.generator == "wrk" and not shutil.which("wrk"):
        parser.error(WRK_HINT)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tallybook-bench-", dir=args.dir))
    token = "tb_" + secrets.token_urlsafe(32)
    goals = POSTGRES_GOALS if args.postgres else SQLITE_GOALS
    try:
        with bench_store(args, work) as store:
            return run_benchmark(args, work, store, token, goals)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_benchmark(
    args: argparse.Namespace, work: Path, store: str, token: str, goals: Goals
) -> int:
    create_data_set(store, token, args.summary)
    port = free_port()
    env = dict(os.environ, TALLYBOOK_STORE=store)
    if args.log_level:
        env["TALLYBOOK_LOG_LEVEL"] = args.log_level
    command = server_command(args.server, store, port, args.workers)
    log = work / "server.log"
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"server:  {' '.join(command)}")
    print(f"store:   {store}; load generator: {args.generator}")
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        wait_ready(f"http://{HOST}:{port}", server, 30)
        print(f"server pid {server.pid} ready on {HOST}:{port}")
        results = []
        for name in args.cases:
            batch = CASES[name]
            conns = SINGLE_CONNECTIONS if batch is None else args.batch_connections
            case = Case(name, batch, conns)
            waited = settle(server.pid)
            if waited > 0.5:
                print(f"  (waited {waited:.1f} s for the server to go idle)")
            result = measure(case, server, port, args, token, work)
            print(
                f"  {name}: {result.records_per_second:,.0f} records/s, "
                f"{result.requests_per_second:,.0f} requests/s, "
                f"{result.other} non-200 in {result.seconds:.1f} s"
            )
            results.append(result)
    finally:
        took = stop(server)
    # uvicorn re-raises the SIGTERM it caught once its graceful shutdown
    # is over, so -15 is a clean exit too.
    clean = server.returncode in (0, -signal.SIGTERM)
    print(
        f"server stopped (SIGTERM) in {took:.1f} s, exit code "
        f"{server.returncode} ({'clean' if clean else 'NOT CLEAN'})"
    )
    print_table(results, goals)
    acked = sum(r.records_acked for r in results)
    in_flight = sum(r.case.connections * r.case.records_per_request for r in results)
    sent_not_acked = sum(r.other * r.case.records_per_request for r in results)
    stored = count_stored(store)
    print()
    print(
        f"stored records (counted in the store after the server "
        f"stopped): {stored:,}; acknowledged: {acked:,}"
    )
    ok = acked <= stored <= acked + sent_not_acked + in_flight
    verdict = "consistent" if ok else "INCONSISTENT"
    print(
        f"  {verdict}: stored must be >= acknowledged and at most "
        f"{in_flight:,} more (requests cut off in flight when a load stopped) "
        f"plus {sent_not_acked:,} in non-200 answers"
    )
    log_summary(log)
    return 0 if ok and clean else 1


if __name__ == "__main__":
    sys.exit(main())
