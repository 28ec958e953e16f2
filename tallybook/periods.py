"""Periods: hour, day, week (from Monday), month, quarter, year, all in UTC."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

PERIODS = ("hour", "day", "week", "month", "quarter", "year")
_FIXED = {
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(days=7),
}
_MONTHS = {"month": 1, "quarter": 3, "year": 12}


def start_of(period: str, moment: datetime) -> datetime:
    """The start of the period holding `moment`."""
    if period == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    first = day.replace(day=1)
    if period == "month":
        return first
    if period == "quarter":
        return first.replace(month=(first.month - 1) // 3 * 3 + 1)
    return first.replace(month=1)


def add(period: str, moment: datetime, count: int) -> datetime:
    """`moment` moved by `count` periods (calendar months for month and up).

    Raises:
        OverflowError: the result falls outside the years 1 to 9999.
    """
    if period in _FIXED:
        return moment + _FIXED[period] * count
    months = moment.year * 12 + moment.month - 1 + _MONTHS[period] * count
    year, month = divmod(months, 12)
    if not 1 <= year <= 9999:
        raise OverflowError("date value out of range")
    return moment.replace(year=year, month=month + 1)


def is_boundary(period: str, moment: datetime) -> bool:
    """Whether `moment` is the start of a period."""
    return start_of(period, moment) == moment


def buckets(period: str, start: datetime, end: datetime) -> Iterator[datetime]:
    """The starts of the periods covering [start, end), end rounded up."""
    current = start_of(period, start)
    while current < end:
        yield current
        current = add(period, current, 1)


def count(period: str, start: datetime, end: datetime) -> int:
    """How many periods `buckets` yields for [start, end), or slightly more.

    Exact for hour, day and week; for months, quarters and years it may count
    one more (they are few: at most 120,000 months fit in the years 1..9999).
    """
    first = start_of(period, start)
    if end <= first:
        return 0
    if period in _FIXED:
        return -(-(end - first) // _FIXED[period])
    months = (end.year - first.year) * 12 + end.month - first.month
    return months // _MONTHS[period] + 1
