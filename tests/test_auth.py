"""Bearer tokens (RFC 6750) on the data set routes."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tallybook import Settings, create_app
from tallybook.http.auth import bearer_token
from tests.conftest import ALPHA, JSON, TOKENS, cli

PATH = "/data/test-group/test-type"
RECORD = {"_timestamp": "2014-01-06T00:00:00Z"}


@pytest.mark.parametrize(
    ("header", "token"),
    [
        pytest.param("Bearer abc", "abc", id="plain"),
        pytest.param("bearer abc", "abc", id="lower-scheme"),
        pytest.param("BEARER    abc", "abc", id="upper-many-spaces"),
        pytest.param("Bearer", None, id="no-token"),
        pytest.param("Bearer a b", None, id="two-words"),
        pytest.param("Basic abc", None, id="other-scheme"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_auth_bearer_header_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_auth_scheme_case_and_spaces_accepted(client: TestClient) -> None:
    headers = {"Authorization": f"bEaReR   {ALPHA}", **JSON}
    assert client.post(PATH, json=RECORD, headers=headers).status_code == 200


def test_auth_missing_token_challenge_has_realm(client: TestClient) -> None:
    answer = client.post(PATH, json=RECORD, headers=JSON)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="tallybook"'


def test_auth_unknown_token_is_invalid_token(client: TestClient) -> None:
    headers = {"Authorization": "Bearer nope", **JSON}
    answer = client.post(PATH, json=RECORD, headers=headers)
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


def test_auth_other_data_sets_token_is_forbidden(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {TOKENS['gamma_counts']}", **JSON}
    answer = client.post(PATH, json=RECORD, headers=headers)
    assert answer.status_code == 403
    assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]


def test_auth_missing_data_set_looks_like_another(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {ALPHA}", **JSON}
    missing = client.post("/data/no-such/thing", json=RECORD, headers=headers)
    other = client.post("/data/gamma/counts", json=RECORD, headers=headers)
    assert (missing.status_code, other.status_code) == (403, 403)
    assert missing.json()["message"] == other.json()["message"]


def test_auth_checked_before_content_type(client: TestClient) -> None:
    headers = {"Content-Type": "text/plain"}
    assert client.post(PATH, content=b"x", headers=headers).status_code == 401


def test_auth_token_never_echoed(client: TestClient) -> None:
    secret = "secret-value-that-must-not-return"
    for header in (f"Bearer {secret}", f"Token {secret}"):
        answer = client.post(PATH, json=RECORD, headers={"Authorization": header})
        assert secret not in answer.text
        assert secret not in str(answer.headers)


def test_auth_private_read_needs_token(client: TestClient) -> None:
    assert client.get(PATH).status_code == 401
    headers = {"Authorization": f"Bearer {ALPHA}"}
    assert client.get(PATH, headers=headers).status_code == 200


def test_auth_public_read_needs_no_token(blank_store: str) -> None:
    cli("datasets", "create", "open", "data", "--public", "--token", ALPHA,
        "--store", blank_store)  # fmt: skip
    with TestClient(create_app(Settings(store=blank_store))) as client:
        assert client.get("/data/open/data").json() == {"data": []}
        assert client.post("/data/open/data", json=RECORD).status_code == 401


def test_auth_missing_public_check_does_not_reveal(client: TestClient) -> None:
    missing = client.get("/data/no-such/thing")
    private = client.get(PATH)
    assert (missing.status_code, private.status_code) == (401, 401)
    assert missing.json() == private.json()
