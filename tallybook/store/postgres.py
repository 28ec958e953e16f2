"""The production store: PostgreSQL through asyncpg and its connection pool.

Writes of concurrent requests are merged: a few writer tasks each take every
upsert waiting, sort the rows by key (so that two merged statements lock rows
in the same order and cannot deadlock), and send them as one
`INSERT ... SELECT FROM unnest(...) ON CONFLICT` statement, which PostgreSQL
runs as one durable transaction. If a merged statement fails for a reason
other than the connection, each request's rows are retried on their own, so
one bad request cannot fail the others.

The server keeps no state of its own: many processes may share a database.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from tallybook import summaries
from tallybook.datasets import DataSet, Grant, Token
from tallybook.errors import (
    DataSetExists,
    DataSetNotFound,
    StoreError,
    StoreUnavailable,
    TokenExists,
    TokenNotFound,
)
from tallybook.query import Query
from tallybook.records import Record
from tallybook.store import postgres_query, postgres_schema, postgres_summary
from tallybook.store.base import (
    Aggregation,
    Bucket,
    Freshness,
    Store,
    data_set_from_row,
    stored_id,
    token_from_row,
)

T = TypeVar("T")
_Key = tuple[int, str]  # data set id, record id
logger = logging.getLogger(__name__)
_MICROS = "timestamptz 'epoch' + interval '1 microsecond' * "
# One statement, so one transaction and one round trip: the upsert, then the
# data sets' last write time, which is kept to the second so that concurrent
# writers of one data set rarely wait on its row.
_UPSERT = f"""
WITH written AS (
    INSERT INTO records (data_set_id, id, timestamp, updated_at, body)
    SELECT r.data_set_id, r.id, {_MICROS} r.micros, now(), r.body::json
    FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[])
        AS r (data_set_id, id, micros, body)
    ON CONFLICT (data_set_id, id) DO UPDATE SET
        timestamp = excluded.timestamp,
        updated_at = excluded.updated_at,
        body = excluded.body
    RETURNING data_set_id
)
UPDATE data_sets SET last_write_at = now()
WHERE id IN (SELECT data_set_id FROM written)
    AND (last_write_at IS NULL OR last_write_at < now() - interval '1 second')
