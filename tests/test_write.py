"""The write path through the HTTP API, beyond the shared cases."""

from __future__ import annotations

import base64
import gzip
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tallybook import Settings, create_app
from tests.conftest import ALPHA, auth, cli, stored

PATH = "/data/test-group/test-type"
TEST = "test_group_test_type"
DAY = "2014-01-06T00:00:00Z"


def _post(client: TestClient, body: Any, path: str = PATH) -> Any:
    return client.post(path, json=body, headers=auth())


def _ids(client: TestClient) -> list[str]:
    return [record["_id"] for record in stored(client, TEST)]


def test_write_legacy_route_adds_deprecation_message(client: TestClient) -> None:
    answer = _post(client, {"_timestamp": DAY, "_id": "old"}, "/test_group_test_type")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    assert answer.json()["message"].startswith("Deprecation warning")
    assert _ids(client) == ["old"]


def test_write_legacy_route_refuses_names_that_cannot_exist(client: TestClient) -> None:
    assert _post(client, [], "/Not-A-Name").status_code == 404


def test_write_upsert_replaces_whole_record(client: TestClient) -> None:
    _post(client, {"_timestamp": DAY, "_id": "a", "x": 1, "y": 2})
    _post(client, {"_timestamp": DAY, "_id": "a", "x": 3})
    [record] = stored(client, TEST)
    assert (record["x"], "y" in record) == (3, False)


def test_write_later_equal_id_in_batch_wins(client: TestClient) -> None:
    batch = [
        {"_timestamp": DAY, "_id": "a", "n": 1},
        {"_timestamp": DAY, "_id": "a", "n": 2},
    ]
    assert _post(client, batch).status_code == 200
    assert [r["n"] for r in stored(client, TEST)] == [2]


def test_write_records_without_id_get_distinct_uuids(client: TestClient) -> None:
    _post(client, [{"_timestamp": DAY}, {"_timestamp": DAY}])
    assert len(set(_ids(client))) == 2


def test_write_auto_ids_from_normalised_values(blank_store: str) -> None:
    store = blank_store
    cli("datasets", "create", "g", "t", "--token", ALPHA, "--auto-ids",
        "_timestamp,channel,flag", "--store", store)  # fmt: skip
    with TestClient(create_app(Settings(store=store))) as client:
        record = {
            "_timestamp": "2014-01-06T01:00:00+01:00",
            "channel": "web",
            "flag": True,
        }
        assert _post(client, [record, record], "/data/g/t").status_code == 200
        answer = client.get("/data/g/t", headers=auth())
    expected = base64.b64encode(b"2014-01-06T00:00:00+00:00.web.True").decode()
    assert [r["_id"] for r in answer.json()["data"]] == [expected]


def test_write_auto_ids_field_missing_is_refused(blank_store: str) -> None:
    store = blank_store
    cli("datasets", "create", "g", "t", "--token", ALPHA, "--auto-ids", "channel",
        "--store", store)  # fmt: skip
    with TestClient(create_app(Settings(store=store))) as client:
        answer = _post(client, [{"_timestamp": DAY}], "/data/g/t")
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == "channel"


def test_write_id_given_wins_over_auto_ids(blank_store: str) -> None:
    store = blank_store
    cli("datasets", "create", "g", "t", "--token", ALPHA, "--auto-ids", "channel",
        "--store", store)  # fmt: skip
    with TestClient(create_app(Settings(store=store))) as client:
        _post(client, {"_timestamp": DAY, "_id": "mine", "channel": "x"}, "/data/g/t")
        answer = client.get("/data/g/t", headers=auth())
    assert answer.json()["data"][0]["_id"] == "mine"


def test_write_put_replaces_atomically_and_counts(client: TestClient) -> None:
    _post(client, [{"_timestamp": DAY, "_id": "a"}, {"_timestamp": DAY, "_id": "b"}])
    batch = [{"_timestamp": DAY, "_id": "c"}, {"_timestamp": DAY, "_id": "c"}]
    answer = client.put(PATH, json=batch, headers=auth())
    assert answer.json() == {
        "status": "ok",
        "message": f"{TEST} now contains 1 records",
    }
    assert _ids(client) == ["c"]


