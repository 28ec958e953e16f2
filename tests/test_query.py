"""The read API's query language, on both stores, with whole expected bodies."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import ALPHA, auth, cli

PATH = "/data/test-group/test-type"
READ = {"Authorization": f"Bearer {ALPHA}"}
RECORDS = [
    {"_id": "r1", "_timestamp": "2013-03-11T10:00:00Z", "authority": "Westminster",
     "count": 2, "kind": "a", "flag": True},
    {"_id": "r2", "_timestamp": "2013-03-12T11:00:00Z", "authority": "Camden",
     "count": 5, "kind": "a", "flag": False},
    {"_id": "r3", "_timestamp": "2013-03-18T09:00:00Z", "authority": "Westminster",
     "count": 1, "kind": "b"},
    {"_id": "r4", "_timestamp": "2013-03-20T00:00:00Z", "authority": "Westminster",
     "count": 3, "kind": "a"},
    {"_id": "r5", "_timestamp": "2013-04-02T12:00:00Z", "authority": "Camden",
     "count": 4, "kind": "b", "note": "5"},
]  # fmt: skip
WINDOW = "start_at=2013-03-11T00:00:00Z&end_at=2013-04-01T00:00:00Z"
W1 = {"_start_at": "2013-03-11T00:00:00+00:00", "_end_at": "2013-03-18T00:00:00+00:00"}
W2 = {"_start_at": "2013-03-18T00:00:00+00:00", "_end_at": "2013-03-25T00:00:00+00:00"}
W3 = {"_start_at": "2013-03-25T00:00:00+00:00", "_end_at": "2013-04-01T00:00:00+00:00"}


@pytest.fixture(params=["records", "summary"])
def data(request: pytest.FixtureRequest, client: TestClient, store: str) -> TestClient:
    """The records stored; with "summary", the data set also keeps a summary."""
    if request.param == "summary":
        result = cli("datasets", "update", "test_group_test_type",
                     "--summary", "authority,kind:count", "--store", store)  # fmt: skip
        assert result.exit_code == 0, result.output
    assert client.post(PATH, json=RECORDS, headers=auth()).status_code == 200
    return client


def _get(client: TestClient, query: str) -> Any:
    answer = client.get(f"{PATH}?{query}", headers=READ)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["_id"] for row in rows]


def test_query_period_fills_empty_periods(data: TestClient) -> None:
    assert _get(data, f"period=week&{WINDOW}") == [
        {**W1, "_count": 2}, {**W2, "_count": 2}, {**W3, "_count": 0},
    ]  # fmt: skip


def test_query_group_by(data: TestClient) -> None:
    assert _get(data, "group_by=authority") == [
        {"authority": "Camden", "_count": 2},
        {"authority": "Westminster", "_count": 3},
    ]


def test_query_group_by_two_fields(data: TestClient) -> None:
    assert _get(data, "group_by=authority&group_by=kind") == [
        {"authority": "Camden", "kind": "a", "_count": 1},
        {"authority": "Camden", "kind": "b", "_count": 1},
        {"authority": "Westminster", "kind": "a", "_count": 2},
        {"authority": "Westminster", "kind": "b", "_count": 1},
    ]


def test_query_collect_each_method(data: TestClient) -> None:
    query = ("group_by=authority&collect=count:sum&collect=count:mean"
             "&collect=count:count&collect=kind")  # fmt: skip
    assert _get(data, query) == [
        {"authority": "Camden", "_count": 2, "count:sum": 9, "count:mean": 4.5,
         "count:count": 2, "kind:set": ["a", "b"], "kind": ["a", "b"]},
        {"authority": "Westminster", "_count": 3, "count:sum": 6, "count:mean": 2.0,
         "count:count": 3, "kind:set": ["a", "b"], "kind": ["a", "b"]},
    ]  # fmt: skip


def test_query_group_by_and_period_nested(data: TestClient) -> None:
    query = f"group_by=authority&period=week&collect=count:sum&{WINDOW}"
    assert _get(data, query) == [
        {"authority": "Camden", "_count": 1, "count:sum": 5, "_group_count": 1,
         "values": [{**W1, "_count": 1, "count:sum": 5},
                    {**W2, "_count": 0, "count:sum": None},
                    {**W3, "_count": 0, "count:sum": None}]},
        {"authority": "Westminster", "_count": 3, "count:sum": 6, "_group_count": 2,
         "values": [{**W1, "_count": 1, "count:sum": 2},
                    {**W2, "_count": 2, "count:sum": 4},
                    {**W3, "_count": 0, "count:sum": None}]},
    ]  # fmt: skip


def test_query_group_by_and_period_flattened(data: TestClient) -> None:
    query = f"group_by=authority&period=week&flatten=true&{WINDOW}"
    assert _get(data, query) == [
        {"authority": "Camden", **W1, "_count": 1},
        {"authority": "Westminster", **W1, "_count": 1},
        {"authority": "Camden", **W2, "_count": 0},
        {"authority": "Westminster", **W2, "_count": 2},
        {"authority": "Camden", **W3, "_count": 0},
        {"authority": "Westminster", **W3, "_count": 0},
    ]


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        pytest.param("filter_by=authority:Camden", ["r2", "r5"], id="text"),
        pytest.param("filter_by=count:5", ["r2"], id="number"),
        pytest.param("filter_by=note:5", ["r5"], id="number-text"),
        pytest.param("filter_by=flag:true", ["r1"], id="boolean"),
        pytest.param("filter_by=kind:a&filter_by=authority:Westminster",
                     ["r1", "r4"], id="anded"),
        pytest.param("filter_by_prefix=authority:West", ["r1", "r3", "r4"],
                     id="prefix"),
        pytest.param("filter_by_prefix=authority:%25", [], id="prefix-no-wildcard"),
        pytest.param("sort_by=count:descending&limit=2", ["r2", "r5"], id="sort-limit"),
        pytest.param("sort_by=note:ascending", ["r5", "r1", "r2", "r3", "r4"],
                     id="sort-missing-last"),
        pytest.param("sort_by=_timestamp:descending&limit=1", ["r5"], id="latest"),
        pytest.param("start_at=2013-03-18T09:00:00Z&end_at=2013-03-20T00:00:00Z"
                     "&inclusive=true", ["r3", "r4"], id="inclusive"),
    ],
)  # fmt: skip
def test_query_raw(data: TestClient, query: str, ids: list[str]) -> None:
    assert _ids(_get(data, query)) == ids


def test_query_group_sort_by_collect_key(data: TestClient) -> None:
    query = "group_by=kind&collect=count:sum&sort_by=count:sum:descending&limit=1"
    assert _get(data, query) == [{"kind": "a", "_count": 3, "count:sum": 10}]


def test_query_sort_by_missing_key_is_no_error(data: TestClient) -> None:
    rows = _get(data, "group_by=authority&sort_by=nothing:ascending")
    assert [row["authority"] for row in rows] == ["Camden", "Westminster"]


def test_query_duration_from_start(data: TestClient) -> None:
    rows = _get(data, "period=day&duration=2&start_at=2013-03-11T12:00:00Z")
    assert [(row["_start_at"][:10], row["_count"]) for row in rows] == [
        ("2013-03-11", 1), ("2013-03-12", 1),
    ]  # fmt: skip


def test_query_duration_back_from_end(data: TestClient) -> None:
    rows = _get(data, "period=month&duration=2&end_at=2013-05-15T00:00:00Z")
    assert [(row["_start_at"][:10], row["_count"]) for row in rows] == [
        ("2013-03-01", 4), ("2013-04-01", 1),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("period", "starts"),
    [
        ("month", [("2013-03-01", 4), ("2013-04-01", 1)]),
        ("quarter", [("2013-01-01", 4), ("2013-04-01", 1)]),
        ("year", [("2013-01-01", 5)]),
        ("day", [("2013-03-11", 1), ("2013-03-12", 1)]),
    ],
)
def test_query_periods(data: TestClient, period: str, starts: list[Any]) -> None:
    end = "2013-03-13T00:00:00Z" if period == "day" else "2013-12-31T00:00:00Z"
    rows = _get(data, f"period={period}&start_at=2013-03-11T00:00:00Z&end_at={end}")
    found = [(row["_start_at"][:10], row["_count"]) for row in rows if row["_count"]]
    assert found == starts


def test_query_hours(data: TestClient) -> None:
    rows = _get(data, "period=hour&start_at=2013-03-11T09:30:00Z"
                "&end_at=2013-03-11T11:00:00Z")  # fmt: skip
    nine, ten, eleven = (f"2013-03-11T{h}:00:00+00:00" for h in ("09", "10", "11"))
    assert rows == [
        {"_start_at": nine, "_end_at": ten, "_count": 0},
        {"_start_at": ten, "_end_at": eleven, "_count": 1},
    ]


def test_query_csv(data: TestClient) -> None:
    answer = data.get(f"{PATH}?group_by=authority&collect=kind:set&format=csv",
                      headers=READ)  # fmt: skip
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.text == (
        'authority,_count,kind:set\nCamden,2,"[""a"", ""b""]"\n'
        'Westminster,3,"[""a"", ""b""]"\n'
    )


def test_query_csv_raw(data: TestClient) -> None:
    answer = data.get(f"{PATH}?filter_by=_id:r1&format=csv", headers=READ)
    assert answer.text == (
        "_id,_timestamp,authority,count,flag,kind\n"
        "r1,2013-03-11T10:00:00+00:00,Westminster,2,true,a\n"
    )


def test_query_etag_and_not_modified(data: TestClient) -> None:
    first = data.get(f"{PATH}?group_by=kind", headers=READ)
    matching = {**READ, "If-None-Match": first.headers["etag"]}
    again = data.get(f"{PATH}?group_by=kind", headers=matching)
    raw = data.get(PATH, headers=READ)
    assert first.headers["etag"].startswith('"')
    assert first.headers["cache-control"] == "no-cache"
    assert (again.status_code, again.content) == (304, b"")
    assert raw.headers["etag"] != first.headers["etag"]
    data.post(PATH, json={"_timestamp": "2013-03-11T00:00:00Z", "kind": "c"},
              headers=auth())  # fmt: skip
    changed = data.get(f"{PATH}?group_by=kind", headers=matching)
    assert changed.status_code == 200


def test_query_public_headers_and_preflight(data: TestClient, store: str) -> None:
    cli("datasets", "update", "test_group_test_type", "--public", "--store", store)
    answer = data.get(PATH)
    preflight = data.options(PATH, headers={"Origin": "https://dash.example",
                             "Access-Control-Request-Method": "GET"})  # fmt: skip
    assert answer.headers["access-control-allow-origin"] == "*"
    assert answer.headers["cache-control"] == "public, max-age=60"
    assert preflight.status_code == 204
    assert "Authorization" in preflight.headers["access-control-allow-headers"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param("collect=count", "collect", id="collect-alone"),
        pytest.param("period=week", "period", id="period-without-window"),
        pytest.param(f"period=week&{WINDOW}&sort_by=_count:ascending", "sort_by",
                     id="sort-period"),
        pytest.param(f"period=week&{WINDOW}&limit=3", "limit", id="limit-period"),
        pytest.param(f"period=day&duration=3&{WINDOW}", "duration",
                     id="duration-and-both-dates"),
        pytest.param("duration=3", "duration", id="duration-without-period"),
        pytest.param("period=fortnight", "period", id="bad-period"),
        pytest.param("group_by=kind&collect=count:median", "collect", id="bad-method"),
        pytest.param("group_by=kind&collect=count:sum:x", "collect", id="two-colons"),
        pytest.param("group_by=_id", "group_by", id="internal-group"),
        pytest.param("group_by=kind&collect=kind", "collect", id="collect-group-field"),
        pytest.param("group_by=kind&collect=authority:sum", "collect",
                     id="sum-of-text"),
        pytest.param("sort_by=count", "sort_by", id="sort-no-direction"),
        pytest.param("filter_by=authority", "filter_by", id="filter-no-colon"),
        pytest.param("flatten=yes", "flatten", id="bad-flag"),
        pytest.param("inclusive=true", "inclusive", id="inclusive-alone"),
        pytest.param("format=xml", "format", id="bad-format"),
        pytest.param("duration=0&period=day", "duration", id="zero-duration"),
        pytest.param("period=year&duration=99999&start_at=2013-01-01T00:00:00Z",
                     "duration", id="duration-past-9999"),
        pytest.param("limit=1&limit=2", "limit", id="repeated"),
    ],
)  # fmt: skip
def test_query_refused(data: TestClient, query: str, field: str) -> None:
    answer = data.get(f"{PATH}?{query}", headers=READ)
    assert answer.status_code == 400, answer.text
    assert field in [error["field"] for error in answer.json()["errors"]]


def test_query_mean_of_nothing_is_null(data: TestClient) -> None:
    rows = _get(data, "group_by=kind&collect=missing:mean&collect=missing:sum")
    assert rows[0]["missing:mean"] is None and rows[0]["missing:sum"] is None


def test_query_csv_of_nested_rows_has_a_line_per_period(data: TestClient) -> None:
    query = f"group_by=authority&period=week&{WINDOW}&format=csv"
    lines = data.get(f"{PATH}?{query}", headers=READ).text.splitlines()
    assert lines[0] == "authority,_start_at,_end_at,_count"
    assert lines[1:3] == [
        "Camden,2013-03-11T00:00:00+00:00,2013-03-18T00:00:00+00:00,1",
        "Camden,2013-03-18T00:00:00+00:00,2013-03-25T00:00:00+00:00,0",
    ]
    assert len(lines) == 7
