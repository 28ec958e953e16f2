"""Reads of a data set: GET (and CORS preflight) on `/data/<group>/<type>`.

Raw reads stream records as they are read. Every answer carries a strong
ETag of its body (answered 304 to a matching If-None-Match), except a raw
read larger than ETAG_BUFFER, which is streamed without one.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tallybook import results
from tallybook.datasets import READ, DataSet
from tallybook.http.auth import authorise
from tallybook.http.data import data_set_name_of
from tallybook.http.metrics import Metrics
from tallybook.query import Query, parse_query
from tallybook.settings import Settings
from tallybook.store import Store

ETAG_BUFFER = 4 * 1024 * 1024
_STREAM_CHUNK = 64 * 1024
_JSON = "application/json"
_CSV = "text/csv; charset=utf-8"
# The headers dashboards send: the original's clients add these request ids.
_ALLOWED_HEADERS = "Authorization, Govuk-Request-Id, Request-Id, X-Request-Id"


async def get_records(request: Request) -> Response:
    """Read records, raw or aggregated, as the query asks."""
    data_set = await authorise(request, READ, data_set_name_of(request))
    query = parse_query(request.query_params.multi_items(), datetime.now(UTC))
    headers = _cache_headers(request, data_set)

    if query.raw and query.format == "json":
        return await _streamed(request, data_set, query, headers)
    rows = await _rows(request, data_set, query)
    request.state.records = len(rows)

    if query.format == "csv":
        return _answer(
            request, results.to_csv(rows, query.group_by).encode(), _CSV, headers
        )
    return _answer(request, orjson.dumps({"data": rows}), _JSON, headers)


async def options_records(request: Request) -> Response:
    """CORS preflight: any origin may read (public data sets answer it)."""
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
            "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
            "Access-Control-Max-Age": "86400",
        },
    )


async def _rows(request: Request, data_set: DataSet, query: Query) -> list[Any]:
    store: Store = request.app.state.store
    if query.raw:
        return [orjson.loads(body) async for body in store.read(data_set, query)]
    by_period = query.period is not None
    found = await store.aggregate(data_set, query, by_period=by_period)
    metrics: Metrics = request.app.state.metrics
    metrics.aggregates.labels("summary" if found.from_summary else "records").inc()
    return results.shape(query, found.buckets)


def _cache_headers(request: Request, data_set: DataSet) -> dict[str, str]:
    if not data_set.public:
        return {"Cache-Control": "no-cache", "Vary": "Authorization"}
    settings: Settings = request.app.state.settings
    return {
        "Cache-Control": f"public, max-age={settings.public_max_age}",
        "Access-Control-Allow-Origin": "*",
    }


def _answer(
    request: Request, body: bytes, media_type: str, headers: dict[str, str]
) -> Response:
    etag = '"' + hashlib.sha256(body).hexdigest()[:40] + '"'
    headers = {**headers, "ETag": etag}
    if etag in _tags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _tags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header (RFC 9110 s13.1.2)."""
    return (
        {tag.strip() for tag in header.split(",")} if header.strip() != "*" else {"*"}
    )


async def _streamed(
    request: Request, data_set: DataSet, query: Query, headers: dict[str, str]
) -> Response:
    store: Store = request.app.state.store
    chunks = _document(store.read(data_set, query), request.state)
    buffered: list[bytes] = []
    size = 0
    async for chunk in chunks:  # store errors raise here, before any answer
        buffered.append(chunk)
        size += len(chunk)
        if size > ETAG_BUFFER:
            return StreamingResponse(
                _resume(buffered, chunks), media_type=_JSON, headers=headers
            )
    return _answer(request, b"".join(buffered), _JSON, headers)


async def _resume(
    done: list[bytes], rest: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    # Each chunk is let go once sent: a client that goes away mid-answer
    # leaves its generators in a reference cycle until the garbage collector
    # runs, and they should not hold the first 4 MiB meanwhile.
    done.reverse()
    while done:
        yield done.pop()
    async for chunk in rest:
        yield chunk


async def _document(bodies: AsyncIterator[str], state: State) -> AsyncIterator[bytes]:
    """Wrap record bodies into `{"data": [...]}`, in chunks of ~64 KiB.

    The count of records sent goes to `state.records`, for the log line.
    """
    parts = ['{"data": [']
    size = 0
    separator = ""
    async for body in bodies:
        state.records += 1
        parts.append(separator)
        parts.append(body)
        separator = ", "
        size += len(body)
        if size >= _STREAM_CHUNK:
            yield "".join(parts).encode()
            parts, size = [], 0
    parts.append("]}")
    yield "".join(parts).encode()
