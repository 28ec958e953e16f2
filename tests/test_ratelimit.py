"""Rate limits per token and per client address, through the HTTP API.

Redis is used when it answers at TALLYBOOK_TEST_REDIS (default
redis://127.0.0.1:6379/0); otherwise its tests are skipped with the reason,
unless TALLYBOOK_REQUIRE_REDIS=1 (as CI sets), which turns the skip into a
failure. Each test keeps its keys under a prefix of its own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tallybook import Settings, create_app
from tallybook.http.ratelimit import PAUSE_SECONDS, RateLimits
from tests.conftest import ALPHA, TOKENS, auth, provision
from tests.server import LiveServer, free_port
from tests.stores import postgres_schema

REDIS = os.environ.get("TALLYBOOK_TEST_REDIS", "redis://127.0.0.1:6379/0")
REQUIRED = os.environ.get("TALLYBOOK_REQUIRE_REDIS") == "1"
BRAVO = TOKENS["other_group_other_type"]
PATHS = {ALPHA: "/data/test-group/test-type", BRAVO: "/data/other-group/other-type"}
HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")
Make = Callable[..., TestClient]


class Clock:
    """A monotonic clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def blank_store(tmp_path: Path) -> str:
    """Rate limits do not depend on the store: SQLite only, here."""
    return str(tmp_path / "tallybook.db")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted after."""
    connection = _redis()
    prefix = "tallybook-test:" + uuid.uuid4().hex
    yield prefix
    for key in connection.scan_iter(prefix + ":*"):
        connection.delete(key)
    connection.close()


def _redis() -> redis.Redis:
    """A connection to the test Redis; skip (or fail, when required) without."""
    connection = redis.Redis.from_url(REDIS, socket_connect_timeout=2)
    try:
        connection.ping()
    except redis.RedisError:
        connection.close()
        reason = f"Redis is not reachable at {REDIS}"
        if REQUIRED:
            pytest.fail(reason + " and TALLYBOOK_REQUIRE_REDIS=1")
        pytest.skip(reason)
    return connection


def _read(client: TestClient | httpx.Client, token: str = ALPHA) -> Any:
    return client.get(PATHS[token], headers={"Authorization": f"Bearer {token}"})


def _clocked(client: TestClient, clock: Clock) -> None:
    """Give the client's app counts that follow `clock`."""
    app = client.app
    assert isinstance(app, Starlette)
    app.state.rate_limits = RateLimits.from_settings(app.state.settings, clock)


def _redis_down(limited: Make) -> tuple[TestClient, Clock]:
    """A client limited to 1 request per token, its Redis at a closed port."""
    gone = f"redis://127.0.0.1:{free_port()}/0"
    client, clock = limited(rate_limit_token=1, rate_limit_redis=gone), Clock()
    _clocked(client, clock)
    return client, clock


def _limits(answer: Any) -> tuple[str | None, ...]:
    return tuple(answer.headers.get(name) for name in HEADERS)


def test_ratelimit_off_by_default(client: TestClient) -> None:
    answers = [_read(client) for _ in range(5)]
    assert [answer.status_code for answer in answers] == [200] * 5
    assert _limits(answers[-1]) == (None, None, None)


def test_ratelimit_token_over_limit_is_429(limited: Make) -> None:
    client = limited(rate_limit_token=2)
    assert [_read(client).status_code for _ in range(2)] == [200, 200]
    answer = _read(client)
    assert answer.status_code == 429
    message = (
        "Too many requests with this token: the limit is 2 every 60 seconds. "
        f"Retry in {answer.headers['retry-after']} seconds."
    )
    assert answer.json() == {
        "status": "error",
        "message": message,
        "messages": [message],
        "errors": [{"index": None, "field": None, "message": message}],
    }


def test_ratelimit_headers_count_down(limited: Make) -> None:
    client = limited(rate_limit_token=3, rate_limit_window=60)
    _clocked(client, Clock())
    answers = [_read(client) for _ in range(3)]
    assert [_limits(a) for a in answers] == [
        ("3", "2", "60"),
        ("3", "1", "60"),
        ("3", "0", "60"),
    ]
    assert answers[0].headers["ratelimit-policy"] == "3;w=60"


