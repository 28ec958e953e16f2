"""SQL for reads on the SQLite store: filters, order, and aggregation.

Fields are read from each record's JSON with `json_extract` (values) and
`->` (JSON text, which keeps `5`, `"5"` and `true` apart). Field names are
bound as parameters (`$.name` paths), never written into the SQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tallybook import timestamps
from tallybook.query import Collect, Query

_NUMERIC = "('integer', 'real')"
# Seconds since the epoch, rounded down also before 1970 (% truncates).
_SECONDS = "((timestamp - ((timestamp % 1000000) + 1000000) % 1000000) / 1000000)"
_BUCKETS = {
    "hour": f"strftime('%Y-%m-%dT%H:00:00', {_SECONDS}, 'unixepoch')",
    "day": f"date({_SECONDS}, 'unixepoch')",
    "week": f"date({_SECONDS}, 'unixepoch', '-6 days', 'weekday 1')",
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
        _equals(statement, field, value)
    for field, prefix in query.prefixes:
        path = "$." + field
        statement.add(
            "AND json_type(body, ?) = 'text' "
            "AND substr(json_extract(body, ?), 1, ?) = ?",
            path, path, len(prefix), prefix,
        )  # fmt: skip


def _equals(statement: Statement, field: str, value: str) -> None:
    """Match the text, or the number or boolean the text spells."""
    path, number = "$." + field, _number(value)
    statement.add(
        "AND CASE json_type(body, ?) WHEN 'text' THEN json_extract(body, ?) = ? "
        "WHEN 'integer' THEN json_extract(body, ?) = ? WHEN 'real' THEN "
        "json_extract(body, ?) = ? WHEN 'true' THEN ? WHEN 'false' THEN ? "
        "ELSE 0 END",
        path, path, value, path, number, path, number,
        value == "true", value == "false",
    )  # fmt: skip


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def raw(data_set_id: int, query: Query) -> Statement:
    """Records as stored, filtered, ordered and limited."""
    statement = Statement()
    statement.add("SELECT body FROM records")
    where(statement, data_set_id, query)
    if query.sort_by is None or query.sort_by[0] == "_timestamp":
        direction = "DESC" if query.sort_by and query.sort_by[1] else "ASC"
        statement.add(f"ORDER BY timestamp {direction}, id {direction}")
    else:
        key, descending = query.sort_by
        direction = "DESC" if descending else "ASC"
        statement.add(f"ORDER BY json_extract(body, ?) {direction} NULLS LAST, "
                      "timestamp, id", "$." + key)  # fmt: skip
    statement.add("LIMIT ?", -1 if query.limit is None else query.limit)
    return statement


def aggregate(data_set_id: int, query: Query, by_period: bool) -> Statement:
    """Counts and collects per group (and per period when `by_period`)."""
    statement = Statement()
    columns = [("body -> ?", "$." + field) for field in query.group_by]
    bucket = _BUCKETS[query.period] if by_period and query.period else "NULL"
    select = ", ".join(sql for sql, _ in columns) or "NULL"
    statement.add(f"SELECT {select},", *(path for _, path in columns))
    statement.add(f"{bucket}, count(*)")
    for collect in query.collect:
        _collect(statement, collect)
    statement.add("FROM records")
    where(statement, data_set_id, query)
    for field in query.group_by:
        statement.add("AND json_type(body, ?) NOT IN ('null')", "$." + field)
    groups = max(len(query.group_by), 1) + 1
    statement.add("GROUP BY " + ", ".join(str(n) for n in range(1, groups + 1)))
    return statement


def _collect(statement: Statement, collect: Collect) -> None:
    path = "$." + collect.field
    if collect.method in ("sum", "mean"):
        function = "sum" if collect.method == "sum" else "avg"
        statement.add(
            f", {function}(CASE WHEN json_type(body, ?) IN {_NUMERIC} "
            "THEN json_extract(body, ?) END)",
            path, path,
        )  # fmt: skip
    elif collect.method == "count":
        statement.add(
            ", count(CASE WHEN json_type(body, ?) != 'null' THEN 1 END)", path
        )
    else:
        statement.add(
            ", json_group_array(DISTINCT body -> ?) FILTER (WHERE json_type(body, ?) "
            "!= 'null')",
            path, path,
        )  # fmt: skip
    statement.add(
        f", count(CASE WHEN json_type(body, ?) NOT IN {_NUMERIC} "
        "AND json_type(body, ?) != 'null' THEN 1 END)",
        path, path,
    )  # fmt: skip


Parts = tuple[tuple[Any, ...], datetime | None, int, list[Any], list[int]]


def read_row(row: tuple[Any, ...], query: Query) -> Parts:
    """Split an aggregate row: group, bucket, count, collected, non-numbers."""
    width = max(len(query.group_by), 1)
    group = tuple(json.loads(v) for v in row[: len(query.group_by)])
    start = None if row[width] is None else _bucket(row[width])
    rest = row[width + 2 :]
    collected = [_set(rest[2 * i]) if c.method == "set" else rest[2 * i]
                 for i, c in enumerate(query.collect)]  # fmt: skip
    return group, start, int(row[width + 1]), collected, list(rest[1::2])


def _set(text: str | None) -> list[Any]:
    return [] if text is None else list(json.loads(text))


def _bucket(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
