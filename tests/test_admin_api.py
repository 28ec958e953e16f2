"""The admin API under /data-sets and /tokens, on both stores."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from tallybook import Settings, create_app
from tests.conftest import ALPHA, TOKENS

ADMIN_TOKEN = "tb_admin-" + "a" * 40
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RECORD = {"_timestamp": "2014-01-06T00:00:00Z", "n": 1}
ROUTES = [
    ("GET", "/data-sets"),
    ("POST", "/data-sets"),
    ("GET", "/data-sets/test_group_test_type"),
    ("PATCH", "/data-sets/test_group_test_type"),
    ("DELETE", "/data-sets/test_group_test_type"),
    ("POST", "/data-sets/test_group_test_type/empty"),
    ("GET", "/data-sets/test_group_test_type/tokens"),
    ("POST", "/data-sets/test_group_test_type/tokens"),
    ("GET", "/tokens"),
    ("POST", "/tokens"),
    ("DELETE", "/tokens/1"),
    ("POST", "/tokens/1/rotate"),
]


@pytest.fixture
def admin(store: str) -> Iterator[TestClient]:
    """A client on an app started with TALLYBOOK_ADMIN_TOKEN set."""
    app = create_app(Settings(store=store, admin_token=ADMIN_TOKEN))
    with TestClient(app) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create(client: TestClient, **body: Any) -> Any:
    answer = client.post("/data-sets", json={"group": "g", "type": "t", **body},
                         headers=ADMIN)  # fmt: skip
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_admin_api_fails_closed_without_admin_token(
    client: TestClient, method: str, path: str
) -> None:
    statuses = [
        client.request(method, path, headers=headers, json={}).status_code
        for headers in ({}, _bearer(ALPHA), _bearer("made-up"))
    ]
    assert statuses == [401, 403, 401]


def test_admin_api_creates_data_set_with_working_token(admin: TestClient) -> None:
    created = _create(admin, description="d", auto_ids=["n"], max_age_expected=60)
    token = created["token"]
    assert created["data_set"] == {
        "name": "g_t", "group": "g", "type": "t", "description": "d",
        "public": False, "auto_ids": ["n"], "max_age_expected": 60, "schema": None,
        "summary": None,
    }  # fmt: skip
    assert (token["scopes"], token["data_set"]) == (["read", "write"], "g_t")
    assert token["value"].startswith(token["prefix"])
    answer = admin.post("/data/g/t", json=RECORD, headers=_bearer(token["value"]))
    assert answer.status_code == 200


def test_admin_api_create_refusals(admin: TestClient) -> None:
    _create(admin)
    again = admin.post("/data-sets", json={"group": "g", "type": "t"}, headers=ADMIN)
    bad = admin.post("/data-sets", json={"group": "G", "type": "t"}, headers=ADMIN)
    unknown = admin.post("/data-sets", json={"group": "a", "type": "b", "x": 1},
                         headers=ADMIN)  # fmt: skip
    assert [again.status_code, bad.status_code, unknown.status_code] == [409, 400, 400]
    assert again.json()["message"] == "The data set g_t exists already."


def test_admin_api_lists_shows_updates(admin: TestClient) -> None:
    _create(admin)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    patched = admin.patch("/data-sets/g_t", json={"public": True, "schema": schema},
                          headers=ADMIN)  # fmt: skip
    shown = admin.get("/data-sets/g_t", headers=ADMIN).json()["data_set"]
    listed = admin.get("/data-sets", headers=ADMIN).json()["data_sets"]
    assert patched.json()["data_set"] == shown
    assert (shown["public"], shown["schema"]) == (True, schema)
    assert [d["name"] for d in listed] == sorted([*TOKENS, "g_t"])


def test_admin_api_refuses_bad_schema(admin: TestClient) -> None:
    _create(admin)
    answer = admin.patch("/data-sets/g_t", json={"schema": {"type": "nope"}},
                         headers=ADMIN)  # fmt: skip
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("schema is not a valid JSON Schema")


def test_admin_api_sets_and_refuses_summaries(admin: TestClient) -> None:
    summary = {"group_by": ["channel"], "collect": ["count"]}
    created = _create(admin, summary=summary)
    assert created["data_set"]["summary"] == summary
    bads: list[Any] = [{"group_by": "channel"}, {"by": []}, {"collect": ["a b"]}, 5]
    for bad in bads:
        answer = admin.patch("/data-sets/g_t", json={"summary": bad}, headers=ADMIN)
        assert answer.status_code == 400, bad
        assert answer.json()["message"].startswith("summary"), bad
    answer = admin.patch("/data-sets/g_t", json={"summary": None}, headers=ADMIN)
    assert answer.json()["data_set"]["summary"] is None


def test_admin_api_schema_checks_every_record(admin: TestClient) -> None:
    schema = {"type": "object", "required": ["count"],
              "properties": {"count": {"type": "integer", "minimum": 0}}}  # fmt: skip
    token = _create(admin, schema=schema)["token"]["value"]
    batch = [{**RECORD, "count": 1}, {**RECORD, "count": -1}, RECORD]
    answer = admin.post("/data/g/t", json=batch, headers=_bearer(token))
    assert answer.status_code == 400
    assert [(e["index"], e["field"]) for e in answer.json()["errors"]] == [
        (1, "count"), (2, "count"),
    ]  # fmt: skip
    assert admin.get("/data/g/t", headers=_bearer(token)).json() == {"data": []}


def test_admin_api_delete_and_empty(admin: TestClient) -> None:
    token = _create(admin)["token"]["value"]
    admin.post("/data/g/t", json=RECORD, headers=_bearer(token))
    emptied = admin.post("/data-sets/g_t/empty", headers=ADMIN)
    assert emptied.json() == {"status": "ok", "message": "g_t now contains 0 records"}
    deleted = admin.delete("/data-sets/g_t", headers=ADMIN)
    assert deleted.json() == {"status": "ok", "message": "deleted data set g_t"}
    assert admin.get("/data-sets/g_t", headers=ADMIN).status_code == 404
    assert (
        admin.post("/data/g/t", json=RECORD, headers=_bearer(token)).status_code == 401
    )


def test_admin_api_read_token_cannot_write(admin: TestClient) -> None:
    _create(admin)
    issued = admin.post("/data-sets/g_t/tokens", json={"scopes": ["read"]},
                        headers=ADMIN).json()["token"]  # fmt: skip
    reader = _bearer(issued["value"])
    assert admin.get("/data/g/t", headers=reader).status_code == 200
    assert admin.post("/data/g/t", json=RECORD, headers=reader).status_code == 403


def test_admin_api_admin_token_writes_anywhere(admin: TestClient) -> None:
    issued = admin.post("/tokens", json={"scopes": ["admin"], "name": "ops"},
                        headers=ADMIN).json()["token"]  # fmt: skip
    other = _bearer(issued["value"])
    answer = admin.post("/data/gamma/counts", json=RECORD, headers=other)
    missing = admin.post("/data/no/where", json=RECORD, headers=other)
    assert (answer.status_code, missing.status_code) == (200, 404)


def test_admin_api_revoked_token_refused_at_once(admin: TestClient) -> None:
    token = _create(admin)["token"]
    assert admin.get("/data/g/t", headers=_bearer(token["value"])).status_code == 200
    revoked = admin.delete(f"/tokens/{token['id']}", headers=ADMIN)
    assert revoked.json()["token"]["revoked_at"] is not None
    answer = admin.get("/data/g/t", headers=_bearer(token["value"]))
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


def test_admin_api_expired_token_refused(admin: TestClient) -> None:
    _create(admin)
    soon = datetime.now(UTC) + timedelta(seconds=2)
    body = {"expires_at": soon.isoformat()}
    issued = admin.post("/data-sets/g_t/tokens", json=body, headers=ADMIN)
    value = issued.json()["token"]["value"]
    assert admin.get("/data/g/t", headers=_bearer(value)).status_code == 200
    time.sleep(2.1)
    assert admin.get("/data/g/t", headers=_bearer(value)).status_code == 401


def test_admin_api_rotation_keeps_old_token_for_grace(admin: TestClient) -> None:
    old = _create(admin)["token"]
    rotated = admin.post(f"/tokens/{old['id']}/rotate", json={"grace_seconds": 2},
                         headers=ADMIN).json()  # fmt: skip
    new = rotated["token"]["value"]
    assert rotated["previous"]["expires_at"] is not None
    for value in (old["value"], new):
        assert admin.get("/data/g/t", headers=_bearer(value)).status_code == 200
    time.sleep(2.1)
    assert admin.get("/data/g/t", headers=_bearer(old["value"])).status_code == 401
    assert admin.get("/data/g/t", headers=_bearer(new)).status_code == 200


def test_admin_api_token_list_never_shows_values(admin: TestClient) -> None:
    token = _create(admin)["token"]
    imported = admin.post("/data-sets/g_t/tokens", json={"value": "x" * 40},
                          headers=ADMIN).json()["token"]  # fmt: skip
    listed = admin.get("/data-sets/g_t/tokens", headers=ADMIN)
    every = admin.get("/tokens", headers=ADMIN)
    assert "value" not in imported and imported["prefix"] == "x" * 8
    assert [t["id"] for t in listed.json()["tokens"]] == [token["id"], imported["id"]]
    assert token["value"] not in every.text and "x" * 40 not in every.text
    assert len(every.json()["tokens"]) == len(TOKENS) + 3


def test_admin_api_import_of_known_value_conflicts(admin: TestClient) -> None:
    answer = admin.post("/data-sets/gamma_counts/tokens", json={"value": ALPHA},
                        headers=ADMIN)  # fmt: skip
    assert answer.status_code == 409


def test_admin_api_token_refusals(admin: TestClient) -> None:
    cases = [
        ("/tokens", {"scopes": ["read"]}, 400),
        ("/tokens", {"scopes": ["root"], "data_set": "g_t"}, 400),
        ("/data-sets/none_here/tokens", {}, 404),
        ("/tokens/999/rotate", {}, 404),
        ("/tokens", {"expires_at": "soon", "data_set": "gamma_counts"}, 400),
    ]
    for path, body, status in cases:
        assert admin.post(path, json=body, headers=ADMIN).status_code == status, path


def test_admin_api_last_used_is_recorded(admin: TestClient) -> None:
    token = _create(admin)["token"]
    admin.get("/data/g/t", headers=_bearer(token["value"]))
    for _ in range(50):
        listed = admin.get("/data-sets/g_t/tokens", headers=ADMIN).json()["tokens"]
        if listed[0]["last_used_at"] is not None:
            break
        time.sleep(0.02)
    assert listed[0]["last_used_at"] is not None


def test_admin_api_short_import_warns(admin: TestClient) -> None:
    answer = admin.post("/data-sets/gamma_counts/tokens", json={"value": "short"},
                        headers=ADMIN)  # fmt: skip
    assert answer.json()["warning"].startswith("The imported token has 5 characters")
    assert "short" not in answer.text.replace("5 characters", "")


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"schema": {"$ref": "http://127.0.0.1:1/s.json"}},
                     id="remote-ref"),
        pytest.param({"schema": {"items": {"$dynamicRef": "https://a.invalid/y"}}},
                     id="remote-dynamic-ref"),
        pytest.param({"schema": {"maximum": 1e999}}, id="infinite-number"),
        pytest.param({"max_age_expected": 2**63}, id="huge-age"),
        pytest.param({"description": "a\u0000b"}, id="nul"),
        pytest.param({"description": "a\ud800b"}, id="lone-surrogate"),
        pytest.param({"schema": {"title": "a\u0000b"}}, id="nul-in-schema"),
    ],
)  # fmt: skip
def test_admin_api_refuses_unsafe_settings(
    admin: TestClient, settings: dict[str, Any]
) -> None:
    text = json.dumps({"group": "g", "type": "t", **settings})
    body = text.replace("Infinity", "1e999").encode()  # a number JSON can write
    headers = {**ADMIN, "Content-Type": "application/json"}
    answer = admin.post("/data-sets", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert admin.get("/data-sets/g_t", headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"value": "has space " + "x" * 30}, id="space"),
        pytest.param({"value": "t\u00f6k\u00e9n" + "x" * 30}, id="non-ascii"),
        pytest.param({"data_set": ["x"]}, id="data-set-list"),
        pytest.param({"scopes": ["admin", "read"], "data_set": "gamma_counts"},
                     id="admin-with-data-set"),
        pytest.param({"data_set": "gamma_counts", "expires_at": "2001-01-01T00:00:00Z"},
                     id="past-expiry"),
        pytest.param({"data_set": "gamma_counts", "colour": "red"}, id="unknown-key"),
        pytest.param({"data_set": "gamma_counts", "name": "n" * 201}, id="long-name"),
    ],
)  # fmt: skip
def test_admin_api_refuses_bad_tokens(admin: TestClient, body: dict[str, Any]) -> None:
    before = len(admin.get("/tokens", headers=ADMIN).json()["tokens"])
    assert admin.post("/tokens", json=body, headers=ADMIN).status_code == 400
    assert len(admin.get("/tokens", headers=ADMIN).json()["tokens"]) == before


def test_admin_api_rotation_refusals_store_nothing(admin: TestClient) -> None:
    token = _create(admin)["token"]
    huge = admin.post(f"/tokens/{token['id']}/rotate",
                      json={"grace_seconds": 10**12}, headers=ADMIN)  # fmt: skip
    first = admin.delete(f"/tokens/{token['id']}", headers=ADMIN).json()["token"]
    again = admin.delete(f"/tokens/{token['id']}", headers=ADMIN).json()["token"]
    revived = admin.post(f"/tokens/{token['id']}/rotate", json={}, headers=ADMIN)
    assert (huge.status_code, revived.status_code) == (400, 400)
    assert first["revoked_at"] == again["revoked_at"]
    assert len(admin.get("/data-sets/g_t/tokens", headers=ADMIN).json()["tokens"]) == 1


def test_admin_api_empty_data_set_filter(admin: TestClient) -> None:
    assert admin.get("/tokens?data_set=", headers=ADMIN).status_code == 404


def test_admin_api_new_environment_token_replaces_the_old(store: str) -> None:
    other = "tb_second-" + "b" * 40
    with TestClient(create_app(Settings(store=store, admin_token=ADMIN_TOKEN))):
        pass
    with TestClient(create_app(Settings(store=store, admin_token=other))) as client:
        old = client.get("/data-sets", headers=ADMIN)
        new = client.get("/data-sets", headers=_bearer(other))
    assert (old.status_code, new.status_code) == (401, 200)
