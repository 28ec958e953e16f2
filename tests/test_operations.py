"""Operator endpoints, metrics, logs and the OpenAPI document."""

from __future__ import annotations

import json
import logging
import re

import pytest
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from tallybook.server import JsonFormatter
from tests.conftest import ALPHA, TOKENS, auth, cli

RECORD = {"_timestamp": "2014-01-06T00:00:00Z", "secret_value": "do-not-log-me"}


def test_operations_status_and_ready(client: TestClient) -> None:
    status = client.get("/_status")
    ready = client.get("/_status/ready")
    assert status.json() == {"status": "ok", "message": "app is up"}
    assert status.headers["access-control-allow-origin"] == "*"
    assert ready.json() == {"status": "ok", "message": "the store answers"}


def test_operations_data_sets_in_date(client: TestClient) -> None:
    assert client.get("/_status/data-sets").json() == {
        "status": "ok", "data_sets": None, "message": "All data_sets are in date",
    }  # fmt: skip


def test_operations_stale_data_sets_reported(client: TestClient, store: str) -> None:
    for name in ("test_group_test_type", "gamma_counts"):
        cli("datasets", "update", name, "--max-age-expected", "1", "--store", store)
    client.post("/data/test-group/test-type", json=RECORD, headers=auth())

    body = client.get("/_status/data-sets").json()

    assert body["status"] == "not okay"
    assert body["message"] == "1 data-set is out of date"
    [stale] = body["data_sets"]
    assert stale == {"name": "gamma_counts", "seconds-out-of-date": None,
                     "last-updated": None, "max-age-expected": 1}  # fmt: skip


def test_operations_metrics_count_requests(client: TestClient) -> None:
    client.post("/data/test-group/test-type", json=[RECORD, RECORD], headers=auth())
    client.post("/data/test-group/test-type", json=RECORD)
    text = client.get("/metrics").text
    assert 'tallybook_requests_total{method="POST",route="/data/{group}/{type}",' \
           'status="200"} 1.0' in text  # fmt: skip
    assert "tallybook_records_written_total 2.0" in text
    assert 'tallybook_writes_refused_total{reason="unauthorized"} 1.0' in text
    assert "tallybook_request_duration_seconds_bucket" in text


def test_operations_log_has_no_token_and_no_record_value(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "tb_wrong-" + "w" * 40
    for headers in (auth(), auth(wrong), {"Authorization": f"Token {ALPHA}"}):
        client.post("/data/test-group/test-type", json=RECORD, headers=headers)
        client.get("/data/test-group/test-type?access_token=" + ALPHA, headers=headers)
    client.post("/data/test-group/test-type", json={"_timestamp": "do-not-log-me"},
                headers=auth())  # fmt: skip

    ours = [r for r in caplog.records if r.name.startswith("tallybook")]
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in ours)
    assert re.search(r"POST /data/test-group/test-type 200 ", logged)
    for secret in (*TOKENS.values(), wrong, "do-not-log-me"):
        assert secret not in logged


def test_operations_json_log_lines() -> None:
    record = logging.LogRecord("tallybook.requests", logging.INFO, "", 0,
                               "GET / 200", None, None)  # fmt: skip
    record.request = {"method": "GET", "status": 200, "request_id": "r1"}
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "GET / 200" and line["request_id"] == "r1"
    assert line["level"] == "INFO" and line["time"].endswith("+00:00")


def test_operations_request_id_header(client: TestClient) -> None:
    given = client.get("/_status", headers={"X-Request-Id": "abc-123"})
    made = client.get("/_status", headers={"X-Request-Id": "bad id\x7f"})
    assert given.headers["x-request-id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])


def test_operations_openapi_is_valid_and_complete(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    validate(document)
    app = client.app
    assert isinstance(app, Starlette)
    for route in app.routes:
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        documented = document["paths"][path]
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in documented, (method, path)


def test_operations_log_escapes_control_characters(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client.get("/data/g/t%0A2026-12-04 INFO forged line")
    lines = [r.getMessage() for r in caplog.records if r.name == "tallybook.requests"]
    assert lines and all("\n" not in line for line in lines)
    assert "/data/g/t\\n2026-12-04" in lines[-1]


def test_operations_log_counts_records_read(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    client.post("/data/test-group/test-type", json=[RECORD, RECORD], headers=auth())
    caplog.set_level(logging.INFO)
    client.get("/data/test-group/test-type", headers=auth())
    [line] = [r.getMessage() for r in caplog.records if r.name == "tallybook.requests"]
    assert " records=2 " in line


def test_operations_metrics_show_the_store_counters(
    client: TestClient, store: str
) -> None:
    text = client.get("/metrics").text
    names = {
        "tallybook_sqlite_temporary_reads_total",
        "tallybook_sqlite_wal_restarts_total",
        "tallybook_sqlite_wal_restarts_given_up_total",
    }
    shown = {name for name in names if f"\n{name} 0.0\n" in text}
    assert shown == (set() if store.startswith("postgresql") else names)
