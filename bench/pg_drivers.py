"""Compare asyncpg and psycopg 3 on tallybook's PostgreSQL write pattern.

Each driver upserts batches of records with one `INSERT ... SELECT FROM
unnest(...) ON CONFLICT` per transaction, the statement the PostgreSQL store
uses, into a scratch schema; then runs one-record transactions from 32
concurrent tasks over a pool. Prints records per second for each.

    pip install -e '.[bench]'    # psycopg, for the comparison
    python bench/pg_drivers.py [--url postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psycopg
import psycopg_pool

TABLE = """
CREATE TABLE records (
    data_set_id bigint NOT NULL, id text NOT NULL, timestamp timestamptz NOT NULL,
    updated_at timestamptz NOT NULL, body jsonb NOT NULL,
    PRIMARY KEY (data_set_id, id));
CREATE INDEX ON records (data_set_id, timestamp, id);
"""
UPSERT = """
INSERT INTO records (data_set_id, id, timestamp, updated_at, body)
SELECT $1, r.id, r.ts, now(), r.body::jsonb
FROM unnest($2::text[], $3::timestamptz[], $4::text[]) AS r (id, ts, body)
ON CONFLICT (data_set_id, id) DO UPDATE SET timestamp = excluded.timestamp,
    updated_at = excluded.updated_at, body = excluded.body
"""
DAY = datetime(2014, 1, 6, tzinfo=UTC)

Rows = tuple[list[str], list[datetime], list[str]]


def make_rows(count: int) -> Rows:
    ids = [uuid.uuid4().hex for _ in range(count)]
    times = [DAY + timedelta(seconds=i) for i in range(count)]
    bodies = [
        json.dumps({"_id": i, "_timestamp": "2014-01-06T00:00:00+00:00", "count": 5})
        for i in ids
    ]
    return ids, times, bodies


async def rate(
    label: str, seconds: float, tasks: int, step: Callable[[], Awaitable[int]]
) -> None:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            records = await step()  # not `done += await ...`: tasks would race
            done += records

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - started
    print(f"{label:<40} {done / elapsed:>10,.0f} records/s")


async def bench_asyncpg(url: str, schema: str, seconds: float) -> None:
    settings = {"search_path": schema}
    pool = await asyncpg.create_pool(
        url, min_size=4, max_size=8, server_settings=settings
    )

    async def batch(size: int) -> int:
        ids, times, bodies = make_rows(size)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(UPSERT, 1, ids, times, bodies)
        return size

    await rate("asyncpg, 1,000-record batches", seconds, 2, lambda: batch(1000))
    await rate("asyncpg, 1 record x 32 tasks", seconds, 32, lambda: batch(1))
    await pool.close()


async def bench_psycopg(url: str, schema: str, seconds: float) -> None:
    sql = UPSERT.replace("$1", "%s").replace("$2", "%s").replace("$3", "%s")
    sql = sql.replace("$4", "%s")
    kwargs: dict[str, Any] = {"options": f"-c search_path={schema}"}
    pool = psycopg_pool.AsyncConnectionPool(
        url, min_size=4, max_size=8, kwargs=kwargs, open=False
    )
    await pool.open()

    async def batch(size: int) -> int:
        ids, times, bodies = make_rows(size)
        async with pool.connection() as conn, conn.cursor(binary=True) as cur:
            await cur.execute(sql, (1, ids, times, bodies), binary=True)
        return size

    await rate(
        "psycopg (binary), 1,000-record batches", seconds, 2, lambda: batch(1000)
    )
    await rate("psycopg (binary), 1 record x 32 tasks", seconds, 32, lambda: batch(1))
    await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    for name, bench in (("asyncpg", bench_asyncpg), ("psycopg", bench_psycopg)):
        schema = f"bench_{name}_{uuid.uuid4().hex[:8]}"
        async with await psycopg.AsyncConnection.connect(
            args.url, autocommit=True
        ) as c:
            await c.execute(f"CREATE SCHEMA {schema}")
            await c.execute(f"SET search_path = {schema}")
            for statement in TABLE.split(";"):
                if statement.strip():
                    await c.execute(statement)
        try:
            await bench(args.url, schema, args.seconds)
        finally:
            async with await psycopg.AsyncConnection.connect(
                args.url, autocommit=True
            ) as c:
                await c.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    asyncio.run(main())