def test_write_put_with_bad_record_keeps_old_content(client: TestClient) -> None:
    _post(client, {"_timestamp": DAY, "_id": "a"})
    answer = client.put(PATH, json=[{"_id": "b"}], headers=auth())
    assert answer.status_code == 400
    assert _ids(client) == ["a"]


def test_write_put_needs_an_array(client: TestClient) -> None:
    answer = client.put(PATH, json={"_timestamp": DAY}, headers=auth())
    assert answer.status_code == 400
    assert "must be an array" in answer.json()["message"]


def test_write_every_problem_reported_with_index_and_field(client: TestClient) -> None:
    batch = [{"_timestamp": DAY}, {"_timestamp": 5}, {"_timestamp": DAY, "_x": 1}, {}]
    errors = _post(client, batch).json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [
        (1, "_timestamp"), (2, "_x"), (3, "_timestamp"),
    ]  # fmt: skip


def test_write_problem_list_is_capped(client: TestClient) -> None:
    body = _post(client, [{}] * 500).json()
    assert len(body["errors"]) == 101
    assert body["errors"][-1]["message"] == "... and 400 more problems."
    assert body["message"] == "500 problems in 500 records; nothing was stored."


@pytest.mark.parametrize(
    ("record", "field"),
    [
        pytest.param({"_timestamp": DAY, "_end_at": DAY, "_start_at":
                      "2014-01-07T00:00:00Z"}, "_end_at", id="end-before-start"),
        pytest.param({"_timestamp": DAY, "s": "a\u0000b"}, "s", id="nul"),
        pytest.param({"_timestamp": DAY, "_id": "a b"}, "_id", id="id-space"),
        pytest.param({"_timestamp": DAY, "_id": ""}, "_id", id="id-empty"),
        pytest.param({"_timestamp": DAY, "_id": "x" * 513}, "_id", id="id-long"),
        pytest.param({"_timestamp": DAY, "9lives": 1}, "9lives", id="key-digit"),
        pytest.param({"_timestamp": DAY, "n": -(2**63) - 1}, "n", id="int-low"),
        pytest.param({"_timestamp": "2014-01-06"}, "_timestamp", id="date-only"),
        pytest.param({"_timestamp": "2014-01-06T00:00:00+24:00"}, "_timestamp",
                     id="offset-24"),
        pytest.param({"_timestamp": "0000-01-01T00:00:00Z"}, "_timestamp", id="year-0"),
        pytest.param({"_timestamp": "0001-01-01T00:30:00+01:00"}, "_timestamp",
                     id="before-year-1"),
        pytest.param({"_timestamp": None}, "_timestamp", id="null-timestamp"),
        pytest.param({"_timestamp": DAY, "_start_at": 0}, "_start_at",
                     id="number-start"),
    ],
)  # fmt: skip
def test_write_record_rule_refuses(
    client: TestClient, record: dict[str, Any], field: str
) -> None:
    answer = _post(client, record)
    assert answer.status_code == 400
    assert [e["field"] for e in answer.json()["errors"]] == [field]
    assert _ids(client) == []


def test_write_lone_surrogate_refused(client: TestClient) -> None:
    body = b'{"_timestamp": "2014-01-06T00:00:00Z", "s": "\\ud800"}'
    answer = client.post(PATH, content=body, headers=auth())
    assert answer.json()["errors"][0]["field"] == "s"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        pytest.param("2014-01-06T00:00:00", "2014-01-06T00:00:00+00:00", id="naive"),
        pytest.param("2014-01-06T00:00:00+0000", "2014-01-06T00:00:00+00:00",
                     id="basic"),
        pytest.param("2014-01-06 00:00:00.1234567Z", "2014-01-06T00:00:00.123456+00:00",
                     id="space-and-7-digits"),
        pytest.param("2014-01-06t03:00:00-03:00", "2014-01-06T06:00:00+00:00",
                     id="lower-t"),
    ],
)  # fmt: skip
def test_write_timestamp_forms_normalised(
    client: TestClient, sent: str, kept: str
) -> None:
    assert _post(client, {"_timestamp": sent, "_start_at": sent}).status_code == 200
    [record] = stored(client, TEST)
    assert (record["_timestamp"], record["_start_at"]) == (kept, kept)


