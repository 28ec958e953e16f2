"""The admin API: data sets and tokens over HTTP (an admin token required).

GET, POST           /data-sets
GET, PATCH, DELETE  /data-sets/{name}
POST                /data-sets/{name}/empty
GET, POST           /data-sets/{name}/tokens
GET, POST           /tokens
DELETE              /tokens/{id}              (revokes)
POST                /tokens/{id}/rotate
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tallybook import admin, records, timestamps
from tallybook.datasets import READ, WRITE, DataSet, Token
from tallybook.errors import (
    Conflict,
    DataSetExists,
    DataSetNotFound,
    InvalidRequest,
    NotFound,
    Problem,
    TokenExists,
    TokenNotFound,
)
from tallybook.http.auth import authorise_admin
from tallybook.http.body import check_json_type, read_body
from tallybook.http.responses import json_response
from tallybook.store import Store

Handler = Callable[[Request], Awaitable[Response]]


def admin_only(handler: Handler) -> Handler:
    """Check the admin token, and turn store refusals into HTTP answers."""

    async def guarded(request: Request) -> Response:
        await authorise_admin(request)
        try:
            return await handler(request)
        except admin.SettingsError as exc:
            raise InvalidRequest(_ended(str(exc))) from exc
        except (DataSetExists, TokenExists) as exc:
            raise Conflict(_sentence(str(exc))) from exc
        except (DataSetNotFound, TokenNotFound) as exc:
            raise NotFound(_sentence(str(exc))) from exc

    guarded.__doc__ = handler.__doc__
    return guarded


@admin_only
async def list_data_sets(request: Request) -> Response:
    """Every data set, ordered by name."""
    found = await _store(request).list_data_sets()
    return json_response({"data_sets": [admin.describe_data_set(d) for d in found]})


@admin_only
async def create_data_set(request: Request) -> Response:
    """Create a data set; answer it and its first token (the value shown once)."""
    body = await _object(request)
    group, type_ = body.pop("group", None), body.pop("type", None)
    if not isinstance(group, str) or not isinstance(type_, str):
        raise InvalidRequest("group and type are required strings.")
    data_set = admin.build_data_set(group, type_, **body)

    created, value, token = await admin.create_data_set(_store(request), data_set)

    described = admin.describe_data_set(created)
    return json_response(
        {"data_set": described, "token": _with_value(token, value)}, status=201
    )


@admin_only
async def show_data_set(request: Request) -> Response:
    """One data set's settings."""
    found = await _data_set(request)
    return json_response({"data_set": admin.describe_data_set(found)})


@admin_only
async def update_data_set(request: Request) -> Response:
    """Change the settings named in the body; answer them all."""
    changes = await _object(request)
    found = await _data_set(request)

    updated = await _store(request).update_data_set(
        admin.change_settings(found, **changes)
    )

    return json_response({"data_set": admin.describe_data_set(updated)})


@admin_only
async def delete_data_set(request: Request) -> Response:
    """Delete a data set with its records and tokens."""
    name = request.path_params["name"]
    await _store(request).delete_data_set(name)
    return json_response({"status": "ok", "message": f"deleted data set {name}"})


@admin_only
async def empty_data_set(request: Request) -> Response:
    """Remove every record; keep the settings and tokens."""
    found = await _data_set(request)
    count = await _store(request).replace(found, [])
    message = f"{found.name} now contains {count} records"
    return json_response({"status": "ok", "message": message})


@admin_only
async def list_tokens(request: Request) -> Response:
    """Tokens (of one data set under /data-sets/{name}/tokens), never values."""
    name = request.path_params.get("name", request.query_params.get("data_set"))
    if name is not None:
        await _data_set(request, name)
    found = await _store(request).list_tokens(name)
    return json_response({"tokens": [admin.describe_token(t) for t in found]})


@admin_only
async def issue_token(request: Request) -> Response:
    """Issue a token, or import one given as `value`; answer it (once)."""
    body = await _object(request)
    unknown = set(body) - {"scopes", "name", "expires_at", "value", "data_set"}
    if unknown:
        first = sorted(unknown)[0][:40]
        raise InvalidRequest(
            f"{first!r} is not a token setting; use scopes, name, expires_at, "
            "value, data_set."
        )
    name = request.path_params.get("name") or _optional_text(body, "data_set")
    value = _optional_text(body, "value")

    value_out, token = await admin.issue_token(
        _store(request),
        scopes=_scopes(body),
        data_set_name=name,
        name=_optional_text(body, "name") or "",
        expires_at=_moment(body, "expires_at"),
        value=value,
    )

    shown = admin.describe_token(token) if value else _with_value(token, value_out)
    answer: dict[str, Any] = {"token": shown}
    if value is not None and len(value) < admin.SHORT_TOKEN:
        answer["warning"] = (
            f"The imported token has {len(value)} characters; tokens under "
            f"{admin.SHORT_TOKEN} can be guessed. Rotate it when you can."
        )
    return json_response(answer, status=201)


@admin_only
async def revoke_token(request: Request) -> Response:
    """Make a token stop working now."""
    token = await admin.revoke_token(_store(request), _token_id(request))
    return json_response({"token": admin.describe_token(token)})


@admin_only
async def rotate_token(request: Request) -> Response:
    """Issue a successor; the old token works for `grace_seconds` more."""
    body = await _object(request, empty_allowed=True)
    grace = body.get("grace_seconds", 86_400)
    if type(grace) is not int:
        raise InvalidRequest("grace_seconds must be a whole number of seconds.")

    value, new, old = await admin.rotate_token(
        _store(request), _token_id(request), grace
    )

    answer = {"token": _with_value(new, value), "previous": admin.describe_token(old)}
    return json_response(answer, status=201)


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _data_set(request: Request, name: str | None = None) -> DataSet:
    name = request.path_params["name"] if name is None else name
    found = await _store(request).get_data_set(name)
    if found is None:
        raise NotFound(f"No data set is named {name}.")
    return found


async def _object(request: Request, *, empty_allowed: bool = False) -> dict[str, Any]:
    raw = await read_body(request, request.app.state.settings)
    if empty_allowed and not raw.strip():
        return {}
    check_json_type(request)
    document = records.load_json(raw)
    if not isinstance(document, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return document


def _scopes(body: dict[str, Any]) -> frozenset[str]:
    scopes = body.get("scopes", [READ, WRITE])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise InvalidRequest('scopes must be a list such as ["read", "write"].')
    return frozenset(scopes)


def _optional_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        message = f"{key} must be a string."
        raise InvalidRequest(message, [Problem(message, field=key)])
    return value


def _moment(body: dict[str, Any], key: str) -> datetime | None:
    text = _optional_text(body, key)
    if text is None:
        return None
    try:
        return timestamps.parse(text, offset_required=True)
    except timestamps.TimestampError as exc:
        message = f"{key} {text[:60]!r} {exc}; use e.g. {timestamps.EXAMPLE}."
        raise InvalidRequest(message, [Problem(message, field=key)]) from None


def _token_id(request: Request) -> int:
    text = request.path_params["token_id"]
    if not text.isdigit() or len(text) > 18:
        raise NotFound(f"No token has the id {text[:40]}.")
    return int(text)


def _with_value(token: Token, value: str) -> dict[str, Any]:
    return {**admin.describe_token(token), "value": value}


def _sentence(text: str) -> str:
    return _ended(text[:1].upper() + text[1:])


def _ended(text: str) -> str:
    return text if text.endswith(".") else text + "."