"""
# The same for data sets without a summary, the usual case: the upsert skips
# rows of data sets that have one (locked, so none can gain one meanwhile)
# and answers which data sets it wrote; the others take `_summarised`.
_PLAIN_UPSERT = f"""
WITH plain AS (
    SELECT id FROM data_sets WHERE id = ANY($1::bigint[]) AND summary IS NULL
    FOR KEY SHARE
), written AS (
    INSERT INTO records (data_set_id, id, timestamp, updated_at, body)
    SELECT r.data_set_id, r.id, {_MICROS} r.micros, now(), r.body::json
    FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[])
        AS r (data_set_id, id, micros, body)
    WHERE r.data_set_id IN (SELECT id FROM plain)
    ON CONFLICT (data_set_id, id) DO UPDATE SET
        timestamp = excluded.timestamp,
        updated_at = excluded.updated_at,
        body = excluded.body
    RETURNING data_set_id
), touched AS (
    UPDATE data_sets SET last_write_at = now()
    WHERE id IN (SELECT data_set_id FROM written)
        AND (last_write_at IS NULL OR last_write_at < now() - interval '1 second')
)
SELECT id FROM plain
"""
_TOUCH = """
UPDATE data_sets SET last_write_at = now() WHERE id = $1
"""
_DATA_SET_COLUMNS = (
    "d.id, d.data_group, d.data_type, d.auto_ids, d.public, d.description, "
    "d.max_age_expected, d.schema::text, d.summary::text"
)
_TOKEN_COLUMNS = (
    "t.id, t.scopes, d.name, t.created_at, t.name, t.prefix, t.expires_at, "
    "t.revoked_at, t.last_used_at"
)
_TOKENS_FROM = "FROM tokens t LEFT JOIN data_sets d ON d.id = t.data_set_id"
# Errors after which the same work can succeed on a new connection.
_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    OSError,
    asyncio.TimeoutError,
)
_RETRIED = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
ATTEMPTS = 3
WRITERS = 4
MERGE_ROWS = 20_000
ACQUIRE_SECONDS = 10.0


class PostgresStore(Store):
    """A store in a PostgreSQL database, named by a `postgresql://` URL."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._writer = _MergingWriter(self._run)

    async def open(self) -> None:
        """Connect, and refuse a database whose schema is not this code's."""
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.pool_size
            )
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}") from exc
        try:
            await self._run(postgres_schema.check)
        except BaseException:
            await self.close()
            raise
        self._writer.start()

    async def close(self) -> None:
        """Finish queued writes and close the pool."""
        await self._writer.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema; return the versions before and after."""
        try:
            connection = await asyncpg.connect(self.url)
        except _CONNECTION_ERRORS as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}") from exc
        try:
            return await postgres_schema.migrate(connection)
        finally:
            await connection.close()

    async def create_data_set(self, data_set: DataSet) -> DataSet:
        """Store a new data set; raise DataSetExists if the name is taken."""
        return await self._run(lambda db: _insert_data_set(db, data_set))

    async def get_data_set(self, name: str) -> DataSet | None:
        """Return the data set with this name, if any."""
        if "\x00" in name:
            return None  # no data set has one: PostgreSQL text cannot hold U+0000
        sql = f"SELECT {_DATA_SET_COLUMNS} FROM data_sets d WHERE d.name = $1"
        row = await self._run(lambda db: db.fetchrow(sql, name))
        return None if row is None else _data_set(row)

    async def list_data_sets(self) -> list[DataSet]:
        """Return every data set, ordered by name."""
        sql = f"SELECT {_DATA_SET_COLUMNS} FROM data_sets d ORDER BY d.name"
        rows = await self._run(lambda db: db.fetch(sql))
        return [_data_set(row) for row in rows]

    async def update_data_set(self, data_set: DataSet) -> DataSet:
        """Replace the settings of the data set with this name."""
        return await self._run(lambda db: _update_data_set(db, data_set))

    async def delete_data_set(self, name: str) -> None:
        """Delete a data set with its records and tokens."""
        sql = "DELETE FROM data_sets WHERE name = $1 RETURNING id"
        if await self._run(lambda db: db.fetchval(sql, name)) is None:
            raise DataSetNotFound(f"no data set is named {name}")

    async def freshness(self) -> list[Freshness]:
        """Return when each data set was last written to, ordered by name."""
        sql = (
            f"SELECT {_DATA_SET_COLUMNS}, d.last_write_at FROM data_sets d "
            "ORDER BY d.name"
        )
        rows = await self._run(lambda db: db.fetch(sql))
        return [Freshness(_data_set(row[:-1]), row[-1]) for row in rows]

    async def ping(self) -> None:
        """Answer if PostgreSQL answers a query."""
        await self._run(lambda db: db.fetchval("SELECT 1"))

    async def add_token(self, token_hash: bytes, token: Token) -> Token:
        """Store a token under the hash of its value; return it with its id."""
        return await self._run(lambda db: _insert_token(db, token_hash, token))

    async def find_grant(self, token_hash: bytes) -> Grant | None:
        """Return what the token with this hash grants, if it is known."""
        sql = (
            f"SELECT t.hash, {_TOKEN_COLUMNS}, {_DATA_SET_COLUMNS} {_TOKENS_FROM} "
            "WHERE t.hash = $1"
        )
        row = await self._run(lambda db: db.fetchrow(sql, token_hash))
        if row is None or not hmac.compare_digest(bytes(row[0]), token_hash):
            return None
        token = _token(row[1:10])
        data_set = None if token.data_set_name is None else _data_set(row[10:])
        return Grant(token, data_set)

    async def list_tokens(self, data_set_name: str | None = None) -> list[Token]:
        """Return the tokens of one data set (or all), oldest first."""
        sql = (
            f"SELECT {_TOKEN_COLUMNS} {_TOKENS_FROM} "
            "WHERE $1::text IS NULL OR d.name = $1 ORDER BY t.id"
        )
        rows = await self._run(lambda db: db.fetch(sql, data_set_name))
        return [_token(row) for row in rows]

    async def get_token(self, token_id: int) -> Token | None:
        """Return the token with this id, if any."""
        sql = f"SELECT {_TOKEN_COLUMNS} {_TOKENS_FROM} WHERE t.id = $1"
        row = await self._run(lambda db: db.fetchrow(sql, token_id))
        return None if row is None else _token(row)

    async def end_token(self, token_id: int, at: datetime, *, revoke: bool) -> Token:
        """Revoke a token at `at`, or make it expire then."""
        # A revocation is kept at its first time; an expiry may be moved.
        change = (
            "revoked_at = COALESCE(revoked_at, $2)" if revoke else "expires_at = $2"
        )
        sql = f"UPDATE tokens SET {change} WHERE id = $1 RETURNING id"
        if await self._run(lambda db: db.fetchval(sql, token_id, at)) is None:
            raise TokenNotFound(f"no token has the id {token_id}")
        found = await self.get_token(token_id)
        assert found is not None
        return found

    async def touch_token(self, token_id: int, at: datetime) -> None:
        """Record that the token was used at `at`."""
        sql = "UPDATE tokens SET last_used_at = $2 WHERE id = $1"
        await self._run(lambda db: db.execute(sql, token_id, at))

    async def write(self, data_set: DataSet, records: Sequence[Record]) -> None:
        """Insert or replace records by `_id`; durable when this returns."""
        if records:
            await self._writer.write(stored_id(data_set), records)

    async def replace(self, data_set: DataSet, records: Sequence[Record]) -> int:
        """Replace the data set's records in one transaction; return the count."""
        return await self._run(lambda db: _replace(db, stored_id(data_set), records))

    async def count(self, data_set: DataSet) -> int:
        """Return how many records the data set holds."""
        sql = "SELECT count(*) FROM records WHERE data_set_id = $1"
        return int(await self._run(lambda db: db.fetchval(sql, data_set.id)))

    async def read(self, data_set: DataSet, query: Query) -> AsyncIterator[str]:
        """Yield each selected record's JSON, in the query's order."""
        statement = postgres_query.raw(stored_id(data_set), query)
        connection = await self._acquire()
        try:
            async with connection.transaction(readonly=True):
                cursor = connection.cursor(
                    statement.sql, *statement.values, prefetch=1000
                )
                async for row in cursor:
                    yield row[0]
        except _CONNECTION_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL is unreachable: {exc}") from exc
        finally:
            await self._live_pool().release(connection)

    async def aggregate(
        self, data_set: DataSet, query: Query, *, by_period: bool
    ) -> Aggregation:
        """Count and collect per group (and period), in SQL.

        The summary's cells answer when they can; the choice and the read
        share one snapshot, so a summary being changed is never half seen.
        """
        data_set_id = stored_id(data_set)

        async def run(db: asyncpg.Connection) -> tuple[list[Any], bool]:
            async with db.transaction(isolation="repeatable_read", readonly=True):
                summary = summaries.parse(
                    await db.fetchval(
                        "SELECT summary::text FROM data_sets WHERE id = $1",
                        data_set_id,
                    )
                )
                from_summary = summary is not None and summary.serves(query)
                statement = (
                    postgres_query.summed(data_set_id, query, by_period, summary)
                    if summary is not None and from_summary
                    else postgres_query.aggregate(data_set_id, query, by_period)
                )
                return await db.fetch(statement.sql, *statement.values), from_summary

        rows, from_summary = await self._run(run)
        buckets = []
        for row in rows:
            group, start, count, collected, non_numbers, numbers = (
                postgres_query.read_row(row, query)
            )
            buckets.append(
                Bucket(
                    group,
                    start,
                    count,
                    tuple(collected),
                    tuple(non_numbers),
                    tuple(numbers),
                )
            )
        return Aggregation(buckets, from_summary)

    def _live_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the store is not open")
        return self._pool

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `work` on a pooled connection, retrying what may succeed anew.

        A lost connection is retried once on a new one (all of tallybook's
        writes are idempotent: rows carry their ids); a deadlock or
        serialisation failure up to ATTEMPTS times.
        """
        for attempt in range(1, ATTEMPTS + 1):
            connection = await self._acquire()
            try:
                return await work(connection)
            except _RETRIED as exc:
                if attempt == ATTEMPTS:
                    raise StoreError(f"PostgreSQL kept refusing: {exc}") from exc
            except _CONNECTION_ERRORS as exc:
                if attempt >= 2:
                    raise StoreUnavailable(f"PostgreSQL is unreachable: {exc}") from exc
                logger.warning("PostgreSQL connection lost; retrying once: %s", exc)
            except asyncpg.PostgresError as exc:
                raise StoreError(f"PostgreSQL refused: {exc}") from exc
            finally:
                await self._live_pool().release(connection)
        raise AssertionError("unreachable")

    async def _acquire(self) -> asyncpg.Connection:
        """Take a pooled connection; any failure to get one means unavailable."""
        try:
            return await self._live_pool().acquire(timeout=ACQUIRE_SECONDS)
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"PostgreSQL is unreachable: {exc}") from exc


@dataclass
class _Job:
    data_set_id: int
    records: Sequence[Record]
    future: asyncio.Future[None] = field(repr=False)


class _MergingWriter:
    """Merges the upserts of concurrent requests into shared statements."""

    def __init__(
        self, run: Callable[[Callable[[Any], Awaitable[Any]]], Awaitable[Any]]
    ):
        self._run = run
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(WRITERS)]

    async def stop(self) -> None:
        """Finish every queued write, then stop the writer tasks."""
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def write(self, data_set_id: int, records: Sequence[Record]) -> None:
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(data_set_id, records, future))
        await future

    async def _loop(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            rows = len(jobs[0].records)
            while rows < MERGE_ROWS and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                rows += len(jobs[-1].records)
            try:
                await self._flush(jobs)
            finally:
                for _ in jobs:
                    self._queue.task_done()

    async def _flush(self, jobs: list[_Job]) -> None:
        try:
            await self._run(lambda db: _upsert(db, jobs))
        except StoreError as exc:
            if len(jobs) == 1 or isinstance(exc, StoreUnavailable):
                _settle(jobs, exc)
                return
            for job in jobs:
                await self._flush([job])
            return
        _settle(jobs, None)


def _settle(jobs: list[_Job], error: Exception | None) -> None:
    for job in jobs:
        if job.future.done():
            continue
        if error is None:
            job.future.set_result(None)
        else:
            job.future.set_exception(error)


async def _upsert(db: asyncpg.Connection, jobs: list[_Job]) -> None:
    merged: dict[_Key, Record] = {}
    for job in jobs:
        for record in job.records:
            merged[job.data_set_id, record.id] = record
    rows = await db.fetch(_PLAIN_UPSERT, *_columns(merged))
    plain = {row[0] for row in rows}
    for data_set_id in sorted({key[0] for key in merged} - plain):
        records = [record for key, record in merged.items() if key[0] == data_set_id]
        await _summarised(db, data_set_id, records)


def _keyed(data_set_id: int, records: Sequence[Record]) -> dict[_Key, Record]:
    """One data set's records by key; of two with one id, the later."""
    return {(data_set_id, record.id): record for record in records}


