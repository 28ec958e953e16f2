"""Keeping the SQLite write-ahead log from growing without end.

SQLite copies the WAL into the database file every 1,000 pages, but starts
the WAL again from its beginning only at a moment when no read uses it. With
reads arriving all the time one always does, and the file grew to 92 MB
beside a 32 MB database in one minute of `bench/soak.py`. After a commit, at
most once every `every` seconds, the writer thread therefore looks at the
file's size; past `limit` bytes it asks for a RESTART checkpoint, which waits
for the reads already running (new ones read the database file instead) and
lets the next write start the log again. `journal_size_limit` then cuts the
file back to `limit` bytes.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# How long the writer waits for running reads before it gives up until the
# next time; writes queue behind it meanwhile.
WAIT_MS = 100


class WalLimit:
    """Restarts the WAL of one database when it passed `limit` bytes."""

    def __init__(self, database: Path, limit: int, every: float) -> None:
        self.wal = Path(f"{database}-wal")
        self.limit = limit
        self.every = every
        self.restarts = 0
        self.given_up = 0
        self._due = 0.0

    def prepare(self, connection: sqlite3.Connection) -> None:
        """Have the writer's connection cut the file back after a restart."""
        connection.execute(f"PRAGMA journal_size_limit = {int(self.limit)}")

    def after_commit(self, connection: sqlite3.Connection) -> None:
        """Restart the WAL when it is due and too large; never raise."""
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + self.every
        try:
            if self.wal.stat().st_size > self.limit:
                self._restart(connection)
        except (OSError, sqlite3.Error):
            logger.warning("the WAL could not be restarted", exc_info=True)

    def _restart(self, connection: sqlite3.Connection) -> None:
        (timeout,) = connection.execute("PRAGMA busy_timeout").fetchone()
        connection.execute(f"PRAGMA busy_timeout = {WAIT_MS}")
        try:
            (busy, _, _) = connection.execute(
                "PRAGMA wal_checkpoint(RESTART)"
            ).fetchone()
        finally:
            connection.execute(f"PRAGMA busy_timeout = {int(timeout)}")
        if busy:
            self.given_up += 1
        else:
            self.restarts += 1