def test_ratelimit_retry_after_is_the_time_left(limited: Make) -> None:
    client, clock = limited(rate_limit_token=1, rate_limit_window=60), Clock()
    _clocked(client, clock)
    _read(client)
    clock.now += 44.5
    answer = _read(client)
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "16"
    assert _limits(answer) == ("1", "0", "16")


def test_ratelimit_window_end_resets_the_count(limited: Make) -> None:
    client, clock = limited(rate_limit_token=1, rate_limit_window=60), Clock()
    _clocked(client, clock)
    assert [_read(client).status_code for _ in range(2)] == [200, 429]
    clock.now += 60
    answer = _read(client)
    assert answer.status_code == 200
    assert _limits(answer) == ("1", "0", "60")


def test_ratelimit_tokens_are_counted_apart(limited: Make) -> None:
    client = limited(rate_limit_token=1)
    assert _read(client, ALPHA).status_code == 200
    assert _read(client, ALPHA).status_code == 429
    assert _read(client, BRAVO).status_code == 200


def test_ratelimit_address_counts_every_token(limited: Make) -> None:
    client = limited(rate_limit_address=2)
    assert [_read(client, token).status_code for token in (ALPHA, BRAVO)] == [200] * 2
    answer = _read(client, BRAVO)
    assert answer.status_code == 429
    assert answer.json()["message"].startswith(
        "Too many requests with this client address: the limit is 2 every 60"
    )


def test_ratelimit_headers_show_the_closest_limit(limited: Make) -> None:
    client = limited(rate_limit_token=5, rate_limit_address=2)
    answer = _read(client)
    assert _limits(answer)[:2] == ("2", "1")
    assert answer.headers["ratelimit-policy"] == "5;w=60, 2;w=60"


