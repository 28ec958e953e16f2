"""Property test: every store answers queries as a plain reference does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.conftest import auth, cli

PATH = "/data/test-group/test-type"
START, END = datetime(2013, 1, 1, tzinfo=UTC), datetime(2014, 1, 1, tzinfo=UTC)
PERIODS = ("day", "week", "month", "quarter", "year")

moments = st.integers(0, int((END - START).total_seconds()) - 1).map(
    lambda seconds: START + timedelta(seconds=seconds)
)
record = st.fixed_dictionaries(
    {"_timestamp": moments},
    optional={"authority": st.sampled_from(["A", "B", "C"]),
              "count": st.integers(-50, 50)},
)  # fmt: skip
query = st.fixed_dictionaries(
    {
        "group": st.booleans(),
        "period": st.none() | st.sampled_from(PERIODS),
        "collect": st.booleans(),
        "only_a": st.booleans(),
        "flatten": st.booleans(),
    }
)


def _start(period: str, moment: datetime) -> datetime:
    day = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    if period == "quarter":
        return day.replace(day=1, month=(day.month - 1) // 3 * 3 + 1)
    return day.replace(day=1, month=1)


def _next(period: str, start: datetime) -> datetime:
    if period in ("day", "week"):
        return start + timedelta(days=1 if period == "day" else 7)
    months = {"month": 1, "quarter": 3, "year": 12}[period]
    total = start.month - 1 + months
    return start.replace(year=start.year + total // 12, month=total % 12 + 1)


def _summary(chosen: list[dict[str, Any]], collect: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"_count": len(chosen)}
    if collect:
        numbers = [r["count"] for r in chosen if "count" in r]
        row["count:sum"] = sum(numbers) if numbers else None
    return row


def _periods(period: str, chosen: list[dict[str, Any]], collect: bool) -> list[Any]:
    rows, start = [], _start(period, START)
    while start < END:
        end = _next(period, start)
        inside = [r for r in chosen if start <= r["_timestamp"] < end]
        times = {"_start_at": start.isoformat(), "_end_at": end.isoformat()}
        rows.append({**times, **_summary(inside, collect)})
        start = end
    return rows


def reference(records: list[dict[str, Any]], q: dict[str, Any]) -> list[Any]:
    """The answer the query language defines, computed the plain way."""
    chosen = [r for r in records if not q["only_a"] or r.get("authority") == "A"]
    if not q["group"]:
        return _periods(q["period"], chosen, q["collect"])
    names = sorted({r["authority"] for r in chosen if "authority" in r})
    groups = [[r for r in chosen if r.get("authority") == n] for n in names]
    if q["period"] is None:
        return [{"authority": n, **_summary(g, q["collect"])}
                for n, g in zip(names, groups, strict=True)]  # fmt: skip
    columns = [
        [{"authority": n, **row} for row in _periods(q["period"], g, q["collect"])]
        for n, g in zip(names, groups, strict=True)
    ]
    if q["flatten"]:
        return [row for at_time in zip(*columns, strict=True) for row in at_time]
    nested = []
    for name, group, column in zip(names, groups, columns, strict=True):
        values = [{k: v for k, v in row.items() if k != "authority"} for row in column]
        nested.append({"authority": name, **_summary(group, q["collect"]),
                       "_group_count": sum(1 for v in values if v["_count"]),
                       "values": values})  # fmt: skip
    return nested


def _parameters(q: dict[str, Any]) -> str:
    pairs = [("start_at", START.isoformat()), ("end_at", END.isoformat())]
    pairs += [("group_by", "authority")] if q["group"] else []
    pairs += [("period", q["period"])] if q["period"] else []
    pairs += [("collect", "count:sum")] if q["collect"] else []
    pairs += [("filter_by", "authority:A")] if q["only_a"] else []
    pairs += [("flatten", "true")] if q["flatten"] else []
    return urlencode(pairs)


@pytest.fixture(params=["records", "summary"])
def kept(request: pytest.FixtureRequest, client: TestClient, store: str) -> TestClient:
    """The client; with "summary", the data set keeps one for the queried fields."""
    if request.param == "summary":
        result = cli("datasets", "update", "test_group_test_type",
                     "--summary", "authority:count", "--store", store)  # fmt: skip
        assert result.exit_code == 0, result.output
    return client


def _sent(records: list[dict[str, Any]], first: int = 0) -> list[dict[str, Any]]:
    return [{**r, "_id": f"r{first + i}", "_timestamp": r["_timestamp"].isoformat()}
            for i, r in enumerate(records)]  # fmt: skip


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    records=st.lists(record, max_size=30),
    changed=st.lists(record, max_size=10),
    start=st.integers(0, 30),
    q=query,
)
def test_query_matches_the_reference(
    kept: TestClient,
    records: list[dict[str, Any]],
    changed: list[dict[str, Any]],
    start: int,
    q: dict[str, Any],
) -> None:
    """A PUT, then a POST replacing some records (and adding others)."""
    if not q["group"] and q["period"] is None:
        q = {**q, "period": "month"}
    assert kept.put(PATH, json=_sent(records), headers=auth()).status_code == 200
    sent = _sent(changed, start)
    assert kept.post(PATH, json=sent, headers=auth()).status_code == 200 or not sent
    final = {f"r{i}": r for i, r in enumerate(records)}
    final.update({f"r{start + i}": r for i, r in enumerate(changed)})

    answer = kept.get(f"{PATH}?{_parameters(q)}", headers=auth())

    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == reference(list(final.values()), q)
