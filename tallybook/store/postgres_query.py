"""SQL for reads on the PostgreSQL store: filters, order, and aggregation.

Fields are read from each record's `json` body with `->`; field names are
bound as parameters, never written into the SQL. Periods are
`date_trunc` in UTC (PostgreSQL's weeks start on Monday, as tallybook's).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tallybook import summaries
from tallybook.query import Collect, Query, filter_number
from tallybook.summaries import Summary

_MICROS = "timestamptz 'epoch' + interval '1 microsecond' * "


class Statement:
    """SQL text with its numbered parameters, built piece by piece."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.values: list[Any] = []

    def bind(self, value: Any) -> str:
        """Add a parameter; return its placeholder."""
        self.values.append(value)
        return f"${len(self.values)}"

    def add(self, sql: str) -> None:
        """Add a piece of SQL."""
        self.parts.append(sql)

    @property
    def sql(self) -> str:
        """The whole statement."""
        return " ".join(self.parts)


def where(statement: Statement, data_set_id: int, query: Query) -> None:
    """The WHERE clause: data set, time window, filters and prefixes."""
    statement.add(f"WHERE data_set_id = {statement.bind(data_set_id)}")
    if query.start is not None:
        statement.add(f"AND timestamp >= {statement.bind(query.start)}")
    if query.end is not None:
        operator = "<=" if query.inclusive else "<"
        statement.add(f"AND timestamp {operator} {statement.bind(query.end)}")
    for field, value in query.filters:
        choices = [json.dumps(value), *_typed(value)]
        statement.add(
            f"AND (body -> {statement.bind(field)})::jsonb = ANY("
            f"{statement.bind(choices)}::jsonb[])"
        )
    for field, prefix in query.prefixes:
        name = statement.bind(field)
        length, bound = statement.bind(len(prefix)), statement.bind(prefix)
        statement.add(
            f"AND json_typeof(body -> {name}) = 'string' AND "
            f"left(body ->> {name}, {length}) = {bound}"
        )


def _typed(text: str) -> list[str]:
    """The JSON values besides the text that a filter's text stands for."""
    if text in ("true", "false"):
        return [text]
    return [] if filter_number(text) is None else [text]


def raw(data_set_id: int, query: Query) -> Statement:
    """Records as stored, filtered, ordered and limited."""
    statement = Statement()
    statement.add("SELECT body::text FROM records")
    where(statement, data_set_id, query)
    key, direction = query.order
    if key is None:
        statement.add(f"ORDER BY timestamp {direction}, id {direction}")
    else:
        statement.add(
            f"ORDER BY (body -> {statement.bind(key)})::jsonb {direction} "
            "NULLS LAST, timestamp, id"
        )
    statement.add(f"LIMIT {statement.bind(query.limit)}")
    return statement


def aggregate(data_set_id: int, query: Query, by_period: bool) -> Statement:
    """Counts and collects per group (and per period when `by_period`)."""
    statement = Statement()
    columns = [f"(body -> {statement.bind(field)})::text" for field in query.group_by]
    bucket = "NULL::timestamp"
    if by_period and query.period:
        bucket = f"date_trunc('{query.period}', timestamp AT TIME ZONE 'UTC')"
    statement.add(f"SELECT {', '.join(columns) or 'NULL'}, {bucket}, count(*)")
    for collect in query.collect:
        _collect(statement, collect)
    statement.add("FROM records")
    where(statement, data_set_id, query)
    for field in query.group_by:
        statement.add(f"AND json_typeof(body -> {statement.bind(field)}) <> 'null'")
    groups = max(len(query.group_by), 1) + 1
    statement.add("GROUP BY " + ", ".join(str(n) for n in range(1, groups + 1)))
    return statement