def _columns(merged: dict[_Key, Record]) -> tuple[list[Any], ...]:
    """The upsert's parameters, sorted by key: data set ids, ids, times, bodies.

    Sorting gives concurrent statements the same lock order.
    """
    keys = sorted(merged)
    return (
        [data_set_id for data_set_id, _ in keys],
        [record_id for _, record_id in keys],
        [merged[key].timestamp for key in keys],
        [merged[key].body for key in keys],
    )


async def _summarised(
    db: asyncpg.Connection, data_set_id: int, records: list[Record]
) -> None:
    """Upsert one data set's records and keep its summary, in one transaction."""
    async with db.transaction():
        summary = await postgres_summary.lock(db, data_set_id)
        if summary is not None:
            replaced = await postgres_summary.replaced_hours(db, data_set_id, records)
        await db.execute(_UPSERT, *_columns(_keyed(data_set_id, records)))
        if summary is not None:
            await postgres_summary.add(db, data_set_id, summary, records, replaced)


async def _replace(
    db: asyncpg.Connection, data_set_id: int, records: Sequence[Record]
) -> int:
    async with db.transaction():
        summary = await postgres_summary.lock(db, data_set_id)
        await db.execute("DELETE FROM records WHERE data_set_id = $1", data_set_id)
        await db.execute(_UPSERT, *_columns(_keyed(data_set_id, records)))
        await db.execute(_TOUCH, data_set_id)
        await postgres_summary.recount(db, data_set_id, summary)
        sql = "SELECT count(*) FROM records WHERE data_set_id = $1"
        return int(await db.fetchval(sql, data_set_id))


