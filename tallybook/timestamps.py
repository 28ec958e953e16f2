"""Parsing and writing the date-times of records and queries (no I/O).

Accepted: RFC 3339 date-times (ISO 8601 extended form), with `T`, `t` or a
space between date and time, seconds required, any number of fraction digits
(kept to the microsecond, the rest truncated), and an offset written `Z`,
`+HH:MM` or `+HHMM`. A value with no offset is taken as UTC. Everything is
converted to UTC; a result outside years 1..9999 is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_PATTERN = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})"
    r"(?:[.,](\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
EXAMPLE = "2015-01-01T00:00:00Z"


class TimestampError(ValueError):
    """A value that is not an acceptable date-time; the text says why."""


def parse(value: str, *, offset_required: bool = False) -> datetime:
    """Parse a date-time string into an aware UTC datetime.

    Args:
        value: the text to parse.
        offset_required: refuse values without `Z` or an offset.

    Raises:
        TimestampError: the text is not a date-time, names an impossible
            date, or falls outside years 1..9999 in UTC.
    """
    match = _PATTERN.fullmatch(value)
    if match is None:
        raise TimestampError("is not a valid date-time")
    year, month, day, hour, minute, second = map(int, match.group(1, 2, 3, 4, 5, 6))
    fraction, zulu, sign, off_hours, off_minutes = match.group(7, 8, 9, 10, 11)
    if offset_required and not (zulu or sign):
        raise TimestampError("has no time zone")
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError:
        raise TimestampError("is not a possible date and time") from None
    if sign:
        return _shift(moment, sign, int(off_hours), int(off_minutes))
    return moment


def _shift(moment: datetime, sign: str, hours: int, minutes: int) -> datetime:
    """Turn a wall-clock time read as UTC into UTC, given its offset."""
    if hours > 23 or minutes > 59:
        raise TimestampError("has an impossible offset")
    offset = timedelta(hours=hours, minutes=minutes)
    try:
        return moment - offset if sign == "+" else moment + offset
    except OverflowError:
        raise TimestampError("falls outside the years 1 to 9999 in UTC") from None


def to_text(moment: datetime) -> str:
    """Write a UTC datetime the way tallybook answers: ISO 8601 with +00:00."""
    return moment.isoformat()


def to_micros(moment: datetime) -> int:
    """Microseconds since 1970-01-01T00:00:00Z (negative before)."""
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The inverse of `to_micros`."""
    return _EPOCH + timedelta(microseconds=micros)
