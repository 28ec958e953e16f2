"""Summaries: per-hour totals of a data set's records, kept up to date on write.

A data set may declare a summary: the fields it is grouped by and the fields
whose numbers are added up. For each hour, and again for each day, and each
combination of group values the store keeps one cell per field: how many
records (field `""`), and per collected field how many values were present,
how many were numbers and their total. An aggregate query that uses only
these fields, on whole hours, is then answered by adding up cells instead of
reading every record: day cells when its window is whole days and its period
is not an hour, hour cells otherwise.

This module holds the rules and the arithmetic (no I/O); the stores keep the
cells. See docs/query.md, "Summaries".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tallybook import timestamps
from tallybook.query import Query

HOUR = 3_600_000_000  # microseconds
DAY = 24 * HOUR
SPANS = (HOUR, DAY)
COUNT = ""  # the field name of a cell that counts records
_INT64 = (-(2**63), 2**63 - 1)
SUMMED = ("sum", "count", "mean")


@dataclass(frozen=True)
class Summary:
    """The fields a data set's summary is kept for.

    Attributes:
        group_by: fields queries may group and filter by.
        collect: fields queries may collect with sum, count or mean.
    """

    group_by: tuple[str, ...]
    collect: tuple[str, ...]

    def serves(self, query: Query) -> bool:
        """Whether the query can be answered from this summary's cells."""
        filtered = [field for field, _ in query.filters]
        return (
            not query.raw
            and not query.prefixes
            and set(query.group_by) <= set(self.group_by)
            and set(filtered) <= set(self.group_by)
            and all(
                c.field in self.collect and c.method in SUMMED for c in query.collect
            )
            and _whole(HOUR, query.start)
            and _whole(HOUR, query.end)
            and not (query.inclusive and query.end is not None)
        )

    def span(self, query: Query) -> int:
        """The span of the cells that answer a query this summary serves."""
        whole_days = _whole(DAY, query.start) and _whole(DAY, query.end)
        return DAY if whole_days and query.period != "hour" else HOUR

    def describe(self) -> dict[str, list[str]]:
        """The summary as settings show it."""
        return {"group_by": list(self.group_by), "collect": list(self.collect)}


def parse(text: str | None) -> Summary | None:
    """A summary from the JSON text `Summary.describe` gives, as stored."""
    if text is None:
        return None
    fields = json.loads(text)
    return Summary(tuple(fields["group_by"]), tuple(fields["collect"]))


def _whole(span: int, moment: Any) -> bool:
    """Whether the moment (a datetime, or None for no limit) starts a span."""
    return moment is None or timestamps.to_micros(moment) % span == 0


@dataclass(slots=True)
class Cell:
    """Totals of one field over the records of one span of time and group.

    Attributes:
        count: records (in a `COUNT` cell), or values present and not null.
        numbers: how many of those values were numbers.
        total: their sum; None when there were none.
    """

    count: int = 0
    numbers: int = 0
    total: int | float | None = None


Key = tuple[int, int, str, str]  # span, its start, group values (JSON), field


def cells(
    summary: Summary,
    records: Iterable[tuple[int, dict[str, Any]]],
    into: dict[Key, Cell] | None = None,
    spans: tuple[int, ...] = SPANS,
) -> dict[Key, Cell]:
    """The cells of records given as (timestamp, parsed body), added `into`.

    Records are counted into hour cells, which are then added up into the
    cells of each of `spans`.
    """
    hourly: dict[tuple[int, str, str], Cell] = {}
    groupings: dict[Any, str] = {}
    for timestamp, body in records:
        hour = timestamp - timestamp % HOUR
        group = _grouping([body.get(field) for field in summary.group_by], groupings)
        _cell(hourly, (hour, group, COUNT)).count += 1
        for field in summary.collect:
            value = body.get(field)
            if value is not None:
                _count(_cell(hourly, (hour, group, field)), value)
    found: dict[Key, Cell] = {} if into is None else into
    for (hour, group, field), cell in hourly.items():
        for span in spans:
            _merge(_cell(found, (span, hour - hour % span, group, field)), cell)
    return found


def _merge(cell: Cell, other: Cell) -> None:
    cell.count += other.count
    cell.numbers += other.numbers
    if other.total is not None:
        cell.total = other.total if cell.total is None else cell.total + other.total


def _grouping(values: list[Any], known: dict[Any, str]) -> str:
    """The JSON text of the group values, remembered while they are hashable.

    Types are part of the key: `true`, `1` and `1.0` are equal in Python but
    are different groups. Floats are never remembered: `0.0` and `-0.0` are
    equal too, and their texts differ.
    """
    if float in map(type, values):
        return _json(values)
    try:
        key = (tuple(values), tuple(map(type, values)))
        return known[key]
    except KeyError:
        text = known[key] = _json(values)
        return text
    except TypeError:  # a list or an object among the values
        return _json(values)


def _json(values: list[Any]) -> str:
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


def _count(cell: Cell, value: Any) -> None:
    cell.count += 1
    number = numeric(value)
    if number is not None:
        cell.numbers += 1
        cell.total = number if cell.total is None else cell.total + number


def _cell(found: dict[Any, Cell], key: Any) -> Cell:
    cell = found.get(key)
    if cell is None:
        cell = found[key] = Cell()
    return cell


def numeric(value: Any) -> int | float | None:
    """The value as a number, when it is one (booleans are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        return float(value)  # as SQLite reads an integer beyond 64 bits
    return value
