"""The PostgreSQL schema, its migrations, and the start-up check.

Record bodies are `json`, not `jsonb`: `json` keeps the text as sent
(number forms such as `1.5e+308` or `-0.0`, and key order), so both stores
give back the same records.

Every table is keyed by data set first (`records` by `(data_set_id, id)`), so
the schema runs unchanged on Citus: `records` is distributed by
`data_set_id`, and `data_sets` and `tokens` are reference tables (see
docs/storage.md).
"""

from __future__ import annotations

import asyncpg

from tallybook.errors import SchemaMismatch

# Each entry upgrades the schema from the version before it; never edit one
# that has shipped, append a new one.
MIGRATIONS = (
    """
    CREATE TABLE data_sets (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL UNIQUE,
        data_group text NOT NULL,
        data_type text NOT NULL,
        auto_ids text[] NOT NULL DEFAULT '{}',
        public boolean NOT NULL DEFAULT false,
        description text NOT NULL DEFAULT '',
        max_age_expected bigint,
        schema jsonb,
        created_at timestamptz NOT NULL DEFAULT now(),
        last_write_at timestamptz,
        UNIQUE (data_group, data_type)
    );
    CREATE TABLE tokens (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        hash bytea NOT NULL UNIQUE,
        data_set_id bigint REFERENCES data_sets (id) ON DELETE CASCADE,
        scopes text NOT NULL,
        name text NOT NULL DEFAULT '',
        prefix text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL,
        expires_at timestamptz,
        revoked_at timestamptz,
        last_used_at timestamptz
    );
    CREATE TABLE records (
        data_set_id bigint NOT NULL REFERENCES data_sets (id) ON DELETE CASCADE,
        id text COLLATE "C" NOT NULL,
        timestamp timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        body json NOT NULL,
        PRIMARY KEY (data_set_id, id)
    );
    CREATE INDEX records_by_time ON records (data_set_id, timestamp, id);
    """,
    """
    ALTER TABLE data_sets ADD COLUMN summary jsonb;
    CREATE TABLE summaries (
        data_set_id bigint NOT NULL REFERENCES data_sets (id) ON DELETE CASCADE,
        span bigint NOT NULL,
        timestamp timestamptz NOT NULL,
        grouping text COLLATE "C" NOT NULL,
        field text COLLATE "C" NOT NULL,
        count bigint NOT NULL,
        numbers bigint NOT NULL,
        total numeric
    );
    -- Keyed by a digest of the grouping: a btree entry holds at most 2704
    -- bytes, and group values may be long.
    CREATE UNIQUE INDEX summaries_cells
        ON summaries (data_set_id, span, timestamp, md5(grouping), field);
    """,
)
LATEST = len(MIGRATIONS)
_LOCK = 7_331_001  # advisory lock id: one migrating process at a time


async def version(connection: asyncpg.Connection) -> int:
    """Return the schema version of the database; 0 when there is none."""
    exists = await connection.fetchval("SELECT to_regclass('tallybook_schema')")
    if exists is None:
        return 0
    found = await connection.fetchval("SELECT version FROM tallybook_schema")
    return int(found or 0)


async def migrate(connection: asyncpg.Connection) -> tuple[int, int]:
    """Bring the schema up to `LATEST`; return the versions before and after.

    Raises:
        SchemaMismatch: the database is newer than this code.
    """
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS tallybook_schema (version integer NOT NULL)"
        )
        before = await version(connection)
        _refuse_newer(before)
        for statement in MIGRATIONS[before:]:
            await connection.execute(statement)
        await connection.execute("DELETE FROM tallybook_schema")
        await connection.execute("INSERT INTO tallybook_schema VALUES ($1)", LATEST)
    return before, LATEST


async def check(connection: asyncpg.Connection) -> None:
    """Refuse a database whose schema is not the one this code uses.

    Raises:
        SchemaMismatch: the schema is missing, older or newer.
    """
    found = await version(connection)
    _refuse_newer(found)
    if found < LATEST:
        state = "has no tallybook schema" if found == 0 else f"has schema {found}"
        raise SchemaMismatch(
            f"the database {state}; this tallybook needs schema {LATEST}. "
            "Run `tallybook migrate --store URL` first."
        )


def _refuse_newer(found: int) -> None:
    if found > LATEST:
        raise SchemaMismatch(
            f"the database has schema {found}, newer than this tallybook "
            f"({LATEST}); upgrade tallybook."
        )
