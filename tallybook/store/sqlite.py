"""The embedded store: one SQLite file in WAL mode.

Writes go through a `GroupCommitter` on one connection with
`synchronous=FULL`, so an answer is sent only after the commit reached the
disk. Look-ups of tokens and data sets run on a connection owned by the event
loop (each takes microseconds); reads borrow one of a few read connections,
each on a thread of its own (`sqlite_readers.Readers`).
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from tallybook import timestamps
from tallybook.datasets import DataSet, Grant, Token
from tallybook.errors import (
    DataSetExists,
    DataSetNotFound,
    SchemaMismatch,
    StoreError,
    TokenExists,
    TokenNotFound,
)
from tallybook.query import Query
from tallybook.records import Record
from tallybook.store import sqlite_query, sqlite_summary, sqlite_wal
from tallybook.store.base import (
    Aggregation,
    Bucket,
    Freshness,
    Store,
    data_set_from_row,
    stored_id,
    token_from_row,
)
from tallybook.store.group_commit import GroupCommitter
from tallybook.store.sqlite_readers import Readers
from tallybook.summaries import Summary

SCHEMA_VERSION = 2
# Each entry upgrades the schema from the version before it; never edit one
# that has shipped, append a new one.
_MIGRATIONS = (
    """
CREATE TABLE data_sets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    data_group TEXT NOT NULL,
    data_type TEXT NOT NULL,
    auto_ids TEXT NOT NULL DEFAULT '[]',
    public INTEGER NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT '',
    max_age_expected INTEGER,
    schema TEXT,
    created_at TEXT NOT NULL,
    last_write_at INTEGER,
    UNIQUE (data_group, data_type)
);
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    data_set_id INTEGER REFERENCES data_sets (id) ON DELETE CASCADE,
    scopes TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    prefix TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    last_used_at TEXT
);
CREATE TABLE records (
    data_set_id INTEGER NOT NULL REFERENCES data_sets (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (data_set_id, id)
) WITHOUT ROWID;
CREATE INDEX records_by_time ON records (data_set_id, timestamp, id);
""",
    """
ALTER TABLE data_sets ADD COLUMN summary TEXT;
CREATE TABLE summaries (
    data_set_id INTEGER NOT NULL REFERENCES data_sets (id) ON DELETE CASCADE,
    span INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    grouping TEXT NOT NULL,
    field TEXT NOT NULL,
    count INTEGER NOT NULL,
    numbers INTEGER NOT NULL,
    total,
    PRIMARY KEY (data_set_id, span, timestamp, grouping, field)
) WITHOUT ROWID;
""",
)
_UPSERT = """
INSERT INTO records (data_set_id, id, timestamp, updated_at, body)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (data_set_id, id) DO UPDATE SET
    timestamp = excluded.timestamp,
    updated_at = excluded.updated_at,
    body = excluded.body
"""
_DATA_SET_COLUMNS = (
    "d.id, d.data_group, d.data_type, d.auto_ids, d.public, d.description, "
    "d.max_age_expected, d.schema, d.summary"
)
_TOKEN_COLUMNS = (
    "t.id, t.scopes, d.name, t.created_at, t.name, t.prefix, t.expires_at, "
    "t.revoked_at, t.last_used_at"
)
_PAGE = 1000
# Page caches, in KiB; each lives as long as its connection, so they are
# kept small (pages they evict stay in the OS's cache). A reader's is emptied
# whenever a write came in between its reads, so only a single query gains
# from it: 2 MiB answered bench/query.py as fast as 64 MiB did.
WRITER_CACHE_KIB = 8 * 1024
READER_CACHE_KIB = 2 * 1024
# Read connections, each on its own thread, and how long a read waits for
# one before it opens a temporary connection (sqlite_readers.py).
READERS = 8
READER_WAIT = 0.5
# Past this size the WAL is restarted, checked at most this often
# (sqlite_wal.py); the automatic checkpoints keep it near 4 MiB when reads
# leave it room.
WAL_LIMIT_BYTES = 32 * 1024 * 1024
WAL_CHECK_SECONDS = 1.0


class SQLiteStore(Store):
    """A store in one SQLite database file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.wal = sqlite_wal.WalLimit(self.path, WAL_LIMIT_BYTES, WAL_CHECK_SECONDS)
        self._committer = GroupCommitter(self._connect_writer, self.wal.after_commit)
        self._lookup: sqlite3.Connection | None = None
        self._readers = Readers(self._connect, READERS, READER_WAIT)

    def counters(self) -> dict[str, tuple[str, float]]:
        """Temporary read connections and WAL restarts since `open`."""
        return {
            "tallybook_sqlite_temporary_reads": (
                f"Reads that found no free read connection within {READER_WAIT:g} "
                "s and opened a temporary one.",
                self._readers.temporary,
            ),
            "tallybook_sqlite_wal_restarts": (
                "WAL restarts done after the WAL passed its size limit.",
                self.wal.restarts,
            ),
            "tallybook_sqlite_wal_restarts_given_up": (
                "WAL restarts given up because a read held the WAL over "
                f"{sqlite_wal.WAIT_MS} ms.",
                self.wal.given_up,
            ),
        }

    @property
    def commits(self) -> int:
        """How many write transactions were committed since `open`."""
        return self._committer.commits

    async def open(self) -> None:
        """Create the file and schema if needed, and start the writer."""
        self._lookup = self._connect()
        _apply_schema(self._lookup)
        self._committer.start()

    async def migrate(self) -> tuple[int, int]:
        """Create the schema if the file has none; return the versions."""
        connection = self._connect()
        try:
            before = connection.execute("PRAGMA user_version").fetchone()[0]
            _apply_schema(connection)
        finally:
            connection.close()
        return before, SCHEMA_VERSION

    async def close(self) -> None:
        """Finish queued writes and close every connection."""
        await anyio.to_thread.run_sync(self._committer.stop)
        self._readers.close()
        if self._lookup is not None:
            self._lookup.close()
            self._lookup = None

    def _connect(self, cache_kib: int = READER_CACHE_KIB) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open the SQLite store {self.path}: {exc}"
            ) from exc
        # FULL makes each commit wait for the WAL to reach the disk: the
        # durability promised before any 200 is sent.
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA busy_timeout = 10000")
        connection.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        return connection

    def _connect_writer(self) -> sqlite3.Connection:
        connection = self._connect(cache_kib=WRITER_CACHE_KIB)
        self.wal.prepare(connection)
        return connection

    @property
    def _db(self) -> sqlite3.Connection:
        if self._lookup is None:
            raise StoreError("the store is not open")
        return self._lookup

    async def create_data_set(self, data_set: DataSet) -> DataSet:
        """Store a new data set; raise DataSetExists if the name is taken."""
        return await self._committer.run(lambda db: _insert_data_set(db, data_set))

    async def get_data_set(self, name: str) -> DataSet | None:
        """Return the data set with this name, if any."""
        row = self._db.execute(
            f"SELECT {_DATA_SET_COLUMNS} FROM data_sets d WHERE d.name = ?", (name,)
        ).fetchone()
        return None if row is None else _data_set(row)

    async def list_data_sets(self) -> list[DataSet]:
        """Return every data set, ordered by name."""
        rows = self._db.execute(
            f"SELECT {_DATA_SET_COLUMNS} FROM data_sets d ORDER BY d.name"
        ).fetchall()
        return [_data_set(row) for row in rows]

    async def update_data_set(self, data_set: DataSet) -> DataSet:
        """Replace the settings of the data set with this name."""
        return await self._committer.run(lambda db: _update_data_set(db, data_set))

    async def delete_data_set(self, name: str) -> None:
        """Delete a data set with its records and tokens."""
        await self._committer.run(lambda db: _delete_data_set(db, name))

    async def freshness(self) -> list[Freshness]:
        """Return when each data set was last written to, ordered by name."""
        rows = self._db.execute(
            f"SELECT {_DATA_SET_COLUMNS}, d.last_write_at FROM data_sets d "
            "ORDER BY d.name"
        ).fetchall()
        return [Freshness(_data_set(row[:-1]), _from_micros(row[-1])) for row in rows]

    async def ping(self) -> None:
        """Answer if the database file can be read."""
        self._db.execute("SELECT 1").fetchone()

    async def add_token(self, token_hash: bytes, token: Token) -> Token:
        """Store a token under the hash of its value; return it with its id."""
        return await self._committer.run(
            lambda db: _insert_token(db, token_hash, token)
        )

    async def find_grant(self, token_hash: bytes) -> Grant | None:
        """Return what the token with this hash grants, if it is known."""
        row = self._db.execute(
            f"SELECT t.hash, {_TOKEN_COLUMNS}, {_DATA_SET_COLUMNS} FROM tokens t "
            "LEFT JOIN data_sets d ON d.id = t.data_set_id WHERE t.hash = ?",
            (token_hash,),
        ).fetchone()
        if row is None or not hmac.compare_digest(row[0], token_hash):
            return None
        token = _token(row[1:10])
        data_set = None if token.data_set_name is None else _data_set(row[10:])
        return Grant(token, data_set)

    async def list_tokens(self, data_set_name: str | None = None) -> list[Token]:
        """Return the tokens of one data set (or all), oldest first."""
        where, values = (
            ("WHERE d.name = ?", (data_set_name,)) if data_set_name else ("", ())
        )
        rows = self._db.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens t LEFT JOIN data_sets d "
            f"ON d.id = t.data_set_id {where} ORDER BY t.id",
            values,
        ).fetchall()
        return [_token(row) for row in rows]

    async def get_token(self, token_id: int) -> Token | None:
        """Return the token with this id, if any."""
        row = self._db.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens t LEFT JOIN data_sets d "
            "ON d.id = t.data_set_id WHERE t.id = ?",
            (token_id,),
        ).fetchone()
        return None if row is None else _token(row)

    async def end_token(self, token_id: int, at: datetime, *, revoke: bool) -> Token:
        """Revoke a token at `at`, or make it expire then."""
        column = "revoked_at" if revoke else "expires_at"
        await self._committer.run(lambda db: _end_token(db, token_id, column, at))
        found = await self.get_token(token_id)
        assert found is not None
        return found

    async def touch_token(self, token_id: int, at: datetime) -> None:
        """Record that the token was used at `at`."""
        sql = "UPDATE tokens SET last_used_at = ? WHERE id = ?"
        await self._committer.run(
            lambda db: db.execute(sql, (at.isoformat(), token_id))
        )

    async def write(self, data_set: DataSet, records: Sequence[Record]) -> None:
        """Insert or replace records by `_id` in one transaction."""
        if records:
            await self._committer.run(lambda db: _upsert(db, data_set, records))

    async def replace(self, data_set: DataSet, records: Sequence[Record]) -> int:
        """Replace the data set's records; return its new count."""
        return await self._committer.run(lambda db: _replace(db, data_set, records))

    async def count(self, data_set: DataSet) -> int:
        """Return how many records the data set holds."""
        row = self._db.execute(
            "SELECT count(*) FROM records WHERE data_set_id = ?", (data_set.id,)
        ).fetchone()
        return int(row[0])

    async def read(self, data_set: DataSet, query: Query) -> AsyncIterator[str]:
        """Yield each selected record's JSON, in the query's order."""
        statement = sqlite_query.raw(stored_id(data_set), query)
        async with self._readers.borrow() as reader:
            cursor = await reader.execute(" ".join(statement.parts), statement.values)
            while rows := await reader.run(lambda _: cursor.fetchmany(_PAGE)):
                for (body,) in rows:
                    yield body

    async def aggregate(
        self, data_set: DataSet, query: Query, *, by_period: bool
    ) -> Aggregation:
        """Count and collect per group (and period), in SQL.

        The summary's cells answer when they can; the choice is made in the
        same snapshot as the read, so a summary being changed is never half
        seen.
        """
        data_set_id = stored_id(data_set)

        def run(connection: sqlite3.Connection) -> tuple[list[Any], bool]:
            connection.execute("BEGIN")
            try:
                summarised = sqlite_summary.current(connection, data_set)
                summary = None if summarised is None else summarised.summary
                if summary is not None and not summary.serves(query):
                    summary = None
                rows = _aggregate_rows(
                    connection, data_set_id, query, by_period, summary
                )
            finally:
                connection.rollback()
            return rows, summary is not None

        async with self._readers.borrow() as reader:
            rows, from_summary = await reader.run(run)
        buckets = [Bucket(*_bucket(sqlite_query.read_row(row, query))) for row in rows]
        return Aggregation(buckets, from_summary)