async def _insert_data_set(db: asyncpg.Connection, data_set: DataSet) -> DataSet:
    try:
        data_set_id = await db.fetchval(
            "INSERT INTO data_sets (name, data_group, data_type, auto_ids, public, "
            "description, max_age_expected, schema, summary) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb) RETURNING id",
            data_set.name,
            data_set.group,
            data_set.type,
            *_settings(data_set),
        )
    except asyncpg.UniqueViolationError as exc:
        raise DataSetExists(f"the data set {data_set.name} exists already") from exc
    return replace(data_set, id=data_set_id)


async def _update_data_set(db: asyncpg.Connection, data_set: DataSet) -> DataSet:
    settings = _settings(data_set)
    async with db.transaction():
        # FOR UPDATE: writes keeping the summary finish first, later ones wait.
        row = await db.fetchrow(
            "SELECT id, summary IS DISTINCT FROM $2::jsonb FROM data_sets "
            "WHERE name = $1 FOR UPDATE",
            data_set.name,
            settings[-1],
        )
        if row is None:
            raise DataSetNotFound(f"no data set is named {data_set.name}")
        await db.execute(
            "UPDATE data_sets SET auto_ids = $2, public = $3, description = $4, "
            "max_age_expected = $5, schema = $6::jsonb, summary = $7::jsonb "
            "WHERE id = $1",
            row[0],
            *settings,
        )
        if row[1]:
            await postgres_summary.recount(db, row[0], data_set.summary)
    return replace(data_set, id=row[0])


