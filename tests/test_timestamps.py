"""Date-time parsing (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tallybook import timestamps


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        pytest.param("2014-01-06T09:30:00+05:30", datetime(2014, 1, 6, 4, tzinfo=UTC),
                     id="offset"),
        pytest.param("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC),
                     id="year-1"),
        pytest.param("9999-12-31T23:59:59.999999999Z",
                     datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                     id="last-microsecond"),
        pytest.param("2014-01-06T00:00:00,5-00:30",
                     datetime(2014, 1, 6, 0, 30, 0, 500000, tzinfo=UTC), id="comma"),
    ],
)  # fmt: skip
def test_timestamps_parse(text: str, moment: datetime) -> None:
    assert timestamps.parse(text) == moment


@pytest.mark.parametrize(
    "text",
    ["2014-02-29T00:00:00Z", "2014-01-06T24:00:00Z", "2014-01-06T00:00:60Z",
     "2014-01-06T00:00Z", "20140106T000000Z", "2014-W02-1T00:00:00Z",
     " 2014-01-06T00:00:00Z", "2014-01-06T00:00:00+01:60", "\uff11999-01-01T00:00:00Z"],
)  # fmt: skip
def test_timestamps_refused(text: str) -> None:
    with pytest.raises(timestamps.TimestampError):
        timestamps.parse(text)


def test_timestamps_offset_required_for_queries() -> None:
    with pytest.raises(timestamps.TimestampError, match="has no time zone"):
        timestamps.parse("2014-01-06T00:00:00", offset_required=True)


@pytest.mark.parametrize("micros", [0, -1, 1_389_916_800_123_456, -62135596800000000])
def test_timestamps_micros_round_trip(micros: int) -> None:
    assert timestamps.to_micros(timestamps.from_micros(micros)) == micros
