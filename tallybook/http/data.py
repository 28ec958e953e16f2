"""Writes to a data set: POST and PUT on `/data/<group>/<type>` and `/<name>`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tallybook import records
from tallybook.datasets import WRITE, DataSet, data_set_name
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


async def post_records(request: Request) -> Response:
    """Store one record or a batch; records with a known `_id` are replaced."""
    name = data_set_name_of(request)
    data_set = await authorise(request, WRITE, name)
    rows = await _rows(request, data_set, array_required=False)
    await _store(request).write(data_set, rows)
    request.state.records = len(rows)
    if "name" in request.path_params:
        return json_response({"status": "ok", "message": DEPRECATION})
    return json_response({"status": "ok"})


async def put_records(request: Request) -> Response:
    """Replace the whole content of a data set; `[]` empties it."""
    name = data_set_name_of(request)
    data_set = await authorise(request, WRITE, name)
    rows = await _rows(request, data_set, array_required=True)
    count = await _store(request).replace(data_set, rows)
    request.state.records = len(rows)
    return json_response(
        {"status": "ok", "message": f"{name} now contains {count} records"}
    )


def data_set_name_of(request: Request) -> str:
    """The data set name a request's path gives."""
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
