"""Handlers for the records of a data set: `/data/<group>/<type>` and `/<name>`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tallybook import query, records
from tallybook.datasets import READ, WRITE, DataSet, data_set_name
from tallybook.http.auth import authorise
from tallybook.http.batches import BatchParser
from tallybook.http.body import check_json_type, read_body
from tallybook.http.responses import json_response
from tallybook.settings import Settings
from tallybook.store import Store

DEPRECATION = (
    "Deprecation warning: writing to a data set by its name is deprecated; "
    "use /data/<data-group>/<data-type>."
)
_STREAM_CHUNK = 64 * 1024


async def post_records(request: Request) -> Response:
    """Store one record or a batch; records with a known `_id` are replaced."""
    name = _name(request)
    data_set = await authorise(request, WRITE, name)
    rows = await _rows(request, data_set, array_required=False)
    await _store(request).write(data_set, rows)
    request.state.records = len(rows)
    if "name" in request.path_params:
        return json_response({"status": "ok", "message": DEPRECATION})
    return json_response({"status": "ok"})


async def put_records(request: Request) -> Response:
    """Replace the whole content of a data set; `[]` empties it."""
    name = _name(request)
    data_set = await authorise(request, WRITE, name)
    rows = await _rows(request, data_set, array_required=True)
    count = await _store(request).replace(data_set, rows)
    request.state.records = len(rows)
    return json_response(
        {"status": "ok", "message": f"{name} now contains {count} records"}
    )


async def get_records(request: Request) -> Response:
    """Stream the records of a data set in `_timestamp` order."""
    name = _name(request)
    data_set = await authorise(request, READ, name)
    window = query.parse_window(request.query_params.multi_items())
    bodies = _store(request).read(data_set, window)
    first = await anext(bodies, None)  # store errors answer 503, not a torn body
    headers = {"Cache-Control": "no-cache"}
    document = _data_document(first, bodies, request.state)
    return StreamingResponse(document, media_type="application/json", headers=headers)


def _name(request: Request) -> str:
    params = request.path_params
    if "name" in params:
        return str(params["name"])
    return data_set_name(params["group"], params["type"])


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _rows(
    request: Request, data_set: DataSet, *, array_required: bool
) -> list[records.Record]:
    settings: Settings = request.app.state.settings
    check_json_type(request)

    body = await read_body(request, settings)
    parser: BatchParser = request.app.state.parser
    return await parser.parse(body, data_set, array_required=array_required)


async def _data_document(
    first: str | None, rest: AsyncIterator[str], state: State
) -> AsyncIterator[bytes]:
    """Wrap record bodies into `{"data": [...]}`, sent in chunks of ~64 KiB.

    The count of records sent goes to `state.records`, for the log line.
    """
    parts = ['{"data": [']
    size = 0
    separator = ""
    async for body in _chain(first, rest):
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


async def _chain(first: str | None, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    if first is None:
        return
    yield first
    async for body in rest:
        yield body
