"""SQL for reads on the SQLite store: filters, order, and aggregation.

Fields are read from each record's JSON with `json_extract` (values) and
`->` (JSON text, which keeps `5`, `"5"` and `true` apart). Field names are
bound as parameters (`$.name` paths), never written into the SQL.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from tallybook import summaries, timestamps
from tallybook.query import Query, filter_number
from tallybook.summaries import Summary

T = TypeVar("T")
_NUMERIC = "('integer', 'real')"
# Seconds since the epoch, rounded down also before 1970 (% truncates).
_SECONDS = "((timestamp - ((timestamp % 1000000) + 1000000) % 1000000) / 1000000)"
_HOUR, _DAY, _WEEK = 3_600_000_000, 86_400_000_000, 604_800_000_000
_MONDAY = 4 * _DAY  # 1970-01-05, the first Monday after the epoch


def _floor(step: int, origin: int = 0) -> str:
    """The start of the step holding `timestamp`, in microseconds (SQL)."""
    return f"(timestamp - ((timestamp - {origin}) % {step} + {step}) % {step})"


# Fixed-length periods are integer arithmetic on the microseconds, much
# cheaper than date functions; calendar periods use strftime.
_BUCKETS = {
    "hour": _floor(_HOUR),
    "day": _floor(_DAY),
    "week": _floor(_WEEK, _MONDAY),
    "month": f"strftime('%Y-%m-01', {_SECONDS}, 'unixepoch')",
    "quarter": f"strftime('%Y-', {_SECONDS}, 'unixepoch') || printf('%02d', "
    f"(CAST(strftime('%m', {_SECONDS}, 'unixepoch') AS INTEGER) - 1) / 3 * 3 + 1)"
    " || '-01'",
    "year": f"strftime('%Y-01-01', {_SECONDS}, 'unixepoch')",
}


class Statement:
    """SQL text with its parameters, built piece by piece."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.values: list[Any] = []

    def add(self, sql: str, *values: Any) -> None:
        """Add a piece of SQL and the values of its placeholders."""
        self.parts.append(sql)
        self.values.extend(values)


def where(statement: Statement, data_set_id: int, query: Query) -> None:
    """The WHERE clause: data set, time window, filters and prefixes."""
    statement.add("WHERE data_set_id = ?", data_set_id)
    if query.start is not None:
        statement.add("AND timestamp >= ?", timestamps.to_micros(query.start))
    if query.end is not None:
        operator = "<=" if query.inclusive else "<"
        statement.add(f"AND timestamp {operator} ?", timestamps.to_micros(query.end))
    for field, value in query.filters:
        _equals(statement, "body", "$." + field, value)
    for field, prefix in query.prefixes:
        path = "$." + field
        statement.add(
            "AND json_type(body, ?) = 'text' "
            "AND substr(json_extract(body, ?), 1, ?) = ?",
            path,
            path,
            len(prefix),
            prefix,
        )


def _equals(statement: Statement, column: str, path: str, value: str) -> None:
    """Match the text, or the number or boolean the text spells."""
    number = filter_number(value)
    json_type, extract = f"json_type({column}, ?)", f"json_extract({column}, ?)"
    statement.add(
        f"AND CASE {json_type} WHEN 'text' THEN {extract} = ? "
        f"WHEN 'integer' THEN {extract} = ? WHEN 'real' THEN "
        f"{extract} = ? WHEN 'true' THEN ? WHEN 'false' THEN ? "
        "ELSE 0 END",
        path,
        path,
        value,
        path,
        number,
        path,
        number,
        value == "true",
        value == "false",
    )


def raw(data_set_id: int, query: Query) -> Statement:
    """Records as stored, filtered, ordered and limited."""
    statement = Statement()
    statement.add("SELECT body FROM records")
    where(statement, data_set_id, query)
    key, direction = query.order
    if key is None:
        statement.add(f"ORDER BY timestamp {direction}, id {direction}")
    else:
        statement.add(
            f"ORDER BY json_extract(body, ?) {direction} NULLS LAST, timestamp, id",
            "$." + key,
        )
    statement.add("LIMIT ?", -1 if query.limit is None else query.limit)
    return statement


def aggregate(
    data_set_id: int, query: Query, by_period: bool, exact: bool = True
) -> Statement:
    """Counts and collects per group (and per period when `by_period`).

    An inner SELECT reads each field once per record (every JSON call parses
    the record again, and that parsing is most of the cost); the outer one
    groups. Records whose group field is missing or null are left out.
    """
    inner = Statement()
    groups = [f"body -> ? AS g{n}" for n in range(len(query.group_by))]
    bucket = _BUCKETS[query.period] if by_period and query.period else "NULL"
    inner.add(
        f"SELECT {', '.join([*groups, f'{bucket} AS b'])}",
        *("$." + field for field in query.group_by),
    )
    for n, collect in enumerate(query.collect):
        value = "body -> ?" if collect.method == "set" else "json_extract(body, ?)"
        inner.add(
            f", json_type(body, ?) AS t{n}, {value} AS v{n}",
            "$." + collect.field,
            "$." + collect.field,
        )
    inner.add("FROM records")
    where(inner, data_set_id, query)

    keys = [f"g{n}" for n in range(len(query.group_by))] or ["NULL"]
    statement = Statement()
    statement.add(f"SELECT {', '.join(keys)}, b, count(*)")
    for n, collect in enumerate(query.collect):
        statement.add(_collected(n, collect.method, exact))
    statement.add("FROM (" + " ".join(inner.parts) + ")", *inner.values)
    present = [
        f"g{n} IS NOT NULL AND g{n} != 'null'" for n in range(len(query.group_by))
    ]
    if present:
        statement.add("WHERE " + " AND ".join(present))
    statement.add(f"GROUP BY {', '.join(keys)}, b")
    return statement


