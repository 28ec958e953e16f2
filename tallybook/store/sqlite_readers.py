"""Read connections of the SQLite store: a few, each on a thread of its own.

A read borrows one `Reader` for as long as it needs one snapshot (a whole
aggregate, or every page of a streamed read) and gives it back after. When
every reader is lent out for longer than `wait` seconds (large reads, slow
clients), the read gets a temporary reader instead, so a few slow readers
cannot hold up the others; the temporary one is closed after that read.

Why a fixed set: a new connection per read, run on whichever worker thread
was free, made the server's memory grow with the store in `bench/soak.py`
(each thread's malloc arena keeps the high-water mark of the pages its reads
touched, and a query over one day touches more pages as the store grows).
With a fixed set of threads the high-water mark is bounded by their number
and their page caches (docs/benchmarks.md, "Soak").
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]
Connect = Callable[[], sqlite3.Connection]


class Reader:
    """One read connection, opened and used only on its own thread."""

    def __init__(self, connect: Connect, name: str) -> None:
        self._connect = connect
        self._connection: sqlite3.Connection | None = None
        self._cursors: list[sqlite3.Cursor] = []
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def run(self, job: Job[T]) -> T:
        """Run `job` with the connection on the reader's thread."""
        return await asyncio.wrap_future(self._thread.submit(self._call, job))

    async def execute(self, sql: str, values: Sequence[Any]) -> sqlite3.Cursor:
        """Start a statement whose cursor stays open until `settle`."""

        def start(connection: sqlite3.Connection) -> sqlite3.Cursor:
            cursor = connection.execute(sql, values)
            self._cursors.append(cursor)
            return cursor

        return await self.run(start)

    def settle(self) -> None:
        """End whatever the last borrower left open, before the next one runs.

        Jobs run one at a time in the order given, so this needs no waiting:
        a job that is still running when its borrower gave up goes first.
        """
        self._thread.submit(self._call, self._end)

    def close(self) -> None:
        """Close the connection and let the thread end."""
        self._thread.submit(self._close)
        self._thread.shutdown(wait=False)

    def _call(self, job: Job[T]) -> T:
        if self._connection is None:
            self._connection = self._connect()
        return job(self._connection)

    def _end(self, connection: sqlite3.Connection) -> None:
        for cursor in self._cursors:
            cursor.close()
        self._cursors.clear()
        if connection.in_transaction:
            connection.rollback()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class Readers:
    """A fixed set of readers lent out one read at a time."""

    def __init__(self, connect: Connect, size: int, wait: float) -> None:
        self._connect = connect
        self._wait = wait
        self._all = [Reader(connect, f"sqlite-reader-{n}") for n in range(size)]
        self._free = list(self._all)
        self._waiters: deque[asyncio.Future[Reader | None]] = deque()
        self.temporary = 0

    @property
    def waiting(self) -> int:
        """How many reads are waiting for a reader now."""
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def borrow(self) -> AsyncIterator[Reader]:
        """Lend a reader for one read; a temporary one if none is free in time."""
        reader = await self._take()
        temporary = reader is None
        if reader is None:
            self.temporary += 1
            reader = Reader(self._connect, "sqlite-reader-extra")
        try:
            yield reader
        finally:
            reader.settle()
            if temporary:
                reader.close()
            else:
                self._give(reader)

    def close(self) -> None:
        """Close every pooled reader; reads still running finish first."""
        for reader in self._all:
            reader.close()

    async def _take(self) -> Reader | None:
        if self._free:
            return self._free.pop()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Reader | None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self._wait, _resolve, waiter, None)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._give(waiter.result())
            raise
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):  # not handed a reader
                self._waiters.remove(waiter)

    def _give(self, reader: Reader | None) -> None:
        if reader is None:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(reader)
                return
        self._free.append(reader)


def _resolve(waiter: asyncio.Future[Reader | None], reader: Reader | None) -> None:
    if not waiter.done():
        waiter.set_result(reader)
