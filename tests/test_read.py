"""Reading records back: order, window, limit, streaming."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.conftest import ALPHA, auth

PATH = "/data/test-group/test-type"
READ = {"Authorization": f"Bearer {ALPHA}"}


def _seed(client: TestClient) -> None:
    batch = [
        {"_id": "c", "_timestamp": "2014-01-03T00:00:00Z"},
        {"_id": "a", "_timestamp": "2014-01-01T00:00:00Z"},
        {"_id": "b2", "_timestamp": "2014-01-02T00:00:00Z"},
        {"_id": "b1", "_timestamp": "2014-01-02T00:00:00Z"},
    ]
    assert client.post(PATH, json=batch, headers=auth()).status_code == 200


def _ids(client: TestClient, query: str = "") -> Any:
    answer = client.get(PATH + query, headers=READ)
    assert answer.status_code == 200, answer.text
    return [record["_id"] for record in answer.json()["data"]]


def test_read_orders_by_timestamp_then_id(client: TestClient) -> None:
    _seed(client)
    assert _ids(client) == ["a", "b1", "b2", "c"]


def test_read_window_includes_start_excludes_end(client: TestClient) -> None:
    _seed(client)
    query = "?start_at=2014-01-02T00:00:00Z&end_at=2014-01-03T00:00:00%2B00:00"
    assert _ids(client, query) == ["b1", "b2"]


def test_read_limit(client: TestClient) -> None:
    _seed(client)
    assert _ids(client, "?limit=2") == ["a", "b1"]
    assert _ids(client, "?limit=0") == ["a", "b1", "b2", "c"]


def test_read_record_shape(client: TestClient) -> None:
    record = {"_id": "x", "_timestamp": "2014-01-06T01:00:00+01:00", "count": 3}
    client.post(PATH, json=record, headers=auth())
    [back] = client.get(PATH, headers=READ).json()["data"]
    assert back == {"_id": "x", "_timestamp": "2014-01-06T00:00:00+00:00", "count": 3}


def test_read_streams_many_records_in_order(client: TestClient) -> None:
    batch = [
        {"_id": f"r{i:05d}", "_timestamp": "2014-01-06T00:00:00Z", "pad": "x" * 50}
        for i in range(3000)
    ]
    client.post(PATH, json=batch, headers=auth())
    assert _ids(client) == [f"r{i:05d}" for i in range(3000)]


def test_read_streams_an_answer_past_the_etag_buffer_whole(
    client: TestClient,
) -> None:
    ids = [f"s{n:05d}" for n in range(12_000)]  # ~5.4 MB of JSON, over 4 MiB
    for first in range(0, len(ids), 6_000):
        batch = [
            {"_id": id_, "_timestamp": "2014-01-06T00:00:00Z", "pad": "x" * 400}
            for id_ in ids[first : first + 6_000]
        ]
        client.post(PATH, json=batch, headers=auth())
    answer = client.get(PATH, headers=READ)
    assert "etag" not in answer.headers  # streamed, not buffered
    assert [record["_id"] for record in answer.json()["data"]] == ids


def test_read_refuses_unknown_and_bad_parameters(client: TestClient) -> None:
    answer = client.get(PATH + "?colour=red&limit=-1&start_at=2014-01-01", headers=READ)
    assert answer.status_code == 400
    fields = [error["field"] for error in answer.json()["errors"]]
    assert fields == ["colour", "start_at", "limit"]


def test_read_start_at_needs_a_time_zone(client: TestClient) -> None:
    answer = client.get(PATH + "?start_at=2014-01-01T00:00:00", headers=READ)
    assert answer.json()["errors"][0]["message"].startswith(
        "start_at '2014-01-01T00:00:00' has no time zone"
    )


def test_read_legacy_route_by_name(client: TestClient) -> None:
    _seed(client)
    answer = client.get("/test_group_test_type?limit=1", headers=READ)
    assert [r["_id"] for r in answer.json()["data"]] == ["a"]


def test_read_numbers_come_back_as_sent(client: TestClient) -> None:
    body = b'{"_id": "f", "_timestamp": "2014-01-06T00:00:00Z", "big": 1.5e308, ' \
           b'"tiny": 1e-320, "neg": -0.0, "exact": 9007199254740993}'  # fmt: skip
    client.post(PATH, content=body, headers=auth())
    text = client.get(PATH, headers=READ).text
    for written in ('"big":1.5e+308', '"tiny":1e-320', '"neg":-0.0',
                    '"exact":9007199254740993'):  # fmt: skip
        assert written in text.replace(" ", "")


def test_read_public_data_set_with_another_token(
    client: TestClient, store: str
) -> None:
    from tests.conftest import TOKENS, cli

    cli("datasets", "update", "gamma_counts", "--public", "--store", store)
    other = {"Authorization": f"Bearer {TOKENS['test_group_test_type']}"}
    assert client.get("/data/gamma/counts", headers=other).status_code == 200
    assert client.post("/data/gamma/counts", json={}, headers=other).status_code == 403
