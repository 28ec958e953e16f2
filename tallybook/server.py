"""Running the application under uvicorn, with uvloop and httptools."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import gc
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette

from tallybook.app import create_app
from tallybook.http.protocol import GuardedProtocol
from tallybook.http.ratelimit import check_settings
from tallybook.settings import Settings

logger = logging.getLogger(__name__)
GRACE_SECONDS = 30
GC_THRESHOLDS = (50_000, 50, 100)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s %(message)s"
# glibc mallopt parameters (malloc.h): fresh pages are costly on the virtual
# machines tallybook runs on, so keep freed memory instead of giving it back
# at once (PERFORMANCE.md measured 3 us -> 0.2 us per record encoded).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MALLOC_TUNING = {
    _M_TRIM_THRESHOLD: 1 << 30,
    _M_TOP_PAD: 64 << 20,
    _M_MMAP_THRESHOLD: 1 << 30,
}


def run(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; in-flight requests finish first.

    On SIGTERM uvicorn stops accepting connections and waits up to
    GRACE_SECONDS for running requests; the store then commits every queued
    write before the process exits. With `settings.workers` above 1, that
    many processes share the port, each built by `serving_app` from the
    `TALLYBOOK_*` environment.

    Raises:
        ValueError: several workers were asked for on a SQLite store, or with
            rate limits but no Redis to share their counts.
    """
    if settings.workers > 1 and "://" not in settings.store:
        raise ValueError(
            "Several workers need the PostgreSQL store: SQLite's group commit "
            "works within one process. Use --workers 1 or a postgresql:// store."
        )
    check_settings(settings)
    os.environ.update(_environment(settings))
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": GuardedProtocol,
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": GRACE_SECONDS,
    }
    if settings.workers > 1:
        _configure_logging(settings)
        target = "tallybook.server:serving_app"
        uvicorn.run(target, factory=True, workers=settings.workers, **options)
    else:
        uvicorn.run(serving_app(settings), **options)


def serving_app(settings: Settings | None = None) -> Starlette:
    """Build the app of one server process: logging, memory and app."""
    settings = settings or Settings.from_env()
    _configure_logging(settings)
    tune_malloc()
    GuardedProtocol.header_timeout = settings.header_timeout
    GuardedProtocol.send_timeout = settings.send_timeout
    app = create_app(settings)
    # Objects made at start-up live as long as the process: freezing them
    # keeps the garbage collector from walking them again and again, and a
    # higher first threshold makes collections rarer. Measured on the
    # single-record path: ~25% less time per request.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return app


def _configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one log record."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "request", {}))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _environment(settings: Settings) -> dict[str, str]:
    return {
        "TALLYBOOK_" + item.name.upper(): str(getattr(settings, item.name))
        for item in dataclasses.fields(settings)
    }


def tune_malloc() -> bool:
    """Apply the glibc malloc settings above; return whether they took."""
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    return all(libc.mallopt(key, value) == 1 for key, value in _MALLOC_TUNING.items())