def _aggregate_rows(
    connection: sqlite3.Connection,
    data_set_id: int,
    query: Query,
    by_period: bool,
    summary: Summary | None,
) -> list[Any]:
    """An aggregate's rows, from the summary's cells when one is given."""

    def fetch(exact: bool) -> list[Any]:
        statement = (
            sqlite_query.aggregate(data_set_id, query, by_period, exact)
            if summary is None
            else sqlite_query.summed(data_set_id, query, by_period, summary, exact)
        )
        return connection.execute(
            " ".join(statement.parts), statement.values
        ).fetchall()

    return sqlite_query.exact_first(fetch)


def _apply_schema(connection: sqlite3.Connection) -> None:
    """Create the schema, or bring an older one up to date, in one transaction."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaMismatch(
                f"the SQLite store has schema version {version}; this tallybook "
                f"uses version {SCHEMA_VERSION}: upgrade tallybook."
            )
        for migration in _MIGRATIONS[version:]:
            for statement in migration.split(";"):
                if statement.strip():
                    connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    finally:
        if connection.in_transaction:
            connection.execute("ROLLBACK")


def _insert_data_set(db: sqlite3.Connection, data_set: DataSet) -> DataSet:
    try:
        cursor = db.execute(
            "INSERT INTO data_sets (name, data_group, data_type, auto_ids, public, "
            "description, max_age_expected, schema, summary, created_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                data_set.name,
                data_set.group,
                data_set.type,
                *_settings(data_set),
                datetime.now(UTC).isoformat(),
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise DataSetExists(f"the data set {data_set.name} exists already") from exc
    return dataclasses.replace(data_set, id=cursor.lastrowid)


def _update_data_set(db: sqlite3.Connection, data_set: DataSet) -> DataSet:
    row = db.execute(
        "SELECT summary FROM data_sets WHERE name = ?", (data_set.name,)
    ).fetchone()
    if row is None:
        raise DataSetNotFound(f"no data set is named {data_set.name}")
    cursor = db.execute(
        "UPDATE data_sets SET auto_ids = ?, public = ?, description = ?, "
        "max_age_expected = ?, schema = ?, summary = ? WHERE name = ? RETURNING id",
        (*_settings(data_set), data_set.name),
    )
    updated = dataclasses.replace(data_set, id=cursor.fetchone()[0])
    if row[0] != _settings(data_set)[-1]:
        sqlite_summary.recount(db, updated)
    return updated


def _settings(data_set: DataSet) -> tuple[Any, ...]:
    return (
        json.dumps(list(data_set.auto_ids)),
        int(data_set.public),
        data_set.description,
        data_set.max_age_expected,
        None if data_set.schema is None else json.dumps(data_set.schema),
        None if data_set.summary is None else json.dumps(data_set.summary.describe()),
    )


def _delete_data_set(db: sqlite3.Connection, name: str) -> None:
    if db.execute("DELETE FROM data_sets WHERE name = ?", (name,)).rowcount == 0:
        raise DataSetNotFound(f"no data set is named {name}")


def _insert_token(db: sqlite3.Connection, token_hash: bytes, token: Token) -> Token:
    data_set_id = None
    if token.data_set_name is not None:
        row = db.execute(
            "SELECT id FROM data_sets WHERE name = ?", (token.data_set_name,)
        ).fetchone()
        if row is None:
            raise DataSetNotFound(f"no data set is named {token.data_set_name}")
        data_set_id = row[0]
    try:
        cursor = db.execute(
            "INSERT INTO tokens (hash, data_set_id, scopes, name, prefix, created_at, "
            "expires_at) VALUES (?,?,?,?,?,?,?)",
            (
                token_hash,
                data_set_id,
                ",".join(sorted(token.scopes)),
                token.name,
                token.prefix,
                token.created_at.isoformat(),
                _text(token.expires_at),
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise TokenExists("this token value is in use already") from exc
    return dataclasses.replace(token, id=cursor.lastrowid)


def _end_token(
    db: sqlite3.Connection, token_id: int, column: str, at: datetime
) -> None:
    # A revocation is kept at its first time; an expiry may be moved.
    value = "COALESCE(revoked_at, ?)" if column == "revoked_at" else "?"
    sql = f"UPDATE tokens SET {column} = {value} WHERE id = ?"
    if db.execute(sql, (at.isoformat(), token_id)).rowcount == 0:
        raise TokenNotFound(f"no token has the id {token_id}")


def _upsert(
    db: sqlite3.Connection, data_set: DataSet, records: Sequence[Record]
) -> None:
    now = time.time_ns() // 1000
    ds = data_set.id
    # The summary as stored now: the caller's copy may predate a change.
    summarised = sqlite_summary.current(db, data_set)
    if summarised is not None:
        replaced = sqlite_summary.replaced_hours(db, summarised, records)
    db.executemany(_UPSERT, [(ds, r.id, r.timestamp, now, r.body) for r in records])
    db.execute("UPDATE data_sets SET last_write_at = ? WHERE id = ?", (now, ds))
    if summarised is not None:
        sqlite_summary.add(db, summarised, records, replaced)


def _replace(
    db: sqlite3.Connection, data_set: DataSet, records: Sequence[Record]
) -> int:
    db.execute("DELETE FROM records WHERE data_set_id = ?", (data_set.id,))
    db.execute("DELETE FROM summaries WHERE data_set_id = ?", (data_set.id,))
    _upsert(db, data_set, records)
    row = db.execute(
        "SELECT count(*) FROM records WHERE data_set_id = ?", (data_set.id,)
    ).fetchone()
    return int(row[0])


def _data_set(row: Sequence[Any]) -> DataSet:
    return data_set_from_row(row, json.loads)


def _token(row: Sequence[Any]) -> Token:
    return token_from_row(row, _moment)


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _from_micros(micros: int | None) -> datetime | None:
    return None if micros is None else timestamps.from_micros(micros)


def _bucket(parts: tuple[Any, ...]) -> tuple[Any, ...]:
    group, start, count, collected, non_numbers, numbers = parts
    return group, start, count, tuple(collected), tuple(non_numbers), tuple(numbers)
