"""Parsing and checking request bodies, large ones in a helper process.

Checking records is pure Python and holds the GIL: about 5 us a record, so a
10,000-record body would stall the event loop for 50 ms, and the server
would use one core while SQLite's writer waits. Bodies of at least
`parse_offload_bytes` are therefore parsed in a process pool (spawned on
first use), leaving the server process free to take requests and write.
Small bodies are parsed in place: a process hop costs more than it saves.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial

from tallybook import records
from tallybook.datasets import DataSet

logger = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class BatchParser:
    """Runs `records.parse` in place or in a pool, by body size."""

    def __init__(
        self, limits: records.Limits, workers: int, offload_bytes: int
    ) -> None:
        self.limits = limits
        self.workers = workers
        self.offload_bytes = offload_bytes
        self._pool: ProcessPoolExecutor | None = None

    async def parse(
        self, body: bytes, data_set: DataSet, *, array_required: bool
    ) -> list[records.Record]:
        """Parse and check a body; raise InvalidRequest as `records.parse` does."""
        job = partial(
            records.parse, body, data_set, self.limits, array_required=array_required
        )
        if self.workers < 1 or len(body) < self.offload_bytes:
            return job()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._start(), job)
        except BrokenProcessPool:
            logger.error("the parser process died; parsing in the server for now")
            self._pool = None
            return job()

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the server process has threads (the SQLite
            # writer), and forking a threaded process can copy held locks.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=context,
                initializer=end_with_parent,
                initargs=(os.getpid(),),
            )
        return self._pool

    def close(self) -> None:
        """Stop the helper processes, if any were started."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def end_with_parent(parent: int) -> None:
    """In a helper process: die with the server, even when it is SIGKILLed.

    Without this, a killed server leaves its helpers (and multiprocessing's
    resource tracker, which waits for them) running for ever. Linux sends
    the signal asked for with PR_SET_PDEATHSIG when the parent dies; if it
    died before the request took effect, the parent id has changed already.
    """
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return
    ctypes.CDLL(name).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
