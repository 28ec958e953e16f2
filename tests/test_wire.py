"""What existing clients send, byte for byte, to a real server on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx2 as httpx

from tests.conftest import ALPHA, cli
from tests.server import LiveServer

SEED_TOKEN = "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01"
SEED_BODY = b"""[
  {
    "_id": "unique-identifier-1",
    "_timestamp": "2015-01-01T00:00:00Z",
    "count": 123
  },
  {
    "_id": "unique-identifier-2",
    "_timestamp": "2015-01-02T00:00:00Z",
    "count": 456
  }
]"""
PATH = "/data/test-group/test-type"


def _request(method: str, path: str, headers: list[str], body: bytes) -> bytes:
    """An HTTP/1.1 request as a client puts it on the wire."""
    lines = [f"{method} {path} HTTP/1.1", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _seed(method: str, body: bytes) -> bytes:
    return _request(
        method,
        "/data/carers-allowance/transaction-count",
        [
            "Host: www.performance.service.gov.uk",
            f"Authorization: Bearer {SEED_TOKEN}",
            "Content-Type: application/json",
        ],
        body,
    )


def _read(server: LiveServer, path: str = PATH, token: str = ALPHA) -> list[Any]:
    answer = httpx.get(server.url + path, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    data: list[Any] = answer.json()["data"]
    return data


def test_wire_seed_example_then_empty(server: LiveServer, store: str) -> None:
    created = cli(
        "datasets", "create", "carers-allowance", "transaction-count",
        "--token", SEED_TOKEN, "--store", store,
    )  # fmt: skip
    assert created.exit_code == 0

    status, headers, body = server.send_raw(_seed("POST", SEED_BODY))
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body) == {"status": "ok"}
    seed_path = "/data/carers-allowance/transaction-count"
    records = _read(server, seed_path, SEED_TOKEN)
    assert [(r["_id"], r["_timestamp"], r["count"]) for r in records] == [
        ("unique-identifier-1", "2015-01-01T00:00:00+00:00", 123),
        ("unique-identifier-2", "2015-01-02T00:00:00+00:00", 456),
    ]

    status, _, body = server.send_raw(_seed("PUT", b"[]"))
    assert status == 200
    assert json.loads(body) == {
        "message": "carers_allowance_transaction_count now contains 0 records",
        "status": "ok",
    }
    assert _read(server, seed_path, SEED_TOKEN) == []


def test_wire_gzip_body_of_a_few_kilobytes(server: LiveServer) -> None:
    batch = [
        {"_id": f"z{i}", "_timestamp": "2014-01-06T00:00:00+00:00", "count": i}
        for i in range(80)
    ]
    raw = json.dumps(batch).encode()
    assert len(raw) > 4000
    headers = [f"Authorization: Bearer {ALPHA}", "Content-Type: application/json",
               "Content-Encoding: gzip"]  # fmt: skip
    status, _, _ = server.send_raw(_request("POST", PATH, headers, gzip.compress(raw)))
    assert status == 200
    assert len(_read(server)) == 80


def test_wire_chunked_retry_with_empty_body_is_clean_400(server: LiveServer) -> None:
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {ALPHA}\r\nContent-Type: application/json\r\n"
        "Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ).encode()
    status, headers, body = server.send_raw(request)
    assert (status, headers["content-type"]) == (400, "application/json")
    assert json.loads(body)["message"].startswith("The request body is empty")


def test_wire_chunked_body_is_read_whole(server: LiveServer) -> None:
    raw = gzip.compress(json.dumps({"_timestamp": "2014-01-06T00:00:00Z"}).encode())
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(raw[i : i + 7]), raw[i : i + 7])
                      for i in range(0, len(raw), 7))  # fmt: skip
    request = (
        (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {ALPHA}\r\nContent-Type: application/json\r\n"
            "Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + chunks
        + b"0\r\n\r\n"
    )
    status, _, _ = server.send_raw(request)
    assert status == 200
    assert len(_read(server)) == 1


def test_wire_govuk_request_id_is_carried(server: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {ALPHA}", "Govuk-Request-Id": "req-4242"}
    answer = httpx.post(server.url + PATH, json=[], headers=headers)
    assert answer.headers["x-request-id"] == "req-4242"
    server.stop()
    assert "request_id=req-4242" in server.log.read_text()


def test_wire_odd_slashes_reach_the_data_set(server: LiveServer) -> None:
    record = {"_timestamp": "2014-01-06T00:00:00Z", "_id": "s"}
    headers = {"Authorization": f"Bearer {ALPHA}"}
    for path in ("/data//test-group/test-type", "//data/test-group/test-type/"):
        answer = httpx.post(server.url + path, json=record, headers=headers)
        assert answer.status_code == 200, path
    assert [r["_id"] for r in _read(server)] == ["s"]


def test_wire_content_type_header_spelled_backdropsend_way(server: LiveServer) -> None:
    headers = [f"Authorization: Bearer {ALPHA}", "Content-type: application/json"]
    body = b'[{"_timestamp": "2014-01-06T00:00:00Z", "_id": "bs"}]'
    status, _, _ = server.send_raw(_request("POST", PATH, headers, body))
    assert status == 200


def test_wire_single_object_java_style(server: LiveServer) -> None:
    headers = [f"Authorization: Bearer {ALPHA}", "Content-Type: application/json"]
    empty_check = server.send_raw(_request("POST", PATH, headers, b"[]"))
    body = b'{"_id":"0cc175b9","_timestamp":"2014-01-01T00:00:00+01:00","count":5}'
    status, _, _ = server.send_raw(_request("POST", PATH, headers, body))
    assert (empty_check[0], status) == (200, 200)
    assert _read(server)[0]["_timestamp"] == "2013-12-31T23:00:00+00:00"


def test_wire_python_client_timestamp_with_microseconds(server: LiveServer) -> None:
    record = {"_id": "m", "_timestamp": "2014-06-01T12:00:00.123456+01:00"}
    headers = {"Authorization": f"Bearer {ALPHA}", "User-Agent": "Performance "
               "Platform Client 0.11.5", "Govuk-Request-Id": "Not-Set"}  # fmt: skip
    answer = httpx.post(server.url + PATH, json=[record], headers=headers)
    assert answer.json() == {"status": "ok"}
    assert _read(server)[0]["_timestamp"] == "2014-06-01T11:00:00.123456+00:00"
