"""Every case of the shared write API cases file, with its stored state checked.

The cases say in prose what each data set must hold afterwards; `EXPECTED`
below writes that down per case as the exact set of records (by `_id`) each
fixture data set holds, with the fields that must have given values. A data
set a case does not name must be empty.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import CASES, CASES_FILE, FIXTURES, auth, stored

TEST, OTHER, GAMMA = (fixture["name"] for fixture in FIXTURES)
G12 = {"g-1": {"n": 1}, "g-2": {"n": 2}}
EXPECTED: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "A01": {}, "A02": {}, "A05": {}, "A06": {}, "A08": {}, "A09": {},
    "A10": {GAMMA: G12},
    "C01": {TEST: {"c01": {"visits": 2}}},
    "C02": {TEST: {"c02": {"visits": 2}}},
    "C03": {}, "C04": {}, "C05": {}, "C06": {}, "C08": {}, "C10": {},
    "C11": {TEST: {"c12": {"visits": 7}}},
    "C13": {}, "C15": {}, "V01": {},
    "V03": {TEST: {"v03": {"big": 9007199254740993}}},
    "V04": {},
    "V06": {TEST: {"v06": {"place": "S\u00e3o Tom\u00e9 \U0001f4c8",
                           "note": "Adjudicator\u2019s \u2013 Dual"}}},
    "V09": {}, "V10": {}, "V11": {},
    "T01": {TEST: {"t01": {"_timestamp": "2014-01-06T00:00:00+00:00", "visits": 3}}},
    "T02": {TEST: {"t02": {"_timestamp": "2014-01-06T04:00:00+00:00"}}},
    "T04": {TEST: {"t04": {"_timestamp": "2014-01-06T00:00:00.500000+00:00"}}},
    "T06": {TEST: {"t06": {"_timestamp": "2016-02-29T00:00:00+00:00"}}},
    "T08": {TEST: {"t10": {"_timestamp": "1969-07-20T20:17:00+00:00"}}},
    "T09": {TEST: {"t11": {"_timestamp": "2040-01-01T00:00:00+00:00"}}},
    "T10": {}, "T12": {},
    "T13": {TEST: {"dst-a": {"_timestamp": "2014-10-26T00:30:00+00:00"},
                   "dst-b": {"_timestamp": "2014-10-26T01:30:00+00:00"}}},
    "T15": {},
    "I03": {TEST: {"r-1": {"n": 1}, "r-2": {"n": 2}}},
    "I04": {},
    "I05": {TEST: {"shared-1": {"source": "alpha"}},
            OTHER: {"shared-1": {"source": "bravo"}}},
    "P01": {}, "P03": {},
    "U01": {GAMMA: {}},
    "U03": {GAMMA: {"g-9": {"n": 9}}},
    "U04": {GAMMA: {}},
    "R01": {},
    "R03": {TEST: {"r03": {"visits": 1}}},
    "H01": {TEST: {f"bulk-{i:05d}": {"n": i} for i in range(5000)}},
    "X01": {},
}  # fmt: skip
EXTRA_BODY = {
    "T01": {"status": "ok"},
    "U03": {"status": "ok", "message": "gamma_counts now contains 1 records"},
}


def _body(request: dict[str, Any]) -> bytes:
    if request.get("body_text") is not None:
        return str(request["body_text"]).encode()
    if request.get("body_base64") is not None:
        return base64.b64decode(request["body_base64"])
    # The cases file is project test data; its generators build large bodies.
    built: bytes = eval(request["body_generator"], {"gzip": gzip, "json": json})
    return built


def _send(client: TestClient, request: dict[str, Any]) -> Any:
    return client.request(
        request["method"],
        request["path"],
        headers=request.get("headers", {}),
        content=_body(request),
    )


def _check_answer(answer: Any, expect: dict[str, Any]) -> None:
    assert answer.status_code == expect["status"], answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    for key, value in expect.get("body_contains", {}).items():
        assert body[key] == value
    for name, text in expect.get("headers_contain", {}).items():
        assert text.lower() in answer.headers[name].lower()
    if answer.status_code >= 400:
        assert body["status"] == "error" and body["messages"] and body["errors"]


def _check_stored(client: TestClient, case_id: str) -> None:
    for fixture in FIXTURES:
        expected = EXPECTED[case_id].get(fixture["name"], {})
        found = {record["_id"]: record for record in stored(client, fixture["name"])}
        assert sorted(found) == sorted(expected), fixture["name"]
        for record_id, fields in expected.items():
            for key, value in fields.items():
                assert found[record_id][key] == value, (record_id, key)


@pytest.mark.parametrize(
    "case", [pytest.param(case, id=case["id"]) for case in CASES["cases"]]
)
def test_case_answers_and_stores_as_expected(client: TestClient, case: Any) -> None:
    for setup in case.get("setup", []):
        assert _send(client, setup).status_code == 200

    times = 2 if case["request"].get("send_mode") == "twice" else 1
    for _ in range(times):
        _check_answer(_send(client, case["request"]), case["expect"])

    _check_stored(client, case["id"])


def test_case_exact_bodies(client: TestClient) -> None:
    cases = {case["id"]: case for case in CASES["cases"]}
    for case_id, body in EXTRA_BODY.items():
        for setup in cases[case_id].get("setup", []):
            _send(client, setup)
        assert _send(client, cases[case_id]["request"]).json() == body


def test_case_gzip_bomb_leaves_service_answering(client: TestClient) -> None:
    bomb = next(case for case in CASES["cases"] if case["id"] == "C13")
    assert _send(client, bomb["request"]).status_code == 413

    record = {"_timestamp": "2014-01-06T00:00:00Z", "_id": "after", "visits": 1}
    answer = client.post("/data/test-group/test-type", json=record, headers=auth())
    assert answer.status_code == 200


def test_case_every_case_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(case["id"] for case in CASES["cases"])


def test_case_file_matches_shared_copy() -> None:
    shared = Path(__file__).parents[2] / "shared" / "cases" / CASES_FILE.name
    if not shared.exists():
        pytest.skip(f"no shared cases folder beside the repository ({shared})")
    assert json.loads(shared.read_text()) == CASES
