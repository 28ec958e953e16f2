"""Operations on data sets and tokens, shared by the CLI and the admin API.

Each function checks its input, then acts through a store. Values of tokens
are returned once, by the function that makes them, and never stored.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from tallybook.datasets import (
    ADMIN,
    READ,
    WRITE,
    DataSet,
    Token,
    check_scopes,
    check_segment,
    hash_token,
    new_token,
    token_prefix,
)
from tallybook.errors import TokenNotFound
from tallybook.store import Store
from tallybook.summaries import Summary

SHORT_TOKEN = 32
ENV_ADMIN = "TALLYBOOK_ADMIN_TOKEN"
LONGEST = 100 * 365 * 86_400  # seconds: the longest age, expiry or grace period
_SURROGATE = re.compile("[\ud800-\udfff]")
# A token travels in a header: visible ASCII, no spaces (RFC 6750 s2.1 is
# stricter still; imported values from older services may use more).
_TOKEN_TEXT = re.compile(r"[\x21-\x7e]+", re.ASCII)
SETTINGS = (
    "description",
    "schema",
    "auto_ids",
    "max_age_expected",
    "public",
    "summary",
)
SUMMARY_FIELDS = 10  # at most, in each list of a summary
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


class SettingsError(ValueError):
    """Data set settings or token options that cannot be used; says why."""


def build_data_set(group: str, type: str, **settings: Any) -> DataSet:
    """Check a new data set's names and settings, and build it.

    Raises:
        SettingsError: a bad name, or a setting of the wrong kind.
    """
    try:
        check_segment("group", group)
        check_segment("type", type)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return change_settings(DataSet(group=group, type=type), **settings)


def change_settings(data_set: DataSet, **settings: Any) -> DataSet:
    """Return the data set with the given settings changed, after checks.

    Raises:
        SettingsError: an unknown setting, or a value of the wrong kind.
    """
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise SettingsError(
            f"unknown setting {sorted(unknown)[0]!r}; use {', '.join(SETTINGS)}."
        )
    checked: dict[str, Any] = {
        name: _CHECKS[name](value) for name, value in settings.items()
    }
    return dataclasses.replace(data_set, **checked)


def _description(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 10_000:
        raise SettingsError(
            "description must be a string of at most 10,000 characters."
        )
    _check_text("description", value)
    return value


def _schema(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SettingsError("schema must be a JSON Schema object, or null for none.")
    try:
        json.dumps(value, allow_nan=False)
        Draft202012Validator.check_schema(value)
    except ValueError:
        raise SettingsError("schema holds a number that is not finite.") from None
    except SchemaError as exc:
        raise SettingsError(
            f"schema is not a valid JSON Schema: {exc.message}."
        ) from None
    outside = _outside_references(value)
    if outside:
        raise SettingsError(
            f"schema refers to {outside[:80]!r}; only references inside the schema "
            "(starting with '#') are allowed: tallybook fetches nothing."
        )
    _check_text("schema", json.dumps(value, ensure_ascii=False))
    return value


def _outside_references(node: Any) -> str | None:
    """The first `$ref` (or `$dynamicRef`) that points outside the schema."""
    if isinstance(node, dict):
        for key, child in node.items():
            if key in ("$ref", "$dynamicRef") and not str(child).startswith("#"):
                return str(child)
            found = _outside_references(child)
            if found:
                return found
    if isinstance(node, list):
        for child in node:
            found = _outside_references(child)
            if found:
                return found
    return None


def _check_text(setting: str, value: str) -> None:
    if "\x00" in value or "\\u0000" in value or _SURROGATE.search(value):
        raise SettingsError(f"{setting} contains U+0000 or a lone surrogate.")


def _auto_ids(value: Any) -> tuple[str, ...]:
    fields = value.split(",") if isinstance(value, str) else value
    if not isinstance(fields, list | tuple) or not all(
        isinstance(f, str) for f in fields
    ):
        raise SettingsError("auto_ids must be a list of field names.")
    cleaned = tuple(field.strip() for field in fields if field.strip())
    bad = [field for field in cleaned if not _FIELD.fullmatch(field)]
    if bad:
        raise SettingsError(f"auto_ids field {bad[0]!r} is not a valid key.")
    return cleaned


def _max_age(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 < value <= LONGEST:
        raise SettingsError(
            f"max_age_expected must be a number of seconds from 1 to {LONGEST} "
            "(100 years)."
        )
    return int(value)


def _public(value: Any) -> bool:
    if type(value) is not bool:
        raise SettingsError("public must be true or false.")
    return bool(value)


def _summary(value: Any) -> Summary | None:
    """A summary from `{"group_by": [...], "collect": [...]}` or `a,b:c,d`."""
    if value is None:
        return None
    if isinstance(value, str):
        group_by, _, collect = value.partition(":")
        value = {"group_by": group_by.split(","), "collect": collect.split(",")}
    if not isinstance(value, dict) or set(value) - {"group_by", "collect"}:
        raise SettingsError(
            'summary must be {"group_by": [fields], "collect": [fields]}, or null.'
        )
    lists = [_summary_fields(name, value.get(name, [])) for name in SUMMARY_LISTS]
    return Summary(*lists)


SUMMARY_LISTS = ("group_by", "collect")


def _summary_fields(name: str, fields: Any) -> tuple[str, ...]:
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise SettingsError(f"summary {name} must be a list of field names.")
    cleaned = tuple(dict.fromkeys(f.strip() for f in fields if f.strip()))
    bad = [f for f in cleaned if not _FIELD.fullmatch(f) or f.startswith("_")]
    if bad:
        raise SettingsError(
            f"summary {name} field {bad[0][:60]!r} is not a field name, or is "
            "internal (starts with '_')."
        )
    if len(cleaned) > SUMMARY_FIELDS:
        raise SettingsError(
            f"summary {name} names {len(cleaned)} fields; at most {SUMMARY_FIELDS}."
        )
    return cleaned


_CHECKS: dict[str, Any] = {
    "description": _description,
    "schema": _schema,
    "auto_ids": _auto_ids,
    "max_age_expected": _max_age,
    "public": _public,
    "summary": _summary,
}


async def create_data_set(
    store: Store, data_set: DataSet, token_value: str | None = None
) -> tuple[DataSet, str, Token]:
    """Create a data set and a read and write token for it.

    Returns:
        The stored data set, the token's value, and the token.
    """
    created = await store.create_data_set(data_set)
    value, token = await issue_token(
        store,
        scopes=frozenset((READ, WRITE)),
        data_set_name=created.name,
        value=token_value,
    )
    return created, value, token


async def issue_token(
    store: Store,
    *,
    scopes: frozenset[str],
    data_set_name: str | None,
    name: str = "",
    expires_at: datetime | None = None,
    value: str | None = None,
) -> tuple[str, Token]:
    """Store a new token, or import `value`; return its value and record.

    Raises:
        SettingsError: the scopes do not fit the data set (or its absence),
            the expiry is past, or an imported value cannot be a token.
    """
    try:
        check_scopes(scopes, data_set_name)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if ADMIN in scopes and data_set_name is not None:
        raise SettingsError("an admin token covers every data set; name none.")
    check_token_name(name)
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise SettingsError("expires_at is in the past.")
    if value is not None:
        check_token_value(value)
    value = value or new_token()
    token = Token(
        scopes=scopes,
        data_set_name=data_set_name,
        created_at=datetime.now(UTC),
        name=name,
        prefix=token_prefix(value),
        expires_at=expires_at,
    )
    return value, await store.add_token(hash_token(value), token)


def check_token_value(value: str) -> None:
    """Refuse a value that could never be sent as a bearer token."""
    if not _TOKEN_TEXT.fullmatch(value) or len(value) > 4096:
        raise SettingsError(
            "a token must be 1 to 4,096 visible ASCII characters, with no spaces: "
            "it travels in an HTTP header."
        )


def check_token_name(name: str) -> None:
    """Refuse a token name that is too long or holds impossible characters."""
    if len(name) > 200:
        raise SettingsError("a token name is at most 200 characters.")
    _check_text("name", name)


async def rotate_token(
    store: Store, token_id: int, grace_seconds: int
) -> tuple[str, Token, Token]:
    """Issue a successor to a token; the old one works `grace_seconds` more.

    The successor has the old token's scopes, data set and name, and no
    expiry of its own.

    Returns:
        The new token's value, the new token, and the old one as changed.

    Raises:
        TokenNotFound: no token has the id.
        SettingsError: a grace period out of range, or a token that no
            longer works (revoked or expired): issue a new one instead.
    """
    if not 0 <= grace_seconds <= LONGEST:
        raise SettingsError(f"the grace period must be 0 to {LONGEST} seconds.")
    old = await store.get_token(token_id)
    if old is None:
        raise TokenNotFound(f"no token has the id {token_id}")
    now = datetime.now(UTC)
    if not old.is_active(now):
        raise SettingsError(
            f"token {token_id} no longer works (revoked or expired); issue a new one."
        )
    ends = now + timedelta(seconds=grace_seconds)
    if old.expires_at is not None and old.expires_at < ends:
        ends = old.expires_at
    value, new = await issue_token(
        store, scopes=old.scopes, data_set_name=old.data_set_name, name=old.name
    )
    ended = await store.end_token(token_id, ends, revoke=False)
    return value, new, ended


async def revoke_token(store: Store, token_id: int) -> Token:
    """Make a token stop working now.

    Raises:
        TokenNotFound: no token has the id.
    """
    return await store.end_token(token_id, datetime.now(UTC), revoke=True)


async def ensure_admin_token(store: Store, value: str) -> bool:
    """Make `value` the admin token from the environment; say if it was new.

    A value seen before is left as it is (a revoked one stays revoked). A new
    value is imported, and admin tokens imported from an earlier value are
    revoked: the variable names the one admin token it stands for.
    """
    check_token_value(value)
    if await store.find_grant(hash_token(value)) is not None:
        return False
    _, token = await issue_token(
        store,
        scopes=frozenset((ADMIN,)),
        data_set_name=None,
        name=ENV_ADMIN,
        value=value,
    )
    for earlier in await store.list_tokens():
        if earlier.name == ENV_ADMIN and earlier.id not in (None, token.id):
            await store.end_token(earlier.id, datetime.now(UTC), revoke=True)
    return True


def describe_data_set(data_set: DataSet) -> dict[str, Any]:
    """A data set as the CLI and the admin API show it."""
    return {
        "name": data_set.name,
        "group": data_set.group,
        "type": data_set.type,
        "description": data_set.description,
        "public": data_set.public,
        "auto_ids": list(data_set.auto_ids),
        "max_age_expected": data_set.max_age_expected,
        "schema": data_set.schema,
        "summary": None if data_set.summary is None else data_set.summary.describe(),
    }


def describe_token(token: Token) -> dict[str, Any]:
    """A token as the CLI and the admin API show it: never its value."""
    return {
        "id": token.id,
        "prefix": token.prefix,
        "data_set": token.data_set_name,
        "scopes": sorted(token.scopes),
        "name": token.name,
        "created_at": _text(token.created_at),
        "expires_at": _text(token.expires_at),
        "revoked_at": _text(token.revoked_at),
        "last_used_at": _text(token.last_used_at),
    }


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()
