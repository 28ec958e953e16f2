"""Keeping summary cells in PostgreSQL, in the transaction of each write.

PostgreSQL counts the cells itself from the stored records, with the JSON
rules of aggregate reads (`json_typeof`, totals as `numeric`), so a summary
answers exactly what the records would.

Locks, so that many processes keep the cells right:

- a write to a data set with a summary holds its `data_sets` row
  `FOR KEY SHARE` (as the records' foreign key does) and a transaction-level
  advisory lock on the data set, so such writes of one data set take turns;
- a change of summary holds the row `FOR UPDATE`, so it waits for those
  writes and they wait for it;
- writes to data sets without a summary only check, in their one statement,
  that the data set has none (see `postgres.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from tallybook import summaries
from tallybook.records import Record
from tallybook.store.postgres_query import Statement
from tallybook.summaries import COUNT, Summary

LOCK = 7_331_002 << 32  # advisory lock ids: LOCK + data set id
HOUR = "date_trunc('hour', r.timestamp AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
_SPANS = {summaries.HOUR: "hour", summaries.DAY: "day"}
SPANS = tuple(_SPANS)
_MICROS = "timestamptz 'epoch' + interval '1 microsecond' * "
_ADD = """
ON CONFLICT (data_set_id, span, timestamp, md5(grouping), field) DO UPDATE SET
    count = summaries.count + excluded.count,
    numbers = summaries.numbers + excluded.numbers,
    total = CASE WHEN excluded.total IS NULL THEN summaries.total
        WHEN summaries.total IS NULL THEN excluded.total
        ELSE summaries.total + excluded.total END
"""
_DAYS_FROM_HOURS = f"""
INSERT INTO summaries
    (data_set_id, span, timestamp, grouping, field, count, numbers, total)
SELECT c.data_set_id, {summaries.DAY}, d.day, c.grouping, c.field, sum(c.count),
    sum(c.numbers), sum(c.total)
