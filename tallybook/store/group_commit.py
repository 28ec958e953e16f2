"""Group commit: many writers share one SQLite transaction and one disk flush.

SQLite allows one writer at a time, and with `synchronous=FULL` every commit
waits for the disk. One thread owns the write connection; requests hand it
jobs through a queue. The thread takes every job waiting, runs each inside
its own SAVEPOINT (so one job's failure undoes only that job), commits once,
and only then tells each request how its job went. A request therefore
hears "done" only after its data is durable, and under load one flush serves
many requests.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tallybook.errors import StoreError

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]
logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Ticket:
    job: Job[Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class GroupCommitter:
    """Runs write jobs on one connection, committing them in groups."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        after_commit: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self._connect = connect
        self._after_commit = after_commit
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="sqlite-writer")
        self.commits = 0

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def stop(self) -> None:
        """Finish every job already queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    async def run(self, job: Job[T]) -> T:
        """Run `job` in the next group; return once that group is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Ticket(job, future, loop))
        return await future

    def _loop(self) -> None:
        connection = self._connect()
        try:
            stopping = False
            while not stopping:
                tickets, stopping = self._take()
                if tickets:
                    self._commit(connection, tickets)
                    if self._after_commit is not None:
                        self._after_commit(connection)
        finally:
            connection.close()

    def _take(self) -> tuple[list[_Ticket], bool]:
        """Wait for one job, then take all the others already waiting."""
        tickets: list[_Ticket] = []
        item = self._queue.get()
        while item is not _STOP:
            tickets.append(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return tickets, False
        return tickets, True

    def _commit(self, connection: sqlite3.Connection, tickets: list[_Ticket]) -> None:
        try:
            connection.execute("BEGIN IMMEDIATE")
            outcomes = [_attempt(connection, ticket.job) for ticket in tickets]
            connection.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            logger.error("group commit of %d jobs failed", len(tickets), exc_info=True)
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            failure = StoreError("the database could not commit the write")
            failure.__cause__ = exc
            outcomes = [(False, failure)] * len(tickets)
        for ticket, outcome in zip(tickets, outcomes, strict=True):
            _deliver(ticket, outcome)


def _attempt(connection: sqlite3.Connection, job: Job[Any]) -> tuple[bool, Any]:
    """Run one job in a savepoint; undo just that job if it fails."""
    connection.execute("SAVEPOINT job")
    try:
        result = job(connection)
    except Exception as exc:
        connection.execute("ROLLBACK TO job")
        connection.execute("RELEASE job")
        return False, _translate(exc)
    connection.execute("RELEASE job")
    return True, result


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.Error):
        error = StoreError(f"the database refused the write: {exc}")
        error.__cause__ = exc
        return error
    return exc


def _deliver(ticket: _Ticket, outcome: tuple[bool, Any]) -> None:
    try:
        ticket.loop.call_soon_threadsafe(_settle, ticket.future, outcome)
    except RuntimeError:
        logger.warning("a write finished after its event loop closed")


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.cancelled():
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
