"""Summaries: declared, kept up to date on every kind of write, and used.

Each test compares what the summary answers with what the records answer:
a window starting one second after the hour cannot be served from hourly
cells, so the same query shifted by that second is answered from the records.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
from starlette.testclient import TestClient

from tallybook.admin import build_data_set
from tallybook.query import parse_query
from tallybook.records import Record
from tallybook.store import open_store
from tallybook.store import sqlite as sqlite_store
from tallybook.summaries import DAY, HOUR, Summary, cells
from tallybook.timestamps import to_micros
from tests.conftest import ALPHA, auth, cli

PATH = "/data/test-group/test-type"
NAME = "test_group_test_type"
READ = {"Authorization": f"Bearer {ALPHA}"}
WINDOW = "start_at=2013-03-01T00:00:00Z&end_at=2013-05-01T00:00:00Z"
SHIFTED = "start_at=2013-03-01T00:00:01Z&end_at=2013-05-01T00:00:00Z"
QUERIES = [
    "group_by=channel&collect=value:sum&collect=value:mean&collect=value:count",
    "period=week&group_by=channel&collect=value:sum",
    "period=day&collect=value:mean",
    "period=month&group_by=channel&group_by=region&flatten=true&collect=value:sum",
    "group_by=region&filter_by=channel:web&collect=value:count",
    "group_by=channel&filter_by=region:3",
    "period=hour&filter_by=flag:true&collect=value:sum",
]


def _record(n: int, **fields: Any) -> dict[str, Any]:
    day, hour = 1 + n % 30, n % 24
    return {
        "_id": f"r{n}",
        "_timestamp": f"2013-03-{day:02d}T{hour:02d}:{1 + n % 59:02d}:00Z",
        "channel": ("web", "phone", "post")[n % 3],
        "region": n % 4 if n % 5 else None,
        "flag": n % 2 == 0,
        "value": n if n % 7 else n / 4,
        **fields,
    }


RECORDS = [_record(n) for n in range(120)]


def _summarise(store: str, summary: str | None = "channel,region,flag:value") -> None:
    flag = ["--summary", summary] if summary else ["--no-summary"]
    result = cli("datasets", "update", NAME, *flag, "--store", store)
    assert result.exit_code == 0, result.output


def _read(client: TestClient, query: str, window: str = WINDOW) -> Any:
    answer = client.get(f"{PATH}?{query}&{window}", headers=READ)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def _served(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    found = re.findall(r'tallybook_aggregate_reads_total\{source="(\w+)"\} (\S+)', text)
    return {source: float(count) for source, count in found}


def _agree(client: TestClient) -> None:
    """Every query answers the same from the summary as from the records."""
    for query in QUERIES:
        # The shifted window leaves out the first second, where no record is.
        from_records = json.dumps(_read(client, query, SHIFTED)).replace(
            "2013-03-01T00:00:01+00:00", "2013-03-01T00:00:00+00:00"
        )
        assert _read(client, query) == json.loads(from_records), query


@pytest.fixture
def summarised(client: TestClient, store: str) -> TestClient:
    _summarise(store)
    assert client.post(PATH, json=RECORDS, headers=auth()).status_code == 200
    return client


def test_summary_answers_like_the_records(summarised: TestClient) -> None:
    _agree(summarised)
    assert _served(summarised) == {"records": len(QUERIES), "summary": len(QUERIES)}


def test_summary_follows_replaced_records(summarised: TestClient) -> None:
    moved = [_record(n, value=n * 1.5, channel="post") for n in range(0, 120, 4)]
    later = [{**r, "_timestamp": "2013-04-02T05:00:00Z"} for r in moved[::2]]
    twice = [_record(3, value=1), _record(3, value=2.25)]
    twice += [_record(901, value=1), _record(901, value=2)]
    for batch in (moved, later, twice):
        assert summarised.post(PATH, json=batch, headers=auth()).status_code == 200
    _agree(summarised)
    counts = {
        row["channel"]: row["_count"] for row in _read(summarised, "group_by=channel")
    }
    assert counts == {"phone": 31, "post": 60, "web": 30}


def test_summary_follows_put_and_empty(summarised: TestClient) -> None:
    fewer = RECORDS[::3]
    assert summarised.put(PATH, json=fewer, headers=auth()).status_code == 200
    _agree(summarised)
    assert _read(summarised, "group_by=channel") == [
        {"channel": "web", "_count": len(fewer)}
    ]
    assert summarised.put(PATH, json=[], headers=auth()).status_code == 200
    assert _read(summarised, "group_by=channel") == []
    assert _read(summarised, "period=month&collect=value:sum") == [
        {"_start_at": "2013-03-01T00:00:00+00:00",
         "_end_at": "2013-04-01T00:00:00+00:00", "_count": 0, "value:sum": None},
        {"_start_at": "2013-04-01T00:00:00+00:00",
         "_end_at": "2013-05-01T00:00:00+00:00", "_count": 0, "value:sum": None},
    ]  # fmt: skip


def test_summary_set_on_stored_records_and_dropped(
    client: TestClient, store: str
) -> None:
    assert client.post(PATH, json=RECORDS, headers=auth()).status_code == 200
    before = [_read(client, query) for query in QUERIES]
    _summarise(store)
    assert [_read(client, query) for query in QUERIES] == before
    _summarise(store, "region:value")
    _agree(client)
    _summarise(store, None)
    assert [_read(client, query) for query in QUERIES] == before


def test_summary_refuses_sums_of_text_like_the_records(
    summarised: TestClient,
) -> None:
    text = [_record(500, value="many")]
    assert summarised.post(PATH, json=text, headers=auth()).status_code == 200
    for window in (WINDOW, SHIFTED):
        answer = summarised.get(
            f"{PATH}?group_by=channel&collect=value:sum&{window}", headers=READ
        )
        assert answer.status_code == 400
        assert "value holds values that are not numbers" in answer.json()["message"]
    counted = _read(summarised, "group_by=channel&collect=value:count")
    assert [row["value:count"] for row in counted] == [40, 41, 40]


def test_summary_setting_is_checked(client: TestClient, store: str) -> None:
    for bad in ("_id:value", "channel:x-y", "a,b,c,d,e,f,g,h,i,j,k:v"):
        result = cli("datasets", "update", NAME, "--summary", bad, "--store", store)
        assert result.exit_code == 2, bad
    shown = cli("datasets", "show", NAME, "--store", store).output
    assert '"summary": null' in shown


@pytest.mark.parametrize(
    ("query", "served"),
    [
        ("group_by=a&collect=v:sum&collect=v:mean&collect=v:count", True),
        (
            "period=day&filter_by=a:x&start_at=2013-01-01T05:00:00Z"
            "&end_at=2013-01-03T00:00:00Z",
            True,
        ),
        ("group_by=a&collect=v:set", False),
        ("group_by=a&collect=w:sum", False),
        ("group_by=z", False),
        ("group_by=a&filter_by=z:1", False),
        ("group_by=a&filter_by_prefix=a:x", False),
        ("group_by=a&start_at=2013-01-01T05:30:00Z", False),
        ("group_by=a&end_at=2013-01-01T05:00:00Z&inclusive=true", False),
        ("start_at=2013-01-01T00:00:00Z", False),
    ],
)
def test_summary_serves_only_what_its_cells_hold(query: str, served: bool) -> None:
    parsed = parse_query(parse_qsl(query), datetime(2014, 1, 1, tzinfo=UTC))
    assert Summary(("a",), ("v",)).serves(parsed) is served


def test_summary_cells_of_records() -> None:
    summary = Summary(("a",), ("v",))
    records: list[tuple[int, dict[str, Any]]] = [
        (5, {"a": "x", "v": 2}),
        (HOUR - 1, {"a": "x", "v": 0.5}),
        (HOUR, {"a": "x", "v": "text"}),
        (HOUR + 1, {"v": True}),
        (-1, {"a": None, "v": None}),
    ]
    found = cells(summary, records)
    shown = {key: (c.count, c.numbers, c.total) for key, c in found.items()}
    assert {key[1:]: value for key, value in shown.items() if key[0] == HOUR} == {
        (0, '["x"]', ""): (2, 0, None),
        (0, '["x"]', "v"): (2, 2, 2.5),
        (HOUR, '["x"]', ""): (1, 0, None),
        (HOUR, '["x"]', "v"): (1, 0, None),
        (HOUR, "[null]", ""): (1, 0, None),
        (HOUR, "[null]", "v"): (1, 0, None),
        (-HOUR, "[null]", ""): (1, 0, None),
    }
    assert {key[1:]: value for key, value in shown.items() if key[0] == DAY} == {
        (0, '["x"]', ""): (3, 0, None),
        (0, '["x"]', "v"): (3, 2, 2.5),
        (0, "[null]", ""): (1, 0, None),
        (0, "[null]", "v"): (1, 0, None),
        (-DAY, "[null]", ""): (1, 0, None),
    }


def test_sqlite_cells_equal_a_recount(tmp_path: Path) -> None:
    """After writes of every kind, the stored cells are those of a recount."""
    location = str(tmp_path / "cells.db")
    summary = "channel,region:value"

    async def scenario() -> None:
        async with open_store(location) as store:
            data_set = await store.create_data_set(
                build_data_set("test-group", "test-type", summary=summary)
            )
            for batch in (
                RECORDS,
                RECORDS[::5],
                [_record(7, value=0.1), _record(7, value=0.2)],
                [_record(900, value=1), _record(900, value=5)],
            ):
                # Straight to the store: duplicates in one call are the store's
                # to resolve (HTTP requests arrive with them removed).
                rows = [_row(record) for record in batch]
                await store.write(data_set, rows)

    asyncio.run(scenario())
    kept = _cells(location)
    cli("datasets", "update", NAME, "--summary", "region:value", "--store", location)
    cli("datasets", "update", NAME, "--summary", summary, "--store", location)
    assert _cells(location) == kept and len(kept) > 100


def _row(record: dict[str, Any]) -> Record:
    moment = datetime.fromisoformat(record["_timestamp"])
    return Record(record["_id"], to_micros(moment), json.dumps(record))


def _cells(location: str) -> list[Any]:
    with sqlite3.connect(location) as db:
        return db.execute(
            "SELECT span, timestamp, grouping, field, count, numbers, total "
            "FROM summaries ORDER BY span, timestamp, grouping, field"
        ).fetchall()


def test_sqlite_store_of_schema_1_is_upgraded(tmp_path: Path) -> None:
    location = tmp_path / "old.db"
    with sqlite3.connect(location) as db:
        db.executescript(sqlite_store._MIGRATIONS[0])
        db.execute(
            "INSERT INTO data_sets (name, data_group, data_type, created_at) "
            "VALUES ('g_t', 'g', 't', '2013-01-01T00:00:00+00:00')"
        )
        db.execute("PRAGMA user_version = 1")
    result = cli("migrate", "--store", str(location))
    assert result.output == "the schema went from version 1 to 2\n"
    updated = cli("datasets", "update", "g_t", "--summary", "a:b",
                  "--store", str(location))  # fmt: skip
    assert json.loads(updated.output)["summary"] == {
        "group_by": ["a"],
        "collect": ["b"],
    }


def _both(client: TestClient, query: str) -> tuple[Any, Any]:
    """The answers from the summary and from the records (window shifted)."""
    from_records = json.dumps(_read(client, query, SHIFTED)).replace(
        "2013-03-01T00:00:01+00:00", "2013-03-01T00:00:00+00:00"
    )
    return _read(client, query), json.loads(from_records)


@pytest.fixture
def plain_summary(client: TestClient, store: str) -> TestClient:
    """The data set with the summary `a:v` and no records."""
    _summarise(store, "a:v")
    return client


def _at(hour: int, **fields: Any) -> dict[str, Any]:
    return {"_timestamp": f"2013-03-01T{hour:02d}:05:00Z", **fields}


def test_summary_keeps_zero_and_negative_zero_apart(plain_summary: TestClient) -> None:
    batch = [_at(1, a=0.0, v=1), _at(1, a=-0.0, v=2), _at(1, _id="z", a="k", v=3)]
    assert plain_summary.post(PATH, json=batch, headers=auth()).status_code == 200
    replaced = [_at(1, _id="z", a="k", v=4)]  # makes the hour be counted again
    assert plain_summary.post(PATH, json=replaced, headers=auth()).status_code == 200
    summary, records = _both(plain_summary, "group_by=a&collect=v:sum")
    assert summary == records and len(summary) == 3


def test_summary_totals_past_64_bits_become_floats(plain_summary: TestClient) -> None:
    big = 9_000_000_000_000_000_000
    writes = [
        [_at(1, a="x", v=big), _at(1, a="x", v=big)],  # one hour's cell
        [_at(2, a="x", v=big)],  # the day's cell
        [_at(3, _id="r", a="x", v=1)],
        [_at(3, _id="r", a="x", v=2)],  # a replacement: the day is added up again
    ]
    for batch in writes:
        assert plain_summary.post(PATH, json=batch, headers=auth()).status_code == 200
    for query in (
        "group_by=a&collect=v:sum&collect=v:mean",
        "period=day&collect=v:sum",
    ):
        summary, records = _both(plain_summary, query)
        assert summary == records, query
    assert summary[0]["v:sum"] == pytest.approx(3 * big + 2)


def test_summary_of_long_group_values(plain_summary: TestClient) -> None:
    long = "x" * 20_000
    batch = [_at(1, a=long, v=1), _at(2, a=long, v=2)]
    assert plain_summary.post(PATH, json=batch, headers=auth()).status_code == 200
    summary, records = _both(plain_summary, "group_by=a&collect=v:sum")
    assert summary == records == [{"a": long, "_count": 2, "v:sum": 3}]


@pytest.mark.parametrize("text", ["1_000", "+1000", ".5", " 1000", "1e400"])
def test_filter_values_that_python_reads_as_numbers_match_text_only(
    plain_summary: TestClient, text: str
) -> None:
    batch = [_at(1, a=1000, v=1), _at(1, a=0.5, v=1), _at(1, a=text, v=2)]
    assert plain_summary.post(PATH, json=batch, headers=auth()).status_code == 200
    query = f"group_by=a&filter_by=a:{quote(text)}&collect=v:sum"
    summary, records = _both(plain_summary, query)
    assert summary == records == [{"a": text, "_count": 1, "v:sum": 2}]
