"""Fuzzing: the record and query parsers, and the API from its OpenAPI document.

Property tests feed the parsers arbitrary input and accept only the
documented refusal (`InvalidRequest`, rendered as a 4xx of the one error
shape); schemathesis sends generated requests to a real server. Every run is
bounded: few examples, short deadlines. Inputs that once failed are kept as
`@example`s or plain tests.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from tallybook import periods, query, records, timestamps
from tallybook.datasets import DataSet
from tallybook.errors import InvalidRequest
from tallybook.http.responses import error_body
from tests.conftest import ALPHA, auth, cli
from tests.server import LiveServer

PATH = "/data/test-group/test-type"
Operation = schemathesis.APIOperation[Any, Any, Any, Any]
NOW = datetime(2015, 6, 1, 12, 30, tzinfo=UTC)
FIXED = ("hour", "day", "week")
ADMIN_TOKEN = "tb_fuzz-admin-" + "f" * 40
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
QUICK = settings(max_examples=150, deadline=timedelta(seconds=2))
OVER_HTTP = settings(
    max_examples=40,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text as JSON can carry it: any code point, lone surrogates included (a JSON
# `\ud800` escape decodes to one), and the characters parsers care about.
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.text(st.characters() | surrogates | st.sampled_from("\x00 \t_-:+.Zz"))
odd_keys = st.sampled_from(
    ["_id", "_timestamp", "_start_at", "_end_at", "_x", "_", "a", "A_1", "1a",
     "", "a-b", "é", "a" * 129, "n"]
)  # fmt: skip
numbers = (
    st.integers()
    | st.integers(2**63 - 2, 2**64)
    | st.integers(-(2**64), -(2**63) + 1)
    | st.floats()
    | st.sampled_from([-0.0, 1e308, -1e308, 5e-324, 2**63, 9007199254740993])
)
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(odd_keys | texts, inner, max_size=3)
    ),
    max_leaves=12,
)
# Date-times of the accepted shape, possible or not, and near misses.
shaped = st.from_regex(timestamps._SHAPE, fullmatch=True)
moments = st.datetimes(
    timezones=st.none() | st.timezones() | st.just(UTC), allow_imaginary=False
).map(datetime.isoformat)
time_texts = shaped | moments | st.sampled_from(
    ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00",
     "2015-02-29T00:00:00Z", "2015-01-01T24:00:00Z", "2015-01-01t00:00:00z",
     "2015-01-01 00:00:00,1234567890+0530", "2015-01-01T00:00:00", ""]
)  # fmt: skip
times = time_texts | json_values
ids = st.text(max_size=600) | texts | json_values
reserved = st.fixed_dictionaries(
    {},
    optional={"_timestamp": times, "_id": ids, "_start_at": times, "_end_at": times},
)
record_values = st.builds(
    lambda extra, known: {**extra, **known},
    st.dictionaries(odd_keys | texts, json_values, max_size=5),
    reserved,
)
documents = (
    record_values | st.lists(record_values | json_values, max_size=4) | json_values
)
data_sets = st.sampled_from(
    [
        DataSet("test-group", "test-type"),
        DataSet("test-group", "test-type", auto_ids=("_timestamp", "n")),
        DataSet(
            "test-group",
            "test-type",
            schema={
                "type": "object",
                "properties": {"n": {"type": "integer", "minimum": 0}},
                "additionalProperties": {"type": ["string", "integer"]},
            },
        ),
    ]
)
limits = st.sampled_from(
    [
        records.Limits(),
        records.Limits(
            max_records=2, max_keys=3, max_key_length=4, max_string_length=5
        ),
    ]
)


def _renders(error: InvalidRequest) -> dict[str, Any]:
    """The error's JSON body, which must encode (orjson refuses surrogates)."""
    body: dict[str, Any] = orjson.loads(
        orjson.dumps(error_body(error.message, error.problems))
    )
    return body


def _check_rows(rows: list[records.Record]) -> None:
    for row in rows:
        body = orjson.loads(row.body)
        assert body["_id"] == row.id and row.id
        assert timestamps.parse(body["_timestamp"]).tzinfo is UTC


