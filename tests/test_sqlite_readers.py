"""The SQLite store's read connections: lent one read at a time, never lost."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tallybook.store.sqlite_readers import Readers

Scenario = Callable[[Readers], Coroutine[Any, Any, Any]]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A WAL-mode file with a table of three numbers."""
    path = tmp_path / "readers.db"
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE numbers (n INTEGER)")
        db.executemany("INSERT INTO numbers VALUES (?)", [(1,), (2,), (3,)])
    return path


def run(database: Path, scenario: Scenario, *, size: int = 1, wait: float = 5.0) -> Any:
    """Run `scenario` with a set of readers on `database`, closed after."""

    async def inside() -> Any:
        readers = Readers(lambda: sqlite3.connect(database), size, wait)
        try:
            return await scenario(readers)
        finally:
            readers.close()

    return asyncio.run(inside())


def _thread(connection: sqlite3.Connection) -> str:
    return threading.current_thread().name


def _count(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT count(*) FROM numbers").fetchone()[0])


def _add(database: Path, n: int) -> None:
    with sqlite3.connect(database, isolation_level=None) as db:
        db.execute("INSERT INTO numbers VALUES (?)", (n,))


def test_readers_run_each_reader_on_one_thread(database: Path) -> None:
    async def scenario(readers: Readers) -> list[str]:
        names = []
        for _ in range(3):
            async with readers.borrow() as reader:
                names.append(await reader.run(_thread))
        return names

    assert run(database, scenario) == ["sqlite-reader-0_0"] * 3


def test_readers_lend_a_temporary_reader_when_none_is_free(database: Path) -> None:
    async def scenario(readers: Readers) -> tuple[str, int, int]:
        async with readers.borrow(), readers.borrow() as extra:
            name = await extra.run(_thread)
            count = await extra.run(_count)
        return name, count, readers.temporary

    assert run(database, scenario, wait=0.05) == ("sqlite-reader-extra_0", 3, 1)


def test_readers_hand_a_returned_reader_to_a_waiting_read(database: Path) -> None:
    async def scenario(readers: Readers) -> tuple[str, int]:
        async def later() -> str:
            async with readers.borrow() as reader:
                return await reader.run(_thread)

        async with readers.borrow():
            waiting = asyncio.create_task(later())
            await asyncio.sleep(0.05)
        return await waiting, readers.temporary

    assert run(database, scenario) == ("sqlite-reader-0_0", 0)


@pytest.mark.parametrize("given", [False, True], ids=["waiting", "just-given"])
def test_readers_keep_the_reader_of_a_cancelled_read(
    database: Path, given: bool
) -> None:
    async def scenario(readers: Readers) -> int:
        async def later() -> None:
            async with readers.borrow():
                pass

        async with readers.borrow():
            waiting = asyncio.create_task(later())
            await asyncio.sleep(0.05)
            if not given:
                waiting.cancel()
        if given:  # the reader was handed over; the task has not run since
            waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        async with readers.borrow():
            return readers.temporary

    assert run(database, scenario) == 0


def test_readers_end_the_snapshot_a_read_left_open(database: Path) -> None:
    async def scenario(readers: Readers) -> tuple[int, int]:
        async with readers.borrow() as reader:
            cursor = await reader.execute("SELECT n FROM numbers", ())
            await reader.run(lambda _: cursor.fetchone())
            await reader.run(lambda connection: connection.execute("BEGIN"))
            before = await reader.run(_count)
        _add(database, 4)
        async with readers.borrow() as reader:
            return before, await reader.run(_count)

    assert run(database, scenario) == (3, 4)


def test_readers_pass_on_errors_and_stay_usable(database: Path) -> None:
    def broken(connection: sqlite3.Connection) -> None:
        connection.execute("SELECT * FROM missing")

    async def scenario(readers: Readers) -> int:
        async with readers.borrow() as reader:
            with pytest.raises(sqlite3.OperationalError, match="no such table"):
                await reader.run(broken)
            return await reader.run(_count)

    assert run(database, scenario) == 3


def test_readers_forget_waits_that_ended(database: Path) -> None:
    async def scenario(readers: Readers) -> int:
        async with readers.borrow():
            for _ in range(3):
                async with readers.borrow():
                    pass
            return readers.waiting

    assert run(database, scenario, wait=0.01) == 0
