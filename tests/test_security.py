"""Security checks not covered elsewhere.

Also tested, where the behaviour lives: tokens are never echoed
(test_auth.py), never logged (test_operations.py), and the admin API fails
closed without an admin token (test_admin_api.py).
"""

from __future__ import annotations

import asyncio
import hmac
import sqlite3
from typing import Any

import pytest
from starlette.testclient import TestClient

from tallybook import create_app
from tallybook.datasets import hash_token
from tallybook.settings import Settings
from tests.conftest import ALPHA, auth
from tests.stores import _execute

PATH = "/data/test-group/test-type"
RECORD = {"_id": "a", "_timestamp": "2014-01-06T00:00:00Z", "n": 1}


def test_token_digests_are_compared_in_constant_time(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored digest is checked with hmac.compare_digest, not `==`."""
    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(left: Any, right: Any) -> bool:
        compared.append((bytes(left), bytes(right)))
        return real(left, right)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert client.post(PATH, json=RECORD, headers=auth()).status_code == 200
    digest = hash_token(ALPHA)
    assert (digest, digest) in compared


def _break_the_store(store: str) -> None:
    """Drop the records table behind the server's back."""
    if store.startswith("postgresql"):
        asyncio.run(_execute("DROP TABLE records CASCADE", store))
        return
    with sqlite3.connect(store) as db:
        db.execute("DROP TABLE records")


def test_internal_errors_reveal_nothing(store: str) -> None:
    app = create_app(Settings(store=store))
    with TestClient(app, raise_server_exceptions=False) as client:
        _break_the_store(store)
        answer = client.post(PATH, json=RECORD, headers=auth())
    body = answer.json()
    assert answer.status_code == 500
    assert set(body) == {"status", "message", "messages", "errors", "request_id"}
    assert body["message"] == (
        "An internal error happened; nothing was stored. Quote request id "
        f"{body['request_id']} when reporting it."
    )
    text = answer.text.lower().replace(body["request_id"], "")
    headers = str(answer.headers).lower()
    for internal in ("records", "sqlite", "postgres", "traceback", "table"):
        assert internal not in text and internal not in headers
    assert "/" not in text  # no file paths