def _settings(data_set: DataSet) -> tuple[Any, ...]:
    return (
        list(data_set.auto_ids),
        data_set.public,
        data_set.description,
        data_set.max_age_expected,
        None if data_set.schema is None else json.dumps(data_set.schema),
        None if data_set.summary is None else json.dumps(data_set.summary.describe()),
    )


async def _insert_token(
    db: asyncpg.Connection, token_hash: bytes, token: Token
) -> Token:
    data_set_id = None
    if token.data_set_name is not None:
        sql = "SELECT id FROM data_sets WHERE name = $1"
        # No data set name holds U+0000, which PostgreSQL text cannot hold.
        if "\x00" not in token.data_set_name:
            data_set_id = await db.fetchval(sql, token.data_set_name)
        if data_set_id is None:
            raise DataSetNotFound(f"no data set is named {token.data_set_name}")
    try:
        token_id = await db.fetchval(
            "INSERT INTO tokens (hash, data_set_id, scopes, name, prefix, created_at, "
            "expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            token_hash,
            data_set_id,
            ",".join(sorted(token.scopes)),
            token.name,
            token.prefix,
            token.created_at,
            token.expires_at,
        )
    except asyncpg.UniqueViolationError as exc:
        raise TokenExists("this token value is in use already") from exc
    return replace(token, id=token_id)


def _data_set(row: Sequence[Any]) -> DataSet:
    return data_set_from_row(row, tuple)


def _token(row: Sequence[Any]) -> Token:
    return token_from_row(row, _same)


def _same(value: Any) -> Any:
    return value
