"""The Python client library: in-process, on a real server, and its retries."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from starlette.testclient import TestClient

from tallybook.client import Client, Retry
from tallybook.errors import ConnectionFailed, Refused, Rejected, ServerFailed
from tests.conftest import ALPHA
from tests.server import LiveServer
from tests.transports import Script, answer, app_transport

DAY = "2014-01-06T00:00:00Z"


def _records(count: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {"_id": f"r{i:06d}", "_timestamp": DAY, "n": i} for i in range(start, count)
    ]


@pytest.fixture
def in_process(client: TestClient) -> Iterator[Client]:
    with Client("http://testserver", ALPHA, transport=app_transport(client)) as made:
        yield made


def _scripted(script: Script, **retry: object) -> tuple[Client, list[float]]:
    pauses: list[float] = []
    policy = Retry(**retry)  # type: ignore[arg-type]
    made = Client("http://tallybook.test", "t", transport=script.transport(),
                  retry=policy, sleep=pauses.append)  # fmt: skip
    return made, pauses


def test_client_post_read_replace_empty(in_process: Client) -> None:
    data = in_process.data_set("test-group", "test-type")
    assert data.post(_records(3)) == 3
    assert data.post({"_id": "one", "_timestamp": datetime(2014, 1, 7)}) == 1
    found = data.read(start_at=datetime(2014, 1, 7, tzinfo=UTC))
    assert [(r["_id"], r["_timestamp"]) for r in found] == [
        ("one", "2014-01-07T00:00:00+00:00")
    ]
    assert data.replace(_records(2)) == "test_group_test_type now contains 2 records"
    assert data.empty() == "test_group_test_type now contains 0 records"
    assert data.read() == []


def test_client_chunks_and_gzips(client: TestClient) -> None:
    seen: list[httpx.Request] = []
    inner = app_transport(client)

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return inner.handle_request(request)

    with Client("http://testserver", ALPHA, transport=httpx.MockTransport(spy),
                chunk_size=1000) as made:  # fmt: skip
        data = made.data_set("test-group", "test-type")
        assert data.post(iter(_records(2500))) == 2500
        assert len(data.read()) == 2500
    posts = [r for r in seen if r.method == "POST"]
    assert [len(json.loads(gzip.decompress(r.content))) for r in posts] == [
        1000,
        1000,
        500,
    ]
    assert all(r.headers["content-encoding"] == "gzip" for r in posts)


def test_client_small_body_not_gzipped() -> None:
    script = Script(answer(200))
    made, _ = _scripted(script)
    made.data_set("g", "t").post({"_timestamp": DAY})
    assert "content-encoding" not in script.requests[0].headers
    assert json.loads(script.requests[0].content) == [{"_timestamp": DAY}]


def test_client_on_real_server(server: LiveServer) -> None:
    with Client(server.url, ALPHA) as made:
        data = made.data_set("test-group", "test-type")
        data.post(_records(1500))
        assert len(data.read(limit=1200)) == 1200


def test_client_typed_errors_carry_the_body(in_process: Client) -> None:
    data = in_process.data_set("test-group", "test-type")
    with pytest.raises(Rejected) as rejected:
        data.post([{"_timestamp": DAY}, {"_timestamp": "nope"}])
    with pytest.raises(Refused) as refused:
        in_process.data_set("gamma", "counts").post({"_timestamp": DAY})
    assert rejected.value.status == 400
    assert [(e["index"], e["field"]) for e in rejected.value.errors] == [
        (1, "_timestamp")
    ]
    assert refused.value.status == 403 and refused.value.body["status"] == "error"


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_client_retries_what_may_pass(status: int) -> None:
    script = Script(answer(status, {"status": "error"}), answer(200))
    made, pauses = _scripted(script)
    made.data_set("g", "t").post({"_timestamp": DAY})
    assert len(script.requests) == 2 and len(pauses) == 1
    assert 0.25 <= pauses[0] <= 0.5


def test_client_backoff_doubles_with_jitter() -> None:
    script = Script(*[answer(503)] * 4, answer(200))
    made, pauses = _scripted(script)
    made.data_set("g", "t").post({"_timestamp": DAY})
    for number, pause in enumerate(pauses):
        assert 0.25 * 2**number <= pause <= 0.5 * 2**number


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 415, 500])
def test_client_never_retries_other_answers(status: int) -> None:
    script = Script(answer(status, {"status": "error", "message": "no"}))
    made, pauses = _scripted(script)
    with pytest.raises((Rejected, Refused, ServerFailed)):
        made.data_set("g", "t").post({"_timestamp": DAY})
    assert (len(script.requests), pauses) == (1, [])


def test_client_retries_500_when_asked() -> None:
    script = Script(answer(500), answer(200))
    made, _ = _scripted(script, on_500=True)
    made.data_set("g", "t").post({"_timestamp": DAY})
    assert len(script.requests) == 2


def test_client_honours_retry_after_seconds_and_dates() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    script = Script(answer(503, **{"Retry-After": "7"}),
                    answer(429, **{"Retry-After": later}), answer(200))  # fmt: skip
    made, pauses = _scripted(script)
    made.data_set("g", "t").post({"_timestamp": DAY})
    assert pauses[0] == 7 and 28 <= pauses[1] <= 30


def test_client_stops_at_the_deadline() -> None:
    script = Script(answer(503, **{"Retry-After": "100"}), answer(200))
    made, pauses = _scripted(script, deadline=60)
    with pytest.raises(ServerFailed) as failed:
        made.data_set("g", "t").post({"_timestamp": DAY})
    assert (failed.value.status, pauses, len(script.requests)) == (503, [], 1)


def test_client_retries_connection_errors_then_gives_up() -> None:
    refused = httpx.ConnectError("connection refused")
    script = Script(refused, httpx.ReadTimeout("slow"), refused)
    made, pauses = _scripted(script, attempts=3)
    with pytest.raises(ConnectionFailed, match="connection refused"):
        made.data_set("g", "t").post({"_timestamp": DAY})
    assert len(pauses) == 2


def test_client_resends_the_whole_body() -> None:
    script = Script(answer(502), answer(200))
    made, _ = _scripted(script)
    made.data_set("g", "t").post(_records(200))
    first, second = (r.content for r in script.requests)
    assert first == second and len(json.loads(gzip.decompress(second))) == 200
    assert script.requests[1].headers["content-length"] == str(len(second))