def test_ratelimit_counts_refused_requests_too(limited: Make) -> None:
    client = limited(rate_limit_address=3)
    answers = [client.post("/data/test-group/test-type", json={}) for _ in range(4)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert _limits(answers[0])[:2] == ("3", "2")


def test_ratelimit_leaves_system_routes_and_preflight_alone(limited: Make) -> None:
    client = limited(rate_limit_address=1)
    paths = ["/_status", "/_status/ready", "/_status/data-sets", "/metrics"]
    answers = [client.get(path) for path in [*paths, "/openapi.json"] * 2]
    answers.append(client.options(PATHS[ALPHA], headers={"Origin": "https://x"}))
    assert [a.status_code for a in answers] == [200] * 10 + [204]
    assert all(_limits(a) == (None, None, None) for a in answers)
    assert _read(client).status_code == 200


def test_ratelimit_covers_the_admin_api(limited: Make) -> None:
    client = limited(rate_limit_address=1)
    assert client.get("/data-sets").status_code == 401
    assert client.get("/tokens").status_code == 429


def test_ratelimit_metric_counts_refusals(limited: Make) -> None:
    client = limited(rate_limit_token=1)
    for _ in range(3):
        client.post(PATHS[ALPHA], json=[], headers=auth())
    metrics = client.get("/metrics").text
    assert 'tallybook_rate_limited_total{limit="token"} 2.0' in metrics
    assert 'tallybook_writes_refused_total{reason="rate_limited"} 2.0' in metrics


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        pytest.param({"rate_limit_token": -1}, "0 (no limit) or more", id="negative"),
        pytest.param({"rate_limit_window": 0}, "1 second or more", id="window"),
        pytest.param({"rate_limit_redis": "http://127.0.0.1"}, "redis://", id="url"),
        pytest.param(
            {"rate_limit_address": 5, "workers": 2}, "several workers", id="workers"
        ),
    ],
)
def test_ratelimit_refuses_settings_that_cannot_work(
    overrides: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        create_app(Settings(store=":memory:", **overrides))


def test_ratelimit_serve_refuses_workers_without_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLYBOOK_RATE_LIMIT_TOKEN", "10")
    with postgres_schema() as url:
        code, output = _serve(tmp_path / "serve.log", "--store", url, "--workers", "2")
    assert code == 2
    assert "Rate limits with several workers need TALLYBOOK_RATE_LIMIT_REDIS" in output


def test_ratelimit_fails_open_when_redis_is_down(
    limited: Make, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = _redis_down(limited)
    answers = [_read(client) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert _limits(answers[-1]) == (None, None, None)
    assert "tallybook_rate_limit_unchecked_total 3.0" in client.get("/metrics").text
    warnings = [r for r in caplog.records if r.name == "tallybook.http.ratelimit"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "Redis failed" in warnings[0].getMessage()


def test_ratelimit_asks_redis_again_after_a_pause(
    limited: Make, caplog: pytest.LogCaptureFixture
) -> None:
    client, clock = _redis_down(limited)
    _read(client)
    clock.now += PAUSE_SECONDS
    assert _read(client).status_code == 200
    warnings = [r for r in caplog.records if r.name == "tallybook.http.ratelimit"]
    assert len(warnings) == 2


def test_ratelimit_redis_keys_hold_the_token_hash(
    limited: Make, redis_prefix: str
) -> None:
    client = limited(
        rate_limit_token=5, rate_limit_redis=REDIS, rate_limit_prefix=redis_prefix
    )
    assert _limits(_read(client))[:2] == ("5", "4")
    digest = hashlib.sha256(ALPHA.encode()).hexdigest()
    with _redis() as connection:
        keys = set(connection.scan_iter(redis_prefix + ":*"))
    assert keys == {f"{redis_prefix}:token:{digest}".encode()}


def test_ratelimit_redis_window_expires(limited: Make, redis_prefix: str) -> None:
    client = limited(
        rate_limit_token=1,
        rate_limit_window=2,
        rate_limit_redis=REDIS,
        rate_limit_prefix=redis_prefix,
    )
    assert _read(client).status_code == 200
    refused = _read(client)
    assert refused.status_code == 429
    time.sleep(int(refused.headers["retry-after"]) + 0.5)
    assert _read(client).status_code == 200


def test_ratelimit_redis_shared_by_two_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_prefix: str
) -> None:
    monkeypatch.setenv("TALLYBOOK_RATE_LIMIT_TOKEN", "3")
    monkeypatch.setenv("TALLYBOOK_RATE_LIMIT_REDIS", REDIS)
    monkeypatch.setenv("TALLYBOOK_RATE_LIMIT_PREFIX", redis_prefix)
    stores = [str(tmp_path / "a.db"), str(tmp_path / "b.db")]
    for store in stores:
        provision(store)
    with (
        LiveServer(stores[0], tmp_path / "a.log") as a,
        LiveServer(stores[1], tmp_path / "b.log") as b,
        httpx.Client(trust_env=False) as http,
    ):
        sent = [a, b, a, b]
        answers = [http.get(s.url + PATHS[ALPHA], headers=_bearer()) for s in sent]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]


def test_ratelimit_addresses_are_counted_apart(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLYBOOK_RATE_LIMIT_ADDRESS", "1")
    with LiveServer(store, tmp_path / "server.log") as server:
        statuses = [
            _status_from(server, address) for address in ("127.0.0.1", "127.0.0.2")
        ]
        statuses.append(_status_from(server, "127.0.0.1"))
    assert statuses == [200, 200, 429]


def _serve(log: Path, *options: str) -> tuple[int, str]:
    """Run `tallybook serve` on 127.0.0.1; stop it should it start serving."""
    command = [sys.executable, "-m", "tallybook", "serve", "--port", str(free_port())]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, *options], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait(timeout=40)
        pytest.fail(f"serve started instead of refusing: {log.read_text()}")
    return code, log.read_text()


def _bearer(token: str = ALPHA) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _status_from(server: LiveServer, address: str) -> int:
    """Read from the server with a connection from this local address."""
    transport = httpx.HTTPTransport(local_address=address, trust_env=False)
    with httpx.Client(transport=transport, trust_env=False) as http:
        answer = http.get(server.url + PATHS[ALPHA], headers=_bearer())
    status: int = answer.status_code
    return status
