"""The OpenAPI 3.1 document of the whole HTTP API, served at `/openapi.json`."""

from __future__ import annotations

from functools import cache
from importlib.metadata import version
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tallybook.http.responses import json_response

JSON = "application/json"
_REF = "#/components/schemas/"


async def get_openapi(request: Request) -> Response:
    """The OpenAPI document."""
    return json_response(document())


@cache
def document() -> dict[str, Any]:
    """Build the OpenAPI document (once)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tallybook",
            "version": version("tallybook"),
            "description": "A store for service performance data, compatible "
            "with the Performance Platform write API. See docs/api.md.",
        },
        "paths": {**_data_paths(), **_admin_paths(), **_system_paths()},
        "components": {
            "schemas": _schemas(),
            "responses": _responses(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _data_paths() -> dict[str, Any]:
    group_type = [_path_param("group"), _path_param("type")]
    read = _read_operation("Read a data set's records", group_type)
    write = _write_operation("Store one record or a batch", group_type, "ok")
    replace = _write_operation("Replace a data set's records", group_type, "message")
    replace["requestBody"] = _body({"type": "array", "items": _ref("Record")})
    legacy = [_path_param("name")]
    preflight = {
        "summary": "CORS preflight",
        "parameters": group_type,
        "responses": {"204": {"description": "Any origin may read"}},
    }
    return {
        "/data/{group}/{type}": {
            "get": read,
            "post": write,
            "put": replace,
            "options": preflight,
        },
        "/{name}": {
            "options": {**preflight, "parameters": legacy},
            "get": _read_operation("Read a data set by name (legacy)", legacy),
            "post": _write_operation(
                "Store records by name (legacy)", legacy, "message"
            ),
        },
    }


def _read_operation(summary: str, parameters: list[Any]) -> dict[str, Any]:
    query = [
        _query_param("start_at", "Records at or after this date-time (with offset)."),
        _query_param("end_at", "Records before this date-time (with offset)."),
        _query_param("inclusive", "true: end_at is included.", "boolean"),
        _query_param("period", "hour, day, week, month, quarter or year."),
        _query_param("duration", "With period: this many periods.", "integer"),
        _list_param("group_by", "Group by these fields."),
        _list_param("collect", "field or field:sum|count|mean|set, per group."),
        _list_param("filter_by", "field:value; records must equal it (ANDed)."),
        _list_param("filter_by_prefix", "field:prefix; text must start with it."),
        _query_param("sort_by", "field:ascending or field:descending."),
        _query_param(
            "limit", "At most this many rows or groups; 0 for all.", "integer"
        ),
        _query_param("flatten", "true: flat rows instead of nested values.", "boolean"),
        _query_param("format", "json (the default) or csv."),
    ]
    records = {"type": "array", "items": _ref("Record")}
    data = {"type": "object", "properties": {"data": records}, "required": ["data"]}
    return {
        "summary": summary,
        "security": [{"bearer": []}, {}],
        "parameters": parameters + query,
        "responses": {
            "200": _json("The records in order", data),
            **_errors(400, 401, 403, 404, 429, 503),
        },
    }


def _write_operation(
    summary: str, parameters: list[Any], answer: str
) -> dict[str, Any]:
    ok: dict[str, Any] = {"type": "object", "properties": {"status": {"const": "ok"}}}
    if answer == "message":
        ok["properties"]["message"] = {"type": "string"}
    batch = {"oneOf": [_ref("Record"), {"type": "array", "items": _ref("Record")}]}
    return {
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": parameters,
        "requestBody": _body(batch),
        "responses": {
            "200": _json("Stored, durably", ok),
            **_errors(400, 401, 403, 404, 413, 415, 429, 503),
        },
    }


def _admin_paths() -> dict[str, Any]:
    name, token_id = [_path_param("name")], [_path_param("token_id", "integer")]
    settings, token_in = _ref("DataSetSettings"), _ref("TokenRequest")
    return {
        "/data-sets": {
            "get": _admin("List data sets", [], None, 200, "DataSetList"),
            "post": _admin(
                "Create a data set and its first token",
                [],
                _ref("NewDataSet"),
                201,
                "CreatedDataSet",
            ),
        },
        "/data-sets/{name}": {
            "get": _admin("Show a data set", name, None, 200, "DataSetAnswer"),
            "patch": _admin("Change settings", name, settings, 200, "DataSetAnswer"),
            "delete": _admin(
                "Delete a data set, its records and tokens", name, None, 200, "Done"
            ),
        },
        "/data-sets/{name}/empty": {
            "post": _admin("Remove every record", name, None, 200, "Done"),
        },
        "/data-sets/{name}/tokens": {
            "get": _admin("List a data set's tokens", name, None, 200, "TokenList"),
            "post": _admin(
                "Issue or import a token", name, token_in, 201, "TokenAnswer"
            ),
        },
        "/tokens": {
            "get": _admin(
                "List tokens",
                [_query_param("data_set", "Only this data set's tokens.")],
                None,
                200,
                "TokenList",
            ),
            "post": _admin("Issue or import a token", [], token_in, 201, "TokenAnswer"),
        },
        "/tokens/{token_id}": {
            "delete": _admin("Revoke a token now", token_id, None, 200, "TokenAnswer"),
        },
        "/tokens/{token_id}/rotate": {
            "post": _admin(
                "Issue a successor; the old one works for a grace period",
                token_id,
                _ref("Rotation"),
                201,
                "Rotated",
            ),
        },
    }


def _admin(
    summary: str, parameters: list[Any], body: Any, status: int, answer: str
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": ["admin"],
        "security": [{"bearer": []}],
        "parameters": parameters,
        "responses": {
            str(status): _json(summary, _ref(answer)),
            **_errors(400, 401, 403, 404, 409, 413, 415, 429, 503),
        },
    }
    if body is not None:
        operation["requestBody"] = _body(body)
    return operation


def _system_paths() -> dict[str, Any]:
    status = {
        "type": "object",
        "properties": {"status": {"type": "string"}, "message": {"type": "string"}},
    }
    metrics = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "/_status": {"get": _system("Liveness", _json("The process answers", status))},
        "/_status/ready": {
            "get": _system("Readiness", _json("The store answers", status), 503)
        },
        "/_status/data-sets": {
            "get": _system(
                "Data sets out of date",
                _json("Freshness, in the original service's shape", _ref("Freshness")),
            )
        },
        "/metrics": {
            "get": _system(
                "Prometheus metrics",
                {"description": "The text exposition format", "content": metrics},
            )
        },
        "/openapi.json": {
            "get": _system(
                "This document", _json("The OpenAPI document", {"type": "object"})
            )
        },
    }


def _system(summary: str, answer: dict[str, Any], *errors: int) -> dict[str, Any]:
    return {
        "summary": summary,
        "tags": ["operations"],
        "responses": {"200": answer, **_errors(*errors)},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/{s}"} for s in statuses}


def _path_param(name: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}}


def _query_param(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": kind},
    }


def _list_param(name: str, description: str) -> dict[str, Any]:
    parameter = _query_param(name, description)
    parameter["schema"] = {"type": "array", "items": {"type": "string"}}
    parameter["explode"] = True
    return parameter


def _body(schema: Any) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": schema}}}


def _json(description: str, schema: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _schemas() -> dict[str, Any]:
    text, texts = {"type": "string"}, {"type": "array", "items": {"type": "string"}}
    moment = {"type": ["string", "null"], "format": "date-time"}
    settings = {
        "description": text,
        "public": {"type": "boolean"},
        "auto_ids": texts,
        "max_age_expected": {"type": ["integer", "null"], "minimum": 1},
        "schema": {"type": ["object", "null"]},
        "summary": {
            "type": ["object", "null"],
            "properties": {"group_by": texts, "collect": texts},
            "additionalProperties": False,
        },
    }
    token = {
        "id": {"type": "integer"},
        "prefix": text,
        "data_set": {"type": ["string", "null"]},
        "scopes": texts,
        "name": text,
        "created_at": moment,
        "expires_at": moment,
        "revoked_at": moment,
        "last_used_at": moment,
        "value": {"type": "string", "description": "Only when issued: shown once."},
    }
    data_set = {"name": text, "group": text, "type": text, **settings}
    return {
        "Record": {
            "type": "object",
            "required": ["_timestamp"],
            "properties": {
                "_timestamp": {"type": "string", "format": "date-time"},
                "_id": text,
                "_start_at": text,
                "_end_at": text,
            },
            "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
        },
        "Error": {
            "type": "object",
            "required": ["status", "message", "messages", "errors"],
            "properties": {
                "status": {"const": "error"},
                "message": text,
                "messages": texts,
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "index": {"type": ["integer", "null"]},
                            "field": {"type": ["string", "null"]},
                            "message": text,
                        },
                    },
                },
                "request_id": text,
            },
        },
        "DataSetSettings": {
            "type": "object",
            "properties": settings,
            "additionalProperties": False,
        },
        "NewDataSet": {
            "type": "object",
            "required": ["group", "type"],
            "properties": {"group": text, "type": text, **settings},
            "additionalProperties": False,
        },
        "DataSet": {"type": "object", "properties": data_set},
        "DataSetAnswer": _wrap("data_set", "DataSet"),
        "DataSetList": {
            "type": "object",
            "properties": {"data_sets": {"type": "array", "items": _ref("DataSet")}},
        },
        "Token": {"type": "object", "properties": token},
        "TokenAnswer": _wrap("token", "Token"),
        "TokenList": {
            "type": "object",
            "properties": {"tokens": {"type": "array", "items": _ref("Token")}},
        },
        "CreatedDataSet": {
            "type": "object",
            "properties": {"data_set": _ref("DataSet"), "token": _ref("Token")},
        },
        "TokenRequest": {
            "type": "object",
            "properties": {
                "scopes": {
                    "type": "array",
                    "items": {"enum": ["read", "write", "admin"]},
                },
                "name": text,
                "expires_at": moment,
                "data_set": text,
                "value": {"type": "string", "description": "Import this value."},
            },
        },
        "Rotation": {
            "type": "object",
            "properties": {"grace_seconds": {"type": "integer", "minimum": 0}},
        },
        "Rotated": {
            "type": "object",
            "properties": {"token": _ref("Token"), "previous": _ref("Token")},
        },
        "Done": {"type": "object", "properties": {"status": text, "message": text}},
        "Freshness": {
            "type": "object",
            "properties": {
                "status": {"enum": ["ok", "not okay"]},
                "message": text,
                "data_sets": {"type": ["array", "null"], "items": {"type": "object"}},
            },
        },
    }


def _wrap(key: str, name: str) -> dict[str, Any]:
    return {"type": "object", "properties": {key: _ref(name)}}


def _responses() -> dict[str, Any]:
    """The shared error answers, one per status."""
    reasons = {
        400: "The request, its body or its records are not acceptable",
        401: "No token, or an unknown, revoked or expired one",
        403: "The token does not allow this",
        404: "No such data set, token or route",
        409: "The data set or token exists already",
        413: "The body is over a configured limit",
        415: "The body is not application/json, or has an unknown coding",
        429: "Over a rate limit; retry after Retry-After seconds",
        503: "The store cannot be reached; retry after Retry-After seconds",
    }
    answers = {str(s): _json(text, _ref("Error")) for s, text in reasons.items()}
    answers["429"]["headers"] = _rate_limit_headers()
    return answers


def _rate_limit_headers() -> dict[str, Any]:
    """The fields of draft-ietf-httpapi-ratelimit-headers-06, and Retry-After."""
    fields = {
        "Retry-After": "Seconds to wait before sending again",
        "RateLimit-Limit": "Requests allowed in a window, by the closest limit",
        "RateLimit-Remaining": "Requests left in the window (0 when refused)",
        "RateLimit-Reset": "Seconds until the window ends",
        "RateLimit-Policy": "Every limit that applies, as limit;w=seconds",
    }
    integer, text = {"type": "integer"}, {"type": "string"}
    return {
        name: {"description": about, "schema": text if "Policy" in name else integer}
        for name, about in fields.items()
    }
