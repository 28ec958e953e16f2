"""Every error, on every route, has the one JSON shape."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tallybook import Settings, create_app
from tallybook.datasets import DataSet
from tallybook.records import Record
from tallybook.store import SQLiteStore
from tests.conftest import ALPHA, JSON, auth, provision

PATH = "/data/test-group/test-type"


def _check_shape(answer: Any, status: int) -> None:
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) >= {"status", "message", "messages", "errors"}
    assert body["status"] == "error" and body["message"].endswith(".")
    assert body["messages"] == [error["message"] for error in body["errors"]]
    assert all(set(error) == {"index", "field", "message"} for error in body["errors"])


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        pytest.param("POST", PATH, auth(), b"{", 400, id="post-400"),
        pytest.param("PUT", PATH, auth(), b"{}", 400, id="put-400"),
        pytest.param("GET", PATH + "?x=1", auth(), b"", 400, id="get-400"),
        pytest.param("POST", PATH, JSON, b"[]", 401, id="post-401"),
        pytest.param("PUT", PATH, JSON, b"[]", 401, id="put-401"),
        pytest.param("GET", PATH, {}, b"", 401, id="get-401"),
        pytest.param("POST", "/test_group_test_type", JSON, b"[]", 401,
                     id="legacy-401"),
        pytest.param("POST", "/data/gamma/counts", auth(), b"[]", 403, id="post-403"),
        pytest.param("GET", "/data/gamma/counts", auth(), b"", 403, id="get-403"),
        pytest.param("GET", "/nothing/here/at/all", {}, b"", 404, id="404"),
        pytest.param("DELETE", PATH, auth(), b"", 405, id="405"),
        pytest.param("POST", "/_status", {}, b"", 405, id="status-405"),
        pytest.param("POST", PATH, {**auth(), "Content-Type": "text/csv"}, b"", 415,
                     id="415"),
    ],
)  # fmt: skip
def test_errors_have_one_shape(
    client: TestClient,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
) -> None:
    answer = client.request(method, path, headers=headers, content=body)
    _check_shape(answer, status)


def test_errors_413_has_the_shape(limited: Any) -> None:
    client = limited(max_body_bytes=10)
    _check_shape(
        client.post(PATH, content=b"[" + b" " * 20 + b"]", headers=auth()), 413
    )


class _BrokenStore(SQLiteStore):
    async def write(self, data_set: DataSet, records: Sequence[Record]) -> None:
        raise RuntimeError("disk on fire at /secret/path")


def test_errors_500_reveals_nothing_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "broken.db"
    provision(str(path))
    app = create_app(Settings(store=str(path)), _BrokenStore(path))
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post(PATH, json={"_timestamp": "2014-01-06T00:00:00Z"},
                             headers=auth())  # fmt: skip
    _check_shape(answer, 500)
    request_id = answer.json()["request_id"]
    assert "secret" not in answer.text and request_id in answer.json()["message"]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert request_id in failures[0].getMessage()
    assert ALPHA not in caplog.text