@QUICK
@given(data=st.binary() | texts.map(lambda t: t.encode("utf-8", "surrogatepass")))
@example(data=b"\xef\xbb\xbf")
@example(data=b"[" * 100_000)
@example(data=b"1" * 5000)
@example(data=b'{"a": 1, "a": 2}')
@example(data=b"[NaN, Infinity]")
def test_fuzz_load_json_refuses_only_invalid_request(data: bytes) -> None:
    try:
        records.load_json(data)
    except InvalidRequest as error:
        _renders(error)


@QUICK
@given(
    document=documents,
    data_set=data_sets,
    limits=limits,
    array_required=st.booleans(),
)
def test_fuzz_parse_refuses_only_invalid_request(
    document: Any, data_set: DataSet, limits: records.Limits, array_required: bool
) -> None:
    body = json.dumps(document).encode()  # escapes lone surrogates as \udxxx
    try:
        rows = records.parse(body, data_set, limits, array_required=array_required)
    except InvalidRequest as error:
        assert _renders(error)["errors"]
        return
    _check_rows(rows)


@QUICK
@given(batch=st.lists(record_values, max_size=4), data_set=data_sets, limits=limits)
@example(  # a lone surrogate in a key: the error could not be rendered (500)
    batch=[{"\ud800": 1, "_timestamp": "2015-01-01T00:00:00Z"}],
    data_set=DataSet("test-group", "test-type"),
    limits=records.Limits(),
)
@example(  # the same, reported by a data set's schema
    batch=[{"\udfff": [], "_timestamp": "2015-01-01T00:00:00Z"}],
    data_set=DataSet("g", "t", schema={"additionalProperties": {"type": "string"}}),
    limits=records.Limits(),
)
@example(  # a surrogate in a key longer than the limit
    batch=[{"\ud800" * 200: 1, "_timestamp": "2015-01-01T00:00:00Z"}],
    data_set=DataSet("test-group", "test-type"),
    limits=records.Limits(),
)
def test_fuzz_prepare_refuses_only_invalid_request(
    batch: list[dict[str, Any]], data_set: DataSet, limits: records.Limits
) -> None:
    try:
        rows = records.prepare(batch, data_set, limits)
    except InvalidRequest as error:
        problems = error.problems
        assert all(p.index is None or 0 <= p.index < len(batch) for p in problems)
        _renders(error)
        return
    _check_rows(rows)


def _error_shape(answer: Any) -> None:
    """The one error shape that tests/test_errors.py checks on every route."""
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["status"] == "error" and body["message"].endswith(".")
    assert body["messages"] == [error["message"] for error in body["errors"]]
    assert all(set(error) == {"index", "field", "message"} for error in body["errors"])


def _bodies() -> st.SearchStrategy[bytes]:
    as_json = documents.map(lambda d: json.dumps(d).encode())
    return as_json | st.binary(max_size=200) | as_json.map(b"\xef\xbb\xbf".__add__)


def _encoded(body: bytes, coding: str, compress: bool) -> tuple[bytes, dict[str, str]]:
    """The body as sent with this Content-Encoding: compressed, or only labelled."""
    if coding == "identity":
        return body, auth()
    if compress:
        body = gzip.compress(body) if coding == "gzip" else zlib.compress(body)
    return body, {**auth(), "Content-Encoding": coding}


@OVER_HTTP
@given(
    body=_bodies(),
    method=st.sampled_from(["POST", "PUT"]),
    coding=st.sampled_from(["identity", "gzip", "deflate"]),
    compress=st.booleans(),
)
@example(
    body=b'{"\\ud800": 1, "_timestamp": "2015-01-01T00:00:00Z"}',
    method="POST",
    coding="identity",
    compress=False,
)
def test_fuzz_write_never_fails_on_the_server(
    client: TestClient, body: bytes, method: str, coding: str, compress: bool
) -> None:
    content, headers = _encoded(body, coding, compress)
    answer = client.request(method, PATH, content=content, headers=headers)

    assert answer.status_code < 500, answer.text
    if answer.status_code != 200:
        _error_shape(answer)


