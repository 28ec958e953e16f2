"""Test stores: a SQLite file, or a fresh PostgreSQL schema per test.

PostgreSQL is used when it answers at TALLYBOOK_TEST_POSTGRES (default
postgresql://postgres@127.0.0.1:5432/test); otherwise its tests are skipped
with the reason, unless TALLYBOOK_REQUIRE_POSTGRES=1 (as CI sets), which turns
the skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import pytest

from tallybook.store import PostgresStore

POSTGRES = os.environ.get(
    "TALLYBOOK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRED = os.environ.get("TALLYBOOK_REQUIRE_POSTGRES") == "1"
_reachable: bool | None = None


def require_postgres() -> None:
    """Skip (or fail, when required) unless PostgreSQL answers."""
    global _reachable
    if _reachable is None:
        _reachable = asyncio.run(_ping())
    if _reachable:
        return
    reason = f"PostgreSQL is not reachable at {POSTGRES}"
    if REQUIRED:
        pytest.fail(reason + " and TALLYBOOK_REQUIRE_POSTGRES=1")
    pytest.skip(reason)


async def _ping() -> bool:
    try:
        connection = await asyncpg.connect(POSTGRES, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


@contextmanager
def postgres_schema(migrated: bool = True) -> Iterator[str]:
    """A new empty schema; yields a store URL that uses it."""
    require_postgres()
    name = "tb_" + uuid.uuid4().hex[:12]
    asyncio.run(_execute(f"CREATE SCHEMA {name}"))
    url = f"{POSTGRES}?search_path={name}"
    try:
        if migrated:
            asyncio.run(PostgresStore(url).migrate())
        yield url
    finally:
        asyncio.run(_execute(f"DROP SCHEMA {name} CASCADE"))


async def _execute(sql: str, url: str = POSTGRES) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()