def summed(
    data_set_id: int, query: Query, by_period: bool, summary: Summary
) -> Statement:
    """What `aggregate` answers, added up from the summary's cells.

    Each cell row holds one field's totals for an hour (or a day) and a
    grouping (the JSON array of the summary's group values); FILTER turns
    the rows of each field into columns. Positions in the grouping are the
    summary's own integers, written into the SQL; every name is bound.
    """
    statement = Statement()
    position = {field: n for n, field in enumerate(summary.group_by)}
    values = [f"(grouping::json -> {position[field]})" for field in query.group_by]
    bucket = "NULL::timestamp"
    if by_period and query.period:
        bucket = f"date_trunc('{query.period}', timestamp AT TIME ZONE 'UTC')"
    counted = f"FILTER (WHERE field = {statement.bind(summaries.COUNT)})"
    columns = ", ".join(f"{value}::text" for value in values) or "NULL"
    statement.add(f"SELECT {columns}, {bucket}, sum(count) {counted}")
    for collect in query.collect:
        _summed(statement, collect)
    statement.add(
        f"FROM summaries WHERE data_set_id = {statement.bind(data_set_id)} "
        f"AND span = {statement.bind(summary.span(query))}"
    )
    if query.start is not None:
        statement.add(f"AND timestamp >= {statement.bind(query.start)}")
    if query.end is not None:
        statement.add(f"AND timestamp < {statement.bind(query.end)}")
    for field, value in query.filters:
        choices = statement.bind([json.dumps(value), *_typed(value)])
        grouped = f"(grouping::json -> {position[field]})::jsonb"
        statement.add(f"AND {grouped} = ANY({choices}::jsonb[])")
    for value in values:
        statement.add(f"AND json_typeof({value}) <> 'null'")
    groups = max(len(query.group_by), 1) + 1
    statement.add("GROUP BY " + ", ".join(str(n) for n in range(1, groups + 1)))
    statement.add(f"HAVING sum(count) {counted} > 0")
    return statement


def _summed(statement: Statement, collect: Collect) -> None:
    """One collect from cells: its value, its counts of non-numbers and numbers."""
    only = f"FILTER (WHERE field = {statement.bind(collect.field)})"
    if collect.method == "sum":
        statement.add(f", sum(total) {only}")
    elif collect.method == "mean":
        statement.add(f", sum(total) {only} / sum(numbers) {only}")
    else:
        statement.add(f", coalesce(sum(count) {only}, 0)::bigint")
    statement.add(f", coalesce(sum(count - numbers) {only}, 0)::bigint")
    statement.add(f", coalesce(sum(numbers) {only}, 0)::bigint")


def _collect(statement: Statement, collect: Collect) -> None:
    name = statement.bind(collect.field)
    value, kind = f"body -> {name}", f"json_typeof(body -> {name})"
    if collect.method in ("sum", "mean"):
        function = "sum" if collect.method == "sum" else "avg"
        statement.add(
            f", {function}((body ->> {name})::numeric) FILTER (WHERE {kind} = 'number')"
        )
    elif collect.method == "count":
        statement.add(f", count(*) FILTER (WHERE {kind} <> 'null')")
    else:
        # Distinct by JSON text, as on SQLite: 5 and 5.0 stay apart.
        statement.add(
            f", array_agg(DISTINCT ({value})::text) FILTER (WHERE {kind} <> 'null')"
        )
    statement.add(f", count(*) FILTER (WHERE {kind} NOT IN ('number', 'null'))")
    statement.add(f", count(*) FILTER (WHERE {kind} = 'number')")


Parts = tuple[tuple[Any, ...], datetime | None, int, list[Any], list[int], list[int]]


def read_row(row: Any, query: Query) -> Parts:
    """Split an aggregate row into the fields of a Bucket."""
    width = max(len(query.group_by), 1)
    group = tuple(json.loads(v) for v in list(row)[: len(query.group_by)])
    start = None if row[width] is None else row[width].replace(tzinfo=UTC)
    rest = list(row)[width + 2 :]
    collected = [_value(rest[3 * i], c) for i, c in enumerate(query.collect)]
    return (
        group,
        start,
        int(row[width + 1]),
        collected,
        list(rest[1::3]),
        list(rest[2::3]),
    )


def _value(value: Any, collect: Collect) -> Any:
    if collect.method == "set":
        return [] if value is None else [json.loads(text) for text in value]
    if collect.method == "mean" and value is not None:
        return float(value)
    if isinstance(value, Decimal):
        text = str(value)
        whole = text.lstrip("-").isdigit() and -(2**63) <= value < 2**63
        # Past 64 bits a sum is a float, as on SQLite (and as JSON tools read it).
        return int(text) if whole else float(value)
    return value