names = st.sampled_from(query.ONCE + query.MANY) | texts
fields = st.sampled_from(["n", "a", "_timestamp", "_id", "_x", "", "1a", "a-b"])
parameter_values = (
    time_texts
    | st.sampled_from(["true", "false", "json", "csv", "0", "1", "999999999"])
    | st.sampled_from((*query.METHODS, "median", ""))
    | st.sampled_from(("hour", "day", "week", "month", "quarter", "year", "Day"))
    | st.from_regex(r"\d{1,12}", fullmatch=True)
    | st.builds(
        ":".join,
        st.lists(fields | st.sampled_from(query.METHODS) | texts, max_size=3),
    )
    | st.builds(
        "{}:{}".format, fields, st.sampled_from(["ascending", "descending", "up"])
    )
    | texts
)
pairs = st.lists(st.tuples(names, parameter_values), max_size=8)
edges = st.sampled_from(
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
)


@QUICK
@given(items=pairs, now=st.datetimes(timezones=st.just(UTC)) | edges)
@example(items=[("\ud800", "1")], now=NOW)  # could not be rendered as JSON
@example(items=[("period", "hour"), ("duration", "999999")], now=NOW)
@example(
    items=[("period", "hour"), ("start_at", "0001-01-01T00:00:00Z"),
           ("end_at", "9999-12-31T00:00:00Z")],
    now=NOW,
)  # fmt: skip
@example(
    items=[("period", "year"), ("start_at", "9999-01-01T00:00:00Z"),
           ("end_at", "9999-06-01T00:00:00Z")],
    now=NOW,
)  # fmt: skip
def test_fuzz_parse_query_refuses_only_invalid_request(
    items: list[tuple[str, str]], now: datetime
) -> None:
    try:
        parsed = query.parse_query(items, now)
    except InvalidRequest as error:
        _renders(error)
        return
    if parsed.period is not None and parsed.window is not None:
        _check_window(parsed.period, parsed.window)


def _check_window(period: str, window: tuple[datetime, datetime]) -> None:
    """A window answers in few periods, each of whose ends can be written."""
    count = periods.count(period, *window)
    assert count <= query.MAX_PERIODS
    if count < 500:
        starts = list(periods.buckets(period, *window))
        assert len(starts) == count or (
            period not in FIXED and count - len(starts) == 1
        )
        assert all(periods.add(period, start, 1) for start in starts)


def _query_strings() -> st.SearchStrategy[str]:
    encoded = pairs.map(
        lambda items: urlencode(items, quote_via=quote, errors="surrogatepass")
    )
    pieces = ["=", "&", "%", "%00", "%ff", "%d8%00", ":", "+", ";", "?", "/", " ",
              "a", "0", "\xff", "period", "group_by", "start_at", "limit", "filter_by",
              "sort_by", "ascending"]  # fmt: skip
    raw = st.lists(st.sampled_from(pieces), max_size=12).map("".join)
    return encoded | raw


@OVER_HTTP
@given(text=_query_strings())
@example(text="period=year&start_at=9999-01-01T00:00:00Z&end_at=9999-06-01T00:00:00Z")
@example(text="period=hour&start_at=9999-12-31T23:00:00Z&end_at=9999-12-31T23:30:00Z")
def test_fuzz_read_never_fails_on_the_server(client: TestClient, text: str) -> None:
    answer = client.get(f"{PATH}?{text}", headers=auth())

    assert answer.status_code < 500, answer.text
    if answer.status_code != 200:
        _error_shape(answer)


