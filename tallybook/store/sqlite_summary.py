"""Keeping summary cells in SQLite, inside the transaction of each write.

New records add their totals to the cells of their hour and day. When a
write replaces records that exist already, the hours those records were in
are counted again from the records themselves, and their days from their
hours, so totals never depend on subtracting numbers (which for fractions
would leave rounding traces).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable, Sequence

import orjson

from tallybook import summaries
from tallybook.datasets import DataSet
from tallybook.records import Record
from tallybook.store import sqlite_query
from tallybook.store.base import stored_id
from tallybook.summaries import DAY, HOUR, SPANS, Cell, Key, Summary

_ADD = """
INSERT INTO summaries
    (data_set_id, span, timestamp, grouping, field, count, numbers, total)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (data_set_id, span, timestamp, grouping, field) DO UPDATE SET
    count = count + excluded.count,
    numbers = numbers + excluded.numbers,
    total = CASE WHEN excluded.total IS NULL THEN total
        WHEN total IS NULL THEN excluded.total
        ELSE total + excluded.total END
"""
_DAY_FROM_HOURS = """
INSERT INTO summaries
    (data_set_id, span, timestamp, grouping, field, count, numbers, total)
SELECT data_set_id, {day_span}, :day, grouping, field, sum(count), sum(numbers),
    {total}
FROM summaries
WHERE data_set_id = :data_set AND span = {hour_span}
    AND timestamp >= :day AND timestamp < :day + {day_span}
GROUP BY grouping, field
"""
_PAGE = 10_000


def current(db: sqlite3.Connection, data_set: DataSet) -> DataSet | None:
    """The data set with its summary as stored now; None when it has none."""
    row = db.execute(
        "SELECT summary FROM data_sets WHERE id = ?", (stored_id(data_set),)
    ).fetchone()
    summary = None if row is None else summaries.parse(row[0])
    return None if summary is None else dataclasses.replace(data_set, summary=summary)


def replaced_hours(
    db: sqlite3.Connection, data_set: DataSet, records: Sequence[Record]
) -> set[int]:
    """The hours of the stored records that `records` are about to replace."""
    ids = orjson.dumps([record.id for record in records]).decode()
    rows = db.execute(
        "SELECT timestamp FROM records WHERE data_set_id = ? "
        "AND id IN (SELECT value FROM json_each(?))",
        (stored_id(data_set), ids),
    )
    return {timestamp - timestamp % HOUR for (timestamp,) in rows}


def add(
    db: sqlite3.Connection,
    data_set: DataSet,
    records: Sequence[Record],
    replaced: set[int],
) -> None:
    """Update the cells after `records` were written over `replaced` hours."""
    summary = _summary(data_set)
    latest = {record.id: record for record in records}.values()
    new = (
        (record.timestamp, orjson.loads(record.body))
        for record in latest
        if record.timestamp - record.timestamp % HOUR not in replaced
    )
    _store(db, data_set, summaries.cells(summary, new))
    if replaced:
        recount(db, data_set, sorted(replaced))


def recount(
    db: sqlite3.Connection, data_set: DataSet, hours: Iterable[int] | None = None
) -> None:
    """Count the cells of some hours (or of every hour) again from the records."""
    data_set_id, summary = stored_id(data_set), data_set.summary
    if hours is None:
        db.execute("DELETE FROM summaries WHERE data_set_id = ?", (data_set_id,))
        if summary is not None:
            _store(db, data_set, _cells_between(db, data_set_id, summary, None))
        return
    hours = list(hours)
    for hour in hours:
        db.execute(
            "DELETE FROM summaries WHERE data_set_id = ? AND span = ? "
            "AND timestamp = ?",
            (data_set_id, HOUR, hour),
        )
        if summary is not None:
            window = (hour, hour + HOUR)
            found = _cells_between(db, data_set_id, summary, window, (HOUR,))
            _store(db, data_set, found)
    for day in sorted({hour - hour % DAY for hour in hours}):
        db.execute(
            "DELETE FROM summaries WHERE data_set_id = ? AND span = ? "
            "AND timestamp = ?",
            (data_set_id, DAY, day),
        )
        _day_from_hours(db, data_set_id, day)


def _day_from_hours(db: sqlite3.Connection, data_set_id: int, day: int) -> None:
    """Add up a day's hour cells into its day cells; floats past 64 bits."""

    def add(exact: bool) -> None:
        total = sqlite_query.total("total", exact)
        sql = _DAY_FROM_HOURS.format(day_span=DAY, hour_span=HOUR, total=total)
        db.execute(sql, {"day": day, "data_set": data_set_id})

    sqlite_query.exact_first(add)


def _cells_between(
    db: sqlite3.Connection,
    data_set_id: int,
    summary: Summary,
    window: tuple[int, int] | None,
    spans: tuple[int, ...] = SPANS,
) -> dict[Key, Cell]:
    sql = "SELECT timestamp, body FROM records WHERE data_set_id = ?"
    values: tuple[int, ...] = (data_set_id,)
    if window is not None:
        sql += " AND timestamp >= ? AND timestamp < ?"
        values += window
    cursor = db.execute(sql, values)
    found: dict[Key, Cell] = {}
    while rows := cursor.fetchmany(_PAGE):
        parsed = ((t, orjson.loads(b)) for t, b in rows)
        summaries.cells(summary, parsed, found, spans)
    return found


def _store(db: sqlite3.Connection, data_set: DataSet, found: dict[Key, Cell]) -> None:
    data_set_id = stored_id(data_set)
    db.executemany(
        _ADD,
        [
            (data_set_id, *key, cell.count, cell.numbers, _storable(cell.total))
            for key, cell in found.items()
        ],
    )


def _storable(total: float | None) -> float | None:
    """A total SQLite can hold: past 64 bits a whole number becomes a float."""
    if isinstance(total, int) and not -(2**63) <= total < 2**63:
        return float(total)
    return total


def _summary(data_set: DataSet) -> Summary:
    assert data_set.summary is not None
    return data_set.summary
