"""Shaping aggregate reads into answers (no I/O).

The store counts and collects per group and period; this module fills empty
periods, nests or flattens, sorts, limits, and writes CSV. The order of rows
is always the same for the same data: groups by their values (numbers, then
text, then booleans), periods by time.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from tallybook import periods, timestamps
from tallybook.errors import InvalidRequest, Problem
from tallybook.query import Query
from tallybook.store import Bucket

Row = dict[str, Any]
_EMPTY: dict[str, Any] = {"sum": None, "mean": None, "count": 0, "set": []}


def shape(query: Query, buckets: list[Bucket]) -> list[Row]:
    """Rows for an aggregate query from the store's buckets.

    Args:
        query: the query (it has `group_by`, `period`, or both).
        buckets: per group and period (per group only without a period).

    Raises:
        InvalidRequest: a sum or mean of a field holding non-numbers.
    """
    _check_numbers(query, buckets)
    if not query.group_by:
        return _period_rows(query, buckets, ())
    if query.period is None:
        return _limited(query, _sorted(query, [_group_row(query, b) for b in buckets]))
    totals = [_merged(query, parts) for parts in _by_group(buckets).values()]
    groups = _limited(query, _sorted(query, [_group_row(query, b) for b in totals]))
    by_group = _by_group(buckets)
    if query.flatten:
        return _flat(query, groups, by_group)
    for row in groups:
        key = _key_of(query, row)
        row["values"] = _period_rows(query, by_group.get(key, []), ())
        row["_group_count"] = sum(1 for value in row["values"] if value["_count"])
    return groups


def _check_numbers(query: Query, buckets: list[Bucket]) -> None:
    for index, collect in enumerate(query.collect):
        if collect.method not in ("sum", "mean"):
            continue
        if any(bucket.non_numbers[index] for bucket in buckets):
            message = (
                f"collect {collect.key}: {collect.field} holds values that are "
                f"not numbers; use {collect.field}:set or :count."
            )
            raise InvalidRequest(message, [Problem(message, field="collect")])


def _collected(query: Query, bucket: Bucket | None) -> Row:
    row: Row = {}
    for index, collect in enumerate(query.collect):
        value: Any = (
            _EMPTY[collect.method] if bucket is None else bucket.collected[index]
        )
        if collect.method == "set":
            value = sorted(value, key=order_key)
        row[collect.key] = value
        if collect.bare:
            row[collect.field] = value
    return row


def _group_row(query: Query, bucket: Bucket) -> Row:
    row = dict(zip(query.group_by, bucket.group, strict=True))
    row["_count"] = bucket.count
    row.update(_collected(query, bucket))
    return row


def _period_rows(
    query: Query, buckets: Iterable[Bucket], group: tuple[tuple[str, Any], ...]
) -> list[Row]:
    assert query.period is not None and query.window is not None
    found = {bucket.start: bucket for bucket in buckets}
    rows = []
    for start in periods.buckets(query.period, *query.window):
        end = periods.add(query.period, start, 1)
        bucket = found.get(start)
        row: Row = dict(group)
        row.update(_start_at=_text(start), _end_at=_text(end))
        row["_count"] = 0 if bucket is None else bucket.count
        row.update(_collected(query, bucket))
        rows.append(row)
    return rows


def _flat(
    query: Query, groups: list[Row], by_group: dict[Any, list[Bucket]]
) -> list[Row]:
    """One row per group and period: periods in time order, groups within."""
    columns = [
        _period_rows(
            query,
            by_group.get(_key_of(query, row), []),
            tuple((f, row[f]) for f in query.group_by),
        )
        for row in groups
    ]
    return [row for at_time in zip(*columns, strict=True) for row in at_time]


def _merged(query: Query, parts: list[Bucket]) -> Bucket:
    """One group's buckets of every period, added up into one."""
    collected = []
    for index, collect in enumerate(query.collect):
        values = [part.collected[index] for part in parts]
        weights = [part.numbers[index] for part in parts]
        collected.append(_combine(collect.method, values, weights))
    return Bucket(
        group=parts[0].group,
        start=None,
        count=sum(part.count for part in parts),
        collected=tuple(collected),
        non_numbers=tuple(map(sum, zip(*(p.non_numbers for p in parts), strict=True))),
        numbers=tuple(map(sum, zip(*(p.numbers for p in parts), strict=True))),
    )


def _combine(method: str, values: list[Any], weights: list[int]) -> Any:
    if method == "count":
        return sum(values)
    if method == "set":
        unique = {json.dumps(v, sort_keys=True): v for part in values for v in part}
        return list(unique.values())
    if not sum(weights):
        return None
    if method == "sum":
        return sum(v for v in values if v is not None)
    total = sum(v * w for v, w in zip(values, weights, strict=True) if w)
    return total / sum(weights)


def _by_group(buckets: list[Bucket]) -> dict[Any, list[Bucket]]:
    grouped: dict[Any, list[Bucket]] = {}
    for bucket in buckets:
        grouped.setdefault(_hashable(bucket.group), []).append(bucket)
    return grouped


def _key_of(query: Query, row: Row) -> Any:
    return _hashable(tuple(row[field] for field in query.group_by))


def _hashable(values: tuple[Any, ...]) -> str:
    return json.dumps(values, sort_keys=True)


def _sorted(query: Query, rows: list[Row]) -> list[Row]:
    rows.sort(key=lambda row: tuple(order_key(row[f]) for f in query.group_by))
    if query.sort_by is None:
        return rows
    key, descending = query.sort_by
    present = [row for row in rows if row.get(key) is not None]
    missing = [row for row in rows if row.get(key) is None]
    present.sort(key=lambda row: order_key(row[key]), reverse=descending)
    return present + missing


def _limited(query: Query, rows: list[Row]) -> list[Row]:
    return rows if query.limit is None else rows[: query.limit]


def order_key(value: Any) -> tuple[int, Any]:
    """A total order over JSON values: numbers, text, booleans, then the rest."""
    if isinstance(value, bool):
        return (2, value)
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (3, json.dumps(value, sort_keys=True))


def _text(moment: datetime) -> str:
    return timestamps.to_text(moment)


def to_csv(rows: list[Row], first: Iterable[str] = ()) -> str:
    """Rows as CSV: `first` columns, the time fields, then the rest by name.

    Nested `values` are flattened into one line per period; lists are written
    as JSON, booleans as true/false, null as an empty cell.
    """
    first = list(first)
    flat = _unnested(rows, first)
    keys = {key for row in flat for key in row}
    leading = [
        k for k in (*first, "_id", "_timestamp", "_start_at", "_end_at") if k in keys
    ]
    columns = list(dict.fromkeys(leading)) + sorted(keys - set(leading))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in flat:
        writer.writerow([cell(row.get(column)) for column in columns])
    return out.getvalue()


def _unnested(rows: list[Row], groups: list[str]) -> list[Row]:
    """Nested rows as one row per group and period; other rows as they are."""
    if not rows or "values" not in rows[0]:
        return rows
    return [
        {**{field: row[field] for field in groups}, **value}
        for row in rows
        for value in row["values"]
    ]


def cell(value: Any) -> str:
    """One CSV cell: ISO text, true/false, JSON for lists, empty for null."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