def total(expression: str, exact: bool, only: str = "") -> str:
    """SQL adding up `expression` (NULL when there is nothing to add).

    `sum()` keeps whole numbers whole but fails past 64 bits ("integer
    overflow"); the inexact form adds as floats. Stores try the exact form
    and fall back to the other. `only` is a FILTER clause for both calls.
    """
    if exact:
        return f"sum({expression}) {only}"
    present = f"count({expression}) {only} > 0"
    return f"CASE WHEN {present} THEN total({expression}) {only} END"


def exact_first(run: Callable[[bool], T]) -> T:
    """`run(True)`; if its exact sums overflow 64 bits, `run(False)` in floats."""
    try:
        return run(True)
    except sqlite3.OperationalError as exc:
        if str(exc) != "integer overflow":
            raise
    return run(False)


def summed(
    data_set_id: int,
    query: Query,
    by_period: bool,
    summary: Summary,
    exact: bool = True,
) -> Statement:
    """What `aggregate` answers, added up from the summary's cells.

    Each cell row holds one field's totals for an hour (or a day) and a
    grouping (a JSON array of the summary's group values); the outer SELECT
    turns the rows of each field into columns.
    """
    position = {field: n for n, field in enumerate(summary.group_by)}
    inner = Statement()
    groups = [f"grouping -> ? AS g{n}" for n in range(len(query.group_by))]
    bucket = _BUCKETS[query.period] if by_period and query.period else "NULL"
    inner.add(
        f"SELECT {', '.join([*groups, f'{bucket} AS b'])}, field, count, numbers, "
        "total FROM summaries WHERE data_set_id = ? AND span = ?",
        *(f"$[{position[field]}]" for field in query.group_by),
        data_set_id,
        summary.span(query),
    )
    if query.start is not None:
        inner.add("AND timestamp >= ?", timestamps.to_micros(query.start))
    if query.end is not None:
        inner.add("AND timestamp < ?", timestamps.to_micros(query.end))
    for field, value in query.filters:
        _equals(inner, "grouping", f"$[{position[field]}]", value)

    keys = [f"g{n}" for n in range(len(query.group_by))] or ["NULL"]
    statement = Statement()
    statement.add(
        f"SELECT {', '.join(keys)}, b, sum(count) FILTER (WHERE field = ?)",
        summaries.COUNT,
    )
    for collect in query.collect:
        _summed(statement, collect.field, collect.method, exact)
    statement.add("FROM (" + " ".join(inner.parts) + ")", *inner.values)
    present = [
        f"g{n} IS NOT NULL AND g{n} != 'null'" for n in range(len(query.group_by))
    ]
    if present:
        statement.add("WHERE " + " AND ".join(present))
    statement.add(
        f"GROUP BY {', '.join(keys)}, b HAVING sum(count) FILTER (WHERE field = ?) > 0",
        summaries.COUNT,
    )
    return statement


def _summed(statement: Statement, field: str, method: str, exact: bool) -> None:
    """Add one collect from cells: its value, its counts of non-numbers and numbers."""
    only = "FILTER (WHERE field = ?)"
    if method == "sum":
        fields = [field] if exact else [field, field]
        statement.add(", " + total("total", exact, only), *fields)
    elif method == "mean":
        statement.add(f", total(total) {only} / sum(numbers) {only}", field, field)
    else:
        statement.add(f", coalesce(sum(count) {only}, 0)", field)
    statement.add(
        f", coalesce(sum(count - numbers) {only}, 0), coalesce(sum(numbers) {only}, 0)",
        field,
        field,
    )


def _collected(n: int, method: str, exact: bool) -> str:
    """The aggregate of one collect, its count of non-numbers and of numbers."""
    numeric = f"t{n} IN {_NUMERIC}"
    if method == "sum":
        value = total(f"CASE WHEN {numeric} THEN v{n} END", exact)
    elif method == "mean":
        value = f"avg(CASE WHEN {numeric} THEN v{n} END)"
    elif method == "count":
        value = f"count(CASE WHEN t{n} != 'null' THEN 1 END)"
    else:
        value = f"json_group_array(DISTINCT json(v{n})) FILTER (WHERE t{n} != 'null')"
    return (
        f", {value}, count(CASE WHEN NOT {numeric} AND t{n} != 'null' THEN 1 END)"
        f", count(CASE WHEN {numeric} THEN 1 END)"
    )


Parts = tuple[tuple[Any, ...], datetime | None, int, list[Any], list[int], list[int]]


def read_row(row: tuple[Any, ...], query: Query) -> Parts:
    """Split an aggregate row into the fields of a Bucket."""
    width = max(len(query.group_by), 1)
    group = tuple(json.loads(v) for v in row[: len(query.group_by)])
    start = None if row[width] is None else _bucket(row[width])
    rest = row[width + 2 :]
    collected = [
        _set(rest[3 * i]) if c.method == "set" else rest[3 * i]
        for i, c in enumerate(query.collect)
    ]
    return (
        group,
        start,
        int(row[width + 1]),
        collected,
        list(rest[1::3]),
        list(rest[2::3]),
    )


def _set(text: str | None) -> list[Any]:
    return [] if text is None else list(json.loads(text))


def _bucket(value: str | int) -> datetime:
    if isinstance(value, int):
        return timestamps.from_micros(value)
    return datetime.fromisoformat(value).replace(tzinfo=UTC)
