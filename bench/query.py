"""Query benchmark: aggregate and raw reads over 1,000,000 records.

Loads one data set with `--records` records (a year of timestamps, a
`channel` field of 5 values, a `count`), starts a real `tallybook serve` on
127.0.0.1, then times, through HTTP, the median of `--runs` runs of:

- a weekly `period` query over the year, grouped by `channel`, with a sum,
  first added up from the records, then (after the data set is given the
  summary `channel:count`, whose building is timed too) from the summary;
- a raw read of 1,000 records.

Targets on SQLite: under 250 ms (the query from the summary) and under 30 ms.

    python bench/query.py                          # SQLite
    python bench/query.py --postgres postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tallybook import records
from tallybook.admin import build_data_set, change_settings, create_data_set
from tallybook.store import open_store

YEAR = datetime(2013, 1, 1, tzinfo=UTC)
CHANNELS = ("web", "phone", "post", "face-to-face", "partner")
TARGETS = {"records": 0.250, "summary": 0.250, "raw": 0.030}


async def load(location: str, count: int) -> str:
    """Create the data set and write `count` records; return a token."""
    async with open_store(location) as store:
        data_set, token, _ = await create_data_set(
            store, build_data_set("bench", "query")
        )
        started = time.perf_counter()
        for first in range(0, count, 10_000):
            batch = [_record(i) for i in range(first, min(first + 10_000, count))]
            await store.write(
                data_set, records.prepare(batch, data_set, records.Limits())
            )
        took = time.perf_counter() - started
        print(f"loaded {count:,} records in {took:.1f} s ({count / took:,.0f}/s)")
    return token


def _record(i: int) -> dict[str, object]:
    moment = YEAR + timedelta(seconds=i * 31_536_000 // 1_000_000 % 31_536_000)
    return {
        "_id": f"q{i:07d}",
        "_timestamp": moment.isoformat(),
        "channel": CHANNELS[i % 5],
        "count": i % 97,
    }


async def summarise(location: str) -> None:
    """Give the data set the summary `channel:count`; print how long it took."""
    async with open_store(location) as store:
        data_set = await store.get_data_set("bench_query")
        assert data_set is not None
        started = time.perf_counter()
        await store.update_data_set(change_settings(data_set, summary="channel:count"))
        took = time.perf_counter() - started
        print(f"summary built in {took:.1f} s")


def timed(client: httpx.Client, url: str, runs: int) -> tuple[float, Any]:
    """The median time of `runs` reads of `url`, and the last answer's data."""
    durations, data = [], None
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.get(url)
        durations.append(time.perf_counter() - started)
        answer.raise_for_status()
        data = answer.json()["data"]
    return statistics.median(durations), data


def serve(location: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "tallybook",
        "serve",
        "--store",
        location,
        "--port",
        str(port),
    ]
    env = dict(os.environ, TALLYBOOK_LOG_LEVEL="WARNING")
    process = subprocess.Popen(
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env
    )
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/_status", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(log.read_text())


async def _postgres(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", metavar="URL")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tallybook-query-"))
    schema = "bench_" + secrets.token_hex(6)
    if args.postgres:
        asyncio.run(_postgres(args.postgres, f"CREATE SCHEMA {schema}"))
        location = f"{args.postgres}?search_path={schema}"
        asyncio.run(open_store(location).migrate())
    else:
        location = str(work / "query.db")
    try:
        run(location, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.postgres:
            asyncio.run(_postgres(args.postgres, f"DROP SCHEMA {schema} CASCADE"))


def run(location: str, args: argparse.Namespace) -> None:
    token = asyncio.run(load(location, args.records))
    port = 18000 + secrets.randbelow(2000)
    process = serve(location, port, Path(tempfile.mkdtemp()) / "serve.log")
    base = f"http://127.0.0.1:{port}/data/bench/query"
    period = (
        f"{base}?period=week&group_by=channel&collect=count:sum"
        "&start_at=2013-01-07T00:00:00Z&end_at=2014-01-06T00:00:00Z"
    )
    raw = f"{base}?start_at=2013-06-01T00:00:00Z&limit=1000"
    try:
        with httpx.Client(
            headers={"Authorization": f"Bearer {token}"}, timeout=120
        ) as c:
            from_records = report(c, "records", period, args.runs)
            asyncio.run(summarise(location))
            from_summary = report(c, "summary", period, args.runs)
            same = "the same" if from_records == from_summary else "DIFFERENT"
            print(f"answers from the records and from the summary: {same}")
            report(c, "raw", raw, args.runs)
    finally:
        process.terminate()
        process.wait(timeout=30)


def report(client: httpx.Client, name: str, url: str, runs: int) -> Any:
    """Time one query, print its median against its target; return its data."""
    seconds, data = timed(client, url, runs)
    target = TARGETS[name]
    print(
        f"{name:<8} median {seconds * 1000:8.1f} ms over {runs} "
        f"runs, {len(data)} rows; target {target * 1000:.0f} ms "
        f"({target / seconds:.2f}x of target speed)"
    )
    return data


if __name__ == "__main__":
    main()
