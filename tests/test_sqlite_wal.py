"""The SQLite store restarts a WAL that reads kept from restarting by itself."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tallybook.datasets import DataSet
from tallybook.records import Record
from tallybook.store import SQLiteStore, sqlite
from tallybook.store.sqlite_wal import WalLimit

LIMIT = 64 * 1024
ROW = "x" * 1000


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A WAL-mode connection that never checkpoints by itself."""
    connection = sqlite3.connect(tmp_path / "wal.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    connection.execute("CREATE TABLE rows (body TEXT)")
    yield connection
    connection.close()


def _grow(connection: sqlite3.Connection, commits: int = 200) -> None:
    for _ in range(commits):
        connection.execute("INSERT INTO rows VALUES (?)", (ROW,))


def _limit(writer: sqlite3.Connection, every: float = 0.0) -> WalLimit:
    (_, _, path) = writer.execute("PRAGMA database_list").fetchone()
    limit = WalLimit(Path(path), LIMIT, every)
    limit.prepare(writer)
    return limit


def test_wal_limit_restarts_a_large_wal_and_cuts_it_back(
    writer: sqlite3.Connection,
) -> None:
    limit = _limit(writer)
    _grow(writer)
    assert limit.wal.stat().st_size > LIMIT
    limit.after_commit(writer)
    _grow(writer, 1)
    assert (limit.restarts, limit.wal.stat().st_size <= LIMIT) == (1, True)


def test_wal_limit_gives_up_while_a_read_holds_the_wal(
    writer: sqlite3.Connection, tmp_path: Path
) -> None:
    limit = _limit(writer)
    with sqlite3.connect(tmp_path / "wal.db", isolation_level=None) as reader:
        _grow(writer, 1)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM rows").fetchone()
        _grow(writer)
        limit.after_commit(writer)
        _grow(writer, 1)
        (count,) = reader.execute("SELECT count(*) FROM rows").fetchone()
    assert (limit.restarts, count) == (0, 1)


def test_wal_limit_looks_at_most_once_an_interval(writer: sqlite3.Connection) -> None:
    limit = _limit(writer, every=3600)
    _grow(writer)
    limit.after_commit(writer)
    _grow(writer)
    limit.after_commit(writer)
    assert limit.restarts == 1


def test_store_keeps_its_wal_near_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "WAL_LIMIT_BYTES", LIMIT)
    monkeypatch.setattr(sqlite, "WAL_CHECK_SECONDS", 0.0)
    records = [Record(f"r{n}", n, '{"pad": "' + ROW + '"}') for n in range(2000)]
    store = SQLiteStore(tmp_path / "store.db")

    async def scenario() -> None:
        async with store:
            data_set = await store.create_data_set(DataSet(group="g", type="t"))
            for first in range(0, len(records), 10):
                await store.write(data_set, records[first : first + 10])
            assert store.wal.wal.stat().st_size <= 2 * LIMIT  # 2 MB written

    asyncio.run(scenario())
    assert store.wal.restarts > 0
