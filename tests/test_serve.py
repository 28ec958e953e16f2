"""`tallybook serve` as a process: shutdown and durability."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from pathlib import Path

import httpx2 as httpx

from tests.conftest import ALPHA
from tests.server import LiveServer, helpers_left

PATH = "/data/test-group/test-type"
READ = {"Authorization": f"Bearer {ALPHA}"}


def _count(server: LiveServer) -> int:
    answer = httpx.get(server.url + PATH, headers=READ)
    return len(answer.json()["data"])


def test_serve_sigterm_finishes_the_write_in_flight(
    server: LiveServer, store: str, tmp_path: Path
) -> None:
    batch = [
        {"_id": f"r{i}", "_timestamp": "2014-01-06T00:00:00Z"} for i in range(2000)
    ]
    body = json.dumps(batch).encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALPHA}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert server.process is not None
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as conn:
        conn.sendall(head + body[:1000])
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        conn.sendall(body[1000:])
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ")
    # uvicorn re-raises the signal once shut down, so the exit is by SIGTERM.
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log.read_text()

    with LiveServer(store, tmp_path / "again.log") as again:
        assert _count(again) == 2000


def test_serve_acknowledged_writes_survive_sigkill(
    server: LiveServer, store: str, tmp_path: Path
) -> None:
    for i in range(20):
        record = {"_id": f"k{i}", "_timestamp": "2014-01-06T00:00:00Z"}
        answer = httpx.post(server.url + PATH, json=record, headers=READ)
        assert answer.status_code == 200
    server.stop(signal.SIGKILL)

    with LiveServer(store, tmp_path / "again.log") as again:
        assert _count(again) == 20


def test_serve_helpers_end_with_a_killed_server(server: LiveServer) -> None:
    big = [{"_id": f"h{i}", "_timestamp": "2014-01-06T00:00:00Z", "pad": "x" * 100}
           for i in range(500)]  # fmt: skip
    answer = httpx.post(server.url + PATH, json=big, headers=READ, timeout=30)
    assert answer.status_code == 200  # parsed in the helper process (>= 32 KiB)
    helpers = server.kill()
    assert helpers, "the parser pool should have started"
    assert helpers_left(helpers) == []


def test_serve_client_leaving_mid_body_stores_nothing(server: LiveServer) -> None:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALPHA}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(head + b'[{"_timestamp": "2014-01-06T00:00:00Z"}')
    time.sleep(0.3)

    assert _count(server) == 0
    server.stop()
    log = server.log.read_text()
    assert f"POST {PATH} 499 " in log
    assert "ERROR" not in log and "Traceback" not in log


def test_serve_demo_prints_a_working_token(blank_store: str, tmp_path: Path) -> None:
    with LiveServer(blank_store, tmp_path / "demo.log", "--demo") as demo:
        printed = demo.log.read_text()
        token = re.search(r"token \(shown once, keep it secret\): (\S+)", printed)
        assert token is not None and "curl -X POST" in printed
        headers = {"Authorization": f"Bearer {token.group(1)}"}
        path = "/data/carers-allowance/transaction-count"
        record = {"_id": "unique-identifier-1", "_timestamp": "2015-01-01T00:00:00Z"}
        assert httpx.post(demo.url + path, json=record, headers=headers).json() == {
            "status": "ok"
        }
