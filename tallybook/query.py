"""Query parsing and validation for reads (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable

from tallybook import timestamps
from tallybook.errors import InvalidRequest, Problem
from tallybook.store.base import Window

PARAMETERS = ("start_at", "end_at", "limit")


def parse_window(items: Iterable[tuple[str, str]]) -> Window:
    """Turn query-string pairs into the window of records to read.

    `start_at` is included and `end_at` excluded; both need a time zone.
    `limit` is a whole number; 0 or no limit means every record.

    Raises:
        InvalidRequest: an unknown or repeated parameter, or a bad value;
            every problem is listed.
    """
    values: dict[str, str] = {}
    problems: list[Problem] = []
    for name, value in items:
        if name not in PARAMETERS:
            problems.append(_unknown(name))
        elif name in values:
            problems.append(
                Problem(f"{name} is given twice; give it once.", field=name)
            )
        values[name] = value
    start = _moment(values, "start_at", problems)
    end = _moment(values, "end_at", problems)
    limit = _limit(values.get("limit"), problems)
    if problems:
        raise InvalidRequest(
            problems[0].message
            if len(problems) == 1
            else f"{len(problems)} problems in the query.",
            problems,
        )
    return Window(start=start, end=end, limit=limit)


def _unknown(name: str) -> Problem:
    known = ", ".join(PARAMETERS)
    return Problem(
        f"The query parameter {name[:40]!r} is not supported; use {known}.",
        field=name[:40],
    )


def _moment(values: dict[str, str], name: str, problems: list[Problem]) -> int | None:
    text = values.get(name)
    if text is None:
        return None
    try:
        moment = timestamps.parse(text, offset_required=True)
    except timestamps.TimestampError as exc:
        problems.append(
            Problem(
                f"{name} {text[:60]!r} {exc}; use e.g. {timestamps.EXAMPLE} (send a "
                "'+' offset as %2B).",
                field=name,
            )
        )
        return None
    return timestamps.to_micros(moment)


def _limit(text: str | None, problems: list[Problem]) -> int | None:
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        problems.append(
            Problem(
                f"limit {text[:40]!r} is not a whole number of records; use e.g. "
                "limit=100.",
                field="limit",
            )
        )
        return None
    return int(text) or None
