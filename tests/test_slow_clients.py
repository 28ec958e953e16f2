"""Slow and broken clients, on raw sockets against a real server.

The server gets 1 second for headers and 1 second of pause in a body, so
each test waits a second or two, not the production 10 and 30.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import ALPHA
from tests.server import LiveServer

PATH = "/data/test-group/test-type"
BEARER = {"Authorization": f"Bearer {ALPHA}"}
RECORD = b'[{"_id": "slow", "_timestamp": "2014-01-06T00:00:00Z", "n": 1}]'


@pytest.fixture
def live(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    monkeypatch.setenv("TALLYBOOK_HEADER_TIMEOUT", "1")
    monkeypatch.setenv("TALLYBOOK_BODY_TIMEOUT", "1")
    with LiveServer(store, tmp_path / "server.log") as server:
        yield server


@pytest.fixture
def impatient(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    """A server that closes a connection whose answer is unread for 1 s."""
    monkeypatch.setenv("TALLYBOOK_SEND_TIMEOUT", "1")
    with LiveServer(store, tmp_path / "server.log") as server:
        yield server


def _connect(server: LiveServer) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return connection


def _answer(connection: socket.socket) -> tuple[int, dict[str, str], Any]:
    """Read one answer until the server closes the connection."""
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def _one_answer(connection: socket.socket) -> bytes:
    """Read one answer by its Content-Length, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += connection.recv(65536)
    return data


def _served(server: LiveServer) -> bool:
    return httpx.get(server.url + "/_status", timeout=5).status_code == 200


def _stored(server: LiveServer) -> list[Any]:
    answer = httpx.get(server.url + PATH, headers=BEARER, timeout=5)
    data: list[Any] = answer.json()["data"]
    return data


def _post_head(length: int) -> bytes:
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {ALPHA}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_silent_connection_is_closed_after_the_header_timeout(
    live: LiveServer,
) -> None:
    with _connect(live) as silent:
        started = time.monotonic()
        assert _served(live)  # others are served meanwhile
        status, headers, body = _answer(silent)
    assert 0.8 < time.monotonic() - started < 5
    assert status == 408 and headers["connection"] == "close"
    assert body["message"].startswith("The request headers did not arrive within 1")


def test_headers_sent_a_byte_at_a_time_are_cut_off(live: LiveServer) -> None:
    head = _post_head(len(RECORD))
    with _connect(live) as trickle:
        started = time.monotonic()
        try:
            for byte in head:
                trickle.sendall(bytes([byte]))
                time.sleep(0.05)
                if time.monotonic() - started > 5:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection, as it should
        status, _, body = _answer(trickle)
    assert status == 408 and "headers did not arrive" in body["message"]
    assert _served(live) and _stored(live) == []


def test_body_that_stops_half_way_is_refused_and_nothing_stored(
    live: LiveServer,
) -> None:
    with _connect(live) as stalled:
        stalled.sendall(_post_head(len(RECORD)) + RECORD[:20])
        status, headers, body = _answer(stalled)
    assert status == 408 and headers["connection"] == "close"
    assert body["message"].startswith("The request body stopped arriving for 1")
    assert _stored(live) == []


def test_connection_dropped_mid_body_stores_nothing(live: LiveServer) -> None:
    with _connect(live) as dropped:
        dropped.sendall(_post_head(len(RECORD)) + RECORD[:20])
    time.sleep(0.3)
    assert _served(live) and _stored(live) == []


def test_keep_alive_requests_each_get_the_full_header_time(live: LiveServer) -> None:
    request = b"GET /_status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with _connect(live) as kept:
        for _ in range(3):
            time.sleep(0.6)  # under 1 s each time, over 1 s in all
            kept.sendall(request)
            assert _one_answer(kept).startswith(b"HTTP/1.1 200")


def test_bytes_that_are_not_http_get_a_json_400(live: LiveServer) -> None:
    with _connect(live) as garbled:
        garbled.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        status, headers, body = _answer(garbled)
    assert status == 400 and headers["content-type"] == "application/json"
    assert body["message"] == "The request is not valid HTTP/1.1."
    assert _served(live)


def _stalled_read(server: LiveServer) -> socket.socket:
    """Ask for every record, take the first bytes of the answer, read no more."""
    connection = socket.socket()
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection.settimeout(10)
    connection.connect(("127.0.0.1", server.port))
    connection.sendall(
        f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {ALPHA}\r\n\r\n".encode()
    )
    assert connection.recv(1024).startswith(b"HTTP/1.1 200")
    return connection


def _fill(server: LiveServer) -> None:
    """Store 30,000 records of ~450 bytes: a 13 MB answer to read them all."""
    pad = "x" * 400
    for first in range(0, 30_000, 10_000):
        batch = [
            {"_id": f"big{n}", "_timestamp": "2014-01-06T00:00:00Z", "pad": pad}
            for n in range(first, first + 10_000)
        ]
        httpx.post(server.url + PATH, json=batch, headers=BEARER, timeout=30)


def test_readers_that_stop_reading_hold_up_no_other_read(live: LiveServer) -> None:
    _fill(live)
    stalled = [_stalled_read(live) for _ in range(6)]  # more than the readers
    try:
        later = {"_id": "later", "_timestamp": "2015-01-01T00:00:00Z"}
        httpx.post(live.url + PATH, json=later, headers=BEARER, timeout=10)
        answer = httpx.get(
            live.url + PATH + "?start_at=2015-01-01T00:00:00Z",
            headers=BEARER,
            timeout=10,
        )
    finally:
        for connection in stalled:
            connection.close()
    assert [record["_id"] for record in answer.json()["data"]] == ["later"]


def test_answer_left_unread_is_cut_off_after_the_send_timeout(
    impatient: LiveServer,
) -> None:
    _fill(impatient)
    with _stalled_read(impatient) as connection:
        time.sleep(3)
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := connection.recv(65536):
                received += len(chunk)
    assert received < 10_000_000  # of ~13.5 MB: the server gave up
    assert _served(impatient)
    assert "left its answer unread for 1 s" in impatient.log.read_text()