FROM unnest($2::timestamptz[]) AS d (day)
JOIN summaries c ON c.timestamp >= d.day AND c.timestamp < d.day + interval '1 day'
WHERE c.data_set_id = $1 AND c.span = {summaries.HOUR}
GROUP BY c.data_set_id, d.day, c.grouping, c.field
"""


async def lock(db: asyncpg.Connection, data_set_id: int) -> Summary | None:
    """Hold the data set's summary steady for this transaction; return it.

    Takes the advisory lock too when there is a summary, so that writes
    that keep its cells take turns.
    """
    text = await db.fetchval(
        "SELECT summary::text FROM data_sets WHERE id = $1 FOR KEY SHARE",
        data_set_id,
    )
    summary = summaries.parse(text)
    if summary is not None:
        await db.execute("SELECT pg_advisory_xact_lock($1)", LOCK + data_set_id)
    return summary


async def replaced_hours(
    db: asyncpg.Connection, data_set_id: int, records: Sequence[Record]
) -> list[datetime]:
    """The hours of the stored records that `records` are about to replace."""
    rows = await db.fetch(
        f"SELECT DISTINCT {HOUR} FROM records r "
        "WHERE r.data_set_id = $1 AND r.id = ANY($2::text[])",
        data_set_id,
        [record.id for record in records],
    )
    return [row[0] for row in rows]


async def add(
    db: asyncpg.Connection,
    data_set_id: int,
    summary: Summary,
    records: Sequence[Record],
    replaced: list[datetime],
) -> None:
    """Update the cells after `records` were written over `replaced` hours.

    The new records' cells are counted from the batch itself (the records
    as just sent), not read back from the table.
    """
    statement = Statement()
    data_set = statement.bind(data_set_id)
    micros = statement.bind([record.timestamp for record in records])
    bodies = statement.bind([record.body for record in records])
    hours = statement.bind(replaced)
    rows = (
        f"FROM (SELECT {data_set}::bigint AS data_set_id, "
        f"{_MICROS} b.micros AS timestamp, b.body::json AS body "
        f"FROM unnest({micros}::bigint[], {bodies}::text[]) AS b (micros, body)) r "
        f"WHERE NOT {HOUR} = ANY({hours}::timestamptz[])"
    )
    await _store(db, statement, summary, rows, SPANS)
    if replaced:
        await recount(db, data_set_id, summary, replaced)


async def recount(
    db: asyncpg.Connection,
    data_set_id: int,
    summary: Summary | None,
    hours: list[datetime] | None = None,
) -> None:
    """Count the cells of some hours (or of every hour) again from the records."""
    if hours is None:
        await db.execute("DELETE FROM summaries WHERE data_set_id = $1", data_set_id)
        if summary is not None:
            statement = Statement()
            rows = f"FROM records r WHERE r.data_set_id = {statement.bind(data_set_id)}"
            await _store(db, statement, summary, rows, SPANS)
        return
    await _delete(db, data_set_id, summaries.HOUR, hours)
    if summary is not None:
        for hour in hours:
            statement = Statement()
            start = statement.bind(hour)
            rows = (
                f"FROM records r WHERE r.data_set_id = {statement.bind(data_set_id)} "
                f"AND r.timestamp >= {start} "
                f"AND r.timestamp < {start}::timestamptz + interval '1 hour'"
            )
            await _store(db, statement, summary, rows, (summaries.HOUR,))
    days = sorted({hour.replace(hour=0) for hour in hours})
    await _delete(db, data_set_id, summaries.DAY, days)
    await db.execute(_DAYS_FROM_HOURS, data_set_id, days)


async def _delete(
    db: asyncpg.Connection, data_set_id: int, span: int, starts: list[datetime]
) -> None:
    await db.execute(
        "DELETE FROM summaries WHERE data_set_id = $1 AND span = $2 "
        "AND timestamp = ANY($3)",
        data_set_id,
        span,
        starts,
    )


async def _store(
    db: asyncpg.Connection,
    statement: Statement,
    summary: Summary,
    rows: str,
    spans: tuple[int, ...],
) -> None:
    """Count hour cells of some records and add them into cells of `spans`.

    Args:
        db: a connection inside the write's transaction.
        statement: the parameters `rows` uses, bound already.
        summary: the data set's summary.
        rows: `FROM ... r WHERE ...`, giving `r.data_set_id`, `r.timestamp`
            and `r.body` of the records to count.
        spans: the spans of the cells to add to.
    """
    groups = ", ".join(f"r.body -> {statement.bind(f)}" for f in summary.group_by)
    fields = statement.bind([COUNT, *summary.collect])
    kind = "json_typeof(r.body -> f.field)"
    present = f"f.field = '' OR {kind} <> 'null'"
    hourly = (
        f"SELECT r.data_set_id, {HOUR} AS timestamp, "
        f"json_build_array({groups})::text AS grouping, f.field, "
        f"count(*) FILTER (WHERE {present}) AS count, "
        f"count(*) FILTER (WHERE {kind} = 'number') AS numbers, "
        f"sum((r.body ->> f.field)::numeric) FILTER (WHERE {kind} = 'number') "
        f"AS total FROM (SELECT r.data_set_id, r.timestamp, r.body {rows}) r "
        f"CROSS JOIN unnest({fields}::text[]) AS f (field) "
        f"GROUP BY 1, 2, 3, 4 HAVING count(*) FILTER (WHERE {present}) > 0"
    )
    inserts = [
        f"INSERT INTO summaries (data_set_id, span, timestamp, grouping, field, "
        f"count, numbers, total) SELECT data_set_id, {span}, "
        f"date_trunc('{_SPANS[span]}', timestamp AT TIME ZONE 'UTC') "
        "AT TIME ZONE 'UTC', grouping, field, sum(count), sum(numbers), sum(total) "
        f"FROM hourly GROUP BY 1, 3, 4, 5 {_ADD}"
        for span in spans
    ]
    steps = [f"hourly AS ({hourly})"]
    steps += [f"added_{n} AS ({sql})" for n, sql in enumerate(inserts[:-1])]
    sql = f"WITH {', '.join(steps)} {inserts[-1]}"
    await db.execute(sql, *statement.values)