def test_write_values_kept_with_their_json_types(client: TestClient) -> None:
    record = {"_timestamp": DAY, "_id": "v", "i": -(2**63), "f": 0.5, "b": False,
              "z": None, "s": "text", "k": 1}  # fmt: skip
    _post(client, record)
    [back] = stored(client, TEST)
    expected = {**record, "_timestamp": "2014-01-06T00:00:00+00:00"}
    assert {key: back[key] for key in record} == expected


def test_write_byte_order_mark_ignored(client: TestClient) -> None:
    body = b'\xef\xbb\xbf{"_timestamp": "2014-01-06T00:00:00Z"}'
    assert client.post(PATH, content=body, headers=auth()).status_code == 200


@pytest.mark.parametrize(
    "wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"]
)
def test_write_deflate_body(client: TestClient, wbits: int) -> None:
    packer = zlib.compressobj(wbits=wbits)
    body = packer.compress(b'{"_timestamp": "2014-01-06T00:00:00Z"}') + packer.flush()
    headers = {**auth(), "Content-Encoding": "deflate"}
    assert client.post(PATH, content=body, headers=headers).status_code == 200


def test_write_truncated_gzip_refused(client: TestClient) -> None:
    body = gzip.compress(b'{"_timestamp": "2014-01-06T00:00:00Z"}')[:-6]
    answer = client.post(
        PATH, content=body, headers={**auth(), "Content-Encoding": "gzip"}
    )
    assert answer.status_code == 400
    assert "ends before" in answer.json()["message"]


def test_write_unknown_content_coding_refused(client: TestClient) -> None:
    headers = {**auth(), "Content-Encoding": "br"}
    assert client.post(PATH, content=b"[]", headers=headers).status_code == 415


def test_write_json_error_says_where(client: TestClient) -> None:
    answer = client.post(PATH, content=b'[\n {"a": 1,}]', headers=auth())
    assert "line 2, column" in answer.json()["message"]


@pytest.mark.parametrize(
    ("overrides", "body", "status"),
    [
        pytest.param({"max_body_bytes": 50}, [{"_timestamp": DAY, "s": "x" * 60}], 413,
                     id="body"),
        pytest.param({"max_records": 2}, [{"_timestamp": DAY}] * 3, 400, id="records"),
        pytest.param({"max_keys": 2}, {"_timestamp": DAY, "a": 1, "b": 2}, 400,
                     id="keys"),
        pytest.param({"max_key_length": 3}, {"_timestamp": DAY, "abcd": 1}, 400,
                     id="key-length"),
        pytest.param({"max_string_length": 3}, {"_timestamp": DAY, "s": "abcd"}, 400,
                     id="string-length"),
        pytest.param({"max_id_length": 3}, {"_timestamp": DAY, "_id": "abcd"}, 400,
                     id="id-length"),
    ],
)  # fmt: skip
def test_write_limits_are_settings(
    limited: Callable[..., TestClient],
    overrides: dict[str, int],
    body: Any,
    status: int,
) -> None:
    client = limited(**overrides)
    assert _post(client, body).status_code == status
    assert _ids(client) == []


def test_write_decoded_size_cap(limited: Callable[..., TestClient]) -> None:
    client = limited(max_decoded_bytes=1000)
    body = gzip.compress(b"[" + b" " * 2000 + b"]")
    headers = {**auth(), "Content-Encoding": "gzip"}
    assert client.post(PATH, content=body, headers=headers).status_code == 413


def test_write_large_body_problems_come_back_from_helper(client: TestClient) -> None:
    batch = [{"_timestamp": DAY, "_id": f"ok-{i}", "pad": "x" * 40} for i in range(900)]
    batch[700]["_timestamp"] = "2014-02-30T00:00:00Z"
    answer = _post(client, batch)
    assert answer.status_code == 400
    assert answer.json()["errors"] == [
        {
            "index": 700,
            "field": "_timestamp",
            "message": "record 700: _timestamp '2014-02-30T00:00:00Z' is not a "
            "possible date and time; use e.g. 2015-01-01T00:00:00Z.",
        }
    ]


def test_write_large_body_parsed_in_place_without_helpers(
    limited: Callable[..., TestClient],
) -> None:
    client = limited(parse_workers=0)
    batch = [{"_timestamp": DAY, "_id": f"r{i}", "pad": "x" * 40} for i in range(900)]
    assert _post(client, batch).status_code == 200
    assert len(_ids(client)) == 900