@pytest.fixture
def live(store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real server that knows the admin token: its URL."""
    monkeypatch.setenv("TALLYBOOK_ADMIN_TOKEN", ADMIN_TOKEN)
    with LiveServer(store, tmp_path / "server.log") as server:
        yield server.url


@pytest.fixture
def spare(store: str) -> int:
    """The id of a token that the fuzzer may revoke and rotate."""
    issued = cli("tokens", "issue", "--data-set", "other_group_other_type",
                 "--store", store)  # fmt: skip
    assert issued.exit_code == 0, issued.output
    return int(issued.output.split()[2])


def _path_parameters(path: str, spare: int) -> dict[str, Any]:
    """Aim routes at existing data sets, and token routes at a spare token."""
    if path.startswith("/data/"):
        return {"group": "test-group", "type": "test-type"}
    if path == "/{name}":
        return {"name": "test_group_test_type"}
    if path.startswith("/data-sets/"):
        return {"name": "gamma_counts"}  # deleted at some point
    return {"token_id": spare} if "{token_id}" in path else {}


def _fuzz_operation(operation: Operation, spare: int) -> None:
    fixed = _path_parameters(operation.path, spare)
    cases = st.sampled_from(list(schemathesis.GenerationMode)).flatmap(
        lambda mode: operation.as_strategy(mode, path_parameters=fixed)
    )

    @settings(max_examples=30, deadline=timedelta(seconds=5), database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=cases)
    def run(case: schemathesis.Case[Operation]) -> None:
        case.call_and_validate(headers=ADMIN, checks=CHECKS, timeout=10)

    run()


def test_fuzz_api_from_openapi(live: str, spare: int) -> None:
    """Schemathesis on every operation of the server's own OpenAPI document.

    Cases are run with hypothesis directly: schemathesis' pytest loader
    (`schemathesis.pytest.from_fixture`) fails on pytest 9.2.
    """
    schema = schemathesis.openapi.from_url(f"{live}/openapi.json", timeout=10)
    failures = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"the document is invalid: {result.err()}")
            continue
        operation = result.ok()
        try:
            _fuzz_operation(operation, spare)
        except Exception as error:  # report every operation, not the first
            failures.append(f"{operation.label}: {error}")
    assert not failures, "\n\n".join(failures)


def test_fuzz_surrogate_key_is_a_clean_400(client: TestClient) -> None:
    body = b'[{"_timestamp": "2015-01-01T00:00:00Z", "\\udcff": 1}]'
    answer = client.post(PATH, content=body, headers=auth(ALPHA))

    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == "\\udcff"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param("period=hour&duration=100001", "period", id="too-many"),
        pytest.param("period=day&start_at=9999-12-31T00:00:00Z"
                     "&end_at=9999-12-31T12:00:00Z", "end_at", id="past-9999"),
    ],
)  # fmt: skip
def test_fuzz_period_windows_are_bounded(
    client: TestClient, text: str, field: str
) -> None:
    answer = client.get(f"{PATH}?{text}", headers=auth())

    assert answer.status_code == 400
    assert [error["field"] for error in answer.json()["errors"]] == [field]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        pytest.param("GET", "/tokens?data_set=a%00b", None, 404, id="token-list"),
        pytest.param("POST", "/tokens", {"data_set": "a\x00b", "scopes": ["read"]},
                     404, id="token-issue"),
        pytest.param("GET", "/data/a%00/b", None, 404, id="read-admin"),
        pytest.param("GET", f"{PATH}?filter_by=a:%00", None, 400, id="filter"),
        pytest.param("GET", f"{PATH}?filter_by_prefix=a:%00", None, 400,
                     id="prefix"),
        pytest.param("GET", f"{PATH}?sort_by=a%00:ascending", None, 400,
                     id="sort"),
    ],
)  # fmt: skip
def test_fuzz_nul_is_refused_on_every_store(
    limited: Any, method: str, path: str, body: Any, status: int
) -> None:
    """U+0000 reached PostgreSQL, which refuses it in text: a 500 there."""
    client = limited(admin_token=ADMIN_TOKEN)
    answer = client.request(method, path, json=body, headers=ADMIN)

    assert answer.status_code == status, answer.text
    _error_shape(answer)


def test_fuzz_nul_data_set_read_without_token_is_401(client: TestClient) -> None:
    assert client.get("/data/a%00/b").status_code == 401
