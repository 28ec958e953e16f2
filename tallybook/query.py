"""Query parsing and validation for reads (no I/O).

`parse_query` turns the query string of a read into a `Query`, reporting
every bad parameter at once. The language is the original read API's; see
docs/query.md for each parameter and where tallybook differs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from tallybook import periods, timestamps
from tallybook.errors import InvalidRequest, Problem

MANY = ("group_by", "collect", "filter_by", "filter_by_prefix")
ONCE = (
    "start_at",
    "end_at",
    "duration",
    "period",
    "sort_by",
    "limit",
    "flatten",
    "inclusive",
    "format",
)
METHODS = ("sum", "count", "mean", "set")
# One row per period: 100,000 rows (11 years of hours) take about a second
# and 10 MB of JSON; every hour of the years 1..9999 would take hours.
MAX_PERIODS = 100_000
FORMATS = ("json", "csv")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?", re.ASCII)


def filter_number(text: str) -> int | float | None:
    """The number a `filter_by` value spells in JSON's syntax, if it does.

    Only JSON's own forms count (`1000`, `-2.5`, `1e3`), so that both stores
    read a value alike: `1_000`, `+1` or ` 1` match text only.
    """
    match = _JSON_NUMBER.fullmatch(text)
    if match is None:
        return None
    if match.group(1) is None and match.group(2) is None:
        return int(text)
    number = float(text)
    return number if number - number == 0 else None  # finite only


@dataclass(frozen=True)
class Collect:
    """One `collect`: a field and a method; `bare` when no method was named."""

    field: str
    method: str
    bare: bool = False

    @property
    def key(self) -> str:
        """The output key, `field:method`."""
        return f"{self.field}:{self.method}"


@dataclass(frozen=True)
class Query:
    """A validated read.

    Attributes:
        start: records at or after this instant.
        end: records before it (or at it, when `inclusive`).
        window: the periods to fill, [first start, end), when `period` is set.
        inclusive: whether `end` itself is included.
        period: hour, day, week, month, quarter or year.
        group_by: fields to group by.
        collect: fields to gather in each group.
        filters: field and value pairs records must equal.
        prefixes: field and prefix pairs records' text must start with.
        sort_by: a key and whether descending.
        limit: most rows (or groups); None for all.
        flatten: flat rows instead of nested `values`.
        format: json or csv.
    """

    start: datetime | None = None
    end: datetime | None = None
    window: tuple[datetime, datetime] | None = None
    inclusive: bool = False
    period: str | None = None
    group_by: tuple[str, ...] = ()
    collect: tuple[Collect, ...] = ()
    filters: tuple[tuple[str, str], ...] = ()
    prefixes: tuple[tuple[str, str], ...] = ()
    sort_by: tuple[str, bool] | None = None
    limit: int | None = None
    flatten: bool = False
    format: str = "json"

    @property
    def raw(self) -> bool:
        """Whether records are returned as stored (no group_by, no period)."""
        return not self.group_by and self.period is None

    @property
    def order(self) -> tuple[str | None, str]:
        """How to order raw records: a field or None, and ASC or DESC.

        None means by `_timestamp`, then `_id`.
        """
        if self.sort_by is None:
            return None, "ASC"
        key, descending = self.sort_by
        return (None if key == "_timestamp" else key), "DESC" if descending else "ASC"


def parse_query(items: Iterable[tuple[str, str]], now: datetime) -> Query:
    """Validate query-string pairs into a Query; `now` anchors relative windows.

    Raises:
        InvalidRequest: every unknown, repeated or bad parameter, each named.
    """
    problems: list[Problem] = []
    values = _gather(items, problems)
    parsed = _Parser(values, problems)
    query = parsed.query(now)
    if problems:
        message = (
            problems[0].message
            if len(problems) == 1
            else (f"{len(problems)} problems in the query.")
        )
        raise InvalidRequest(message, problems)
    assert query is not None
    return query


def _gather(
    items: Iterable[tuple[str, str]], problems: list[Problem]
) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in items:
        if name not in MANY and name not in ONCE:
            # Written with lone surrogates escaped, which JSON cannot carry.
            shown = name[:40].encode("utf-8", "backslashreplace").decode()
            known = ", ".join((*ONCE, *MANY))
            message = f"The query parameter {shown!r} is not supported; use {known}."
            problems.append(Problem(message, field=shown))
            continue
        if name in ONCE and name in values:
            problems.append(
                Problem(f"{name} is given twice; give it once.", field=name)
            )
            continue
        values.setdefault(name, []).append(value)
    return values


class _Parser:
    """Parses each parameter, adding a Problem for each bad one."""

    def __init__(self, values: dict[str, list[str]], problems: list[Problem]) -> None:
        self.values = values
        self.problems = problems

    def bad(self, field: str, message: str) -> None:
        self.problems.append(Problem(message, field=field))

    def one(self, name: str) -> str | None:
        found = self.values.get(name)
        return found[0] if found else None

    def query(self, now: datetime) -> Query | None:
        start, end = self.moment("start_at"), self.moment("end_at")
        period = self.period()
        group_by = self.group_by()
        collect = self.collect(group_by, period)
        window, start, end = self.window(start, end, period, now)
        if window is not None:
            self.check_size(period or "", window)
        sort_by = self.sort_by(period, group_by)
        limit = self.whole("limit", zero_allowed=True)
        if limit is not None and period and not group_by:
            self.bad(
                "limit",
                "limit needs group_by when there is a period: a period "
                "query always returns every period of its window.",
            )
        inclusive = self.flag("inclusive")
        if inclusive and start is None and end is None:
            self.bad("inclusive", "inclusive needs start_at or end_at.")
        if self.problems:
            return None
        return Query(
            start=start,
            end=end,
            window=window,
            inclusive=inclusive,
            period=period,
            group_by=group_by,
            collect=collect,
            filters=self.pairs("filter_by"),
            prefixes=self.pairs("filter_by_prefix"),
            sort_by=sort_by,
            limit=limit or None,
            flatten=self.flag("flatten"),
            format=self.format(),
        )

    def moment(self, name: str) -> datetime | None:
        text = self.one(name)
        if text is None:
            return None
        try:
            return timestamps.parse(text, offset_required=True)
        except timestamps.TimestampError as exc:
            self.bad(
                name,
                f"{name} {text[:60]!r} {exc}; use e.g. {timestamps.EXAMPLE} "
                "(send a '+' offset as %2B).",
            )
            return None

    def period(self) -> str | None:
        text = self.one("period")
        if text is not None and text not in periods.PERIODS:
            self.bad(
                "period",
                f"period {text[:40]!r} is not one of {', '.join(periods.PERIODS)}.",
            )
            return None
        return text

    def whole(self, name: str, *, zero_allowed: bool) -> int | None:
        text = self.one(name)
        if text is None:
            return None
        if not (text.isascii() and text.isdigit() and len(text) <= 9):
            self.bad(
                name, f"{name} {text[:40]!r} is not a whole number; use e.g. {name}=10."
            )
            return None
        if int(text) == 0 and not zero_allowed:
            self.bad(name, f"{name} must be 1 or more.")
            return None
        return int(text)

    def flag(self, name: str) -> bool:
        text = self.one(name)
        if text not in (None, "true", "false"):
            self.bad(name, f"{name} must be true or false, not {text[:40]!r}.")
        return text == "true"

    def format(self) -> str:
        text = self.one("format") or "json"
        if text not in FORMATS:
            self.bad("format", f"format must be json or csv, not {text[:40]!r}.")
        return text

    def field(self, parameter: str, name: str, *, internal: bool) -> bool:
        if not _FIELD.fullmatch(name):
            self.bad(
                parameter,
                f"{parameter} names {name[:60]!r}, which is not a "
                "field name (letters, digits and '_').",
            )
            return False
        if not internal and name.startswith("_"):
            self.bad(parameter, f"{parameter} cannot use the internal field {name!r}.")
            return False
        return True

    def group_by(self) -> tuple[str, ...]:
        fields = self.values.get("group_by", [])
        good = [f for f in fields if self.field("group_by", f, internal=False)]
        return tuple(dict.fromkeys(good))

    def collect(
        self, group_by: tuple[str, ...], period: str | None
    ) -> tuple[Collect, ...]:
        found: list[Collect] = []
        for text in self.values.get("collect", []):
            field, _, method = text.partition(":")
            if method and method not in METHODS:
                self.bad(
                    "collect",
                    f"collect {text[:60]!r}: the method must be one "
                    f"of {', '.join(METHODS)}.",
                )
            elif self.field("collect", field, internal=False):
                if field in group_by:
                    self.bad("collect", f"collect {field!r} is also a group_by field.")
                found.append(Collect(field, method or "set", bare=not method))
        if found and not group_by and period is None:
            self.bad("collect", "collect needs group_by or period.")
        return tuple(dict.fromkeys(found))

    def pairs(self, name: str) -> tuple[tuple[str, str], ...]:
        found = []
        for text in self.values.get(name, []):
            field, colon, value = text.partition(":")
            if not colon:
                self.bad(
                    name,
                    f"{name} {text[:60]!r} needs a field and a value "
                    "separated by ':', e.g. authority:Westminster.",
                )
            elif "\x00" in value:
                self.bad(name, f"{name} {text[:60]!r}: a value cannot hold U+0000.")
            elif self.field(name, field, internal=True):
                found.append((field, value))
        return tuple(found)

    def sort_by(
        self, period: str | None, group_by: tuple[str, ...]
    ) -> tuple[str, bool] | None:
        text = self.one("sort_by")
        if text is None:
            return None
        key, _, direction = text.rpartition(":")
        if direction not in ("ascending", "descending") or not key or "\x00" in key:
            self.bad(
                "sort_by",
                f"sort_by {text[:60]!r} must be field:ascending or field:descending.",
            )
            return None
        if period and not group_by:
            self.bad(
                "sort_by",
                "sort_by needs group_by when there is a period: "
                "periods are always in time order.",
            )
            return None
        return key, direction == "descending"

    def window(
        self,
        start: datetime | None,
        end: datetime | None,
        period: str | None,
        now: datetime,
    ) -> tuple[tuple[datetime, datetime] | None, datetime | None, datetime | None]:
        duration = self.whole("duration", zero_allowed=False)
        if duration is not None:
            return self.relative(start, end, period, duration, now)
        if period is None:
            return None, start, end
        if start is None or end is None:
            self.bad(
                "period",
                "a period query needs both start_at and end_at, or a duration.",
            )
            return None, start, end
        if end < start:
            self.bad("end_at", "end_at is before start_at.")
            return None, start, end
        last = periods.start_of(period, end)
        try:
            if last < end:
                periods.add(period, last, 1)
        except OverflowError:
            self.bad(
                "end_at",
                f"end_at falls in a {period} that ends after the year 9999; "
                "use an earlier end_at.",
            )
            return None, start, end
        return (periods.start_of(period, start), end), start, end

    def check_size(self, period: str, window: tuple[datetime, datetime]) -> None:
        count = periods.count(period, *window)
        if count > MAX_PERIODS:
            self.bad(
                "period",
                f"the window holds {count} {period}s; the limit is "
                f"{MAX_PERIODS} periods: use a longer period or a shorter window.",
            )

    def relative(
        self,
        start: datetime | None,
        end: datetime | None,
        period: str | None,
        duration: int,
        now: datetime,
    ) -> tuple[tuple[datetime, datetime] | None, datetime | None, datetime | None]:
        if period is None:
            self.bad("duration", "duration needs a period, such as period=day.")
            return None, start, end
        if start is not None and end is not None:
            self.bad("duration", "give start_at or end_at with duration, not both.")
            return None, start, end
        anchor = periods.start_of(period, start or end or now)
        step = duration if start is not None else -duration
        try:
            other = periods.add(period, anchor, step)
        except OverflowError:
            self.bad("duration", "duration reaches beyond the years 1 to 9999.")
            return None, start, end
        first, last = sorted((anchor, other))
        return (first, last), first, last
