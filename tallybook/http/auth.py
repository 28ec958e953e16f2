"""Bearer-token checks (RFC 6750) for every data set route."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from datetime import UTC, datetime, timedelta

from starlette.requests import Request

from tallybook.datasets import ADMIN, READ, DataSet, Grant, Token, hash_token
from tallybook.errors import Forbidden, NotFound, Unauthorized
from tallybook.store import Store

REALM = 'Bearer realm="tallybook"'
LAST_USED_PRECISION = timedelta(minutes=1)
logger = logging.getLogger(__name__)
# RFC 6750 s2.1: the scheme is case-insensitive; the token itself is compared
# exactly, so only the scheme is matched without regard to case.
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +(\S+)")


def bearer_token(header: str | None) -> str | None:
    """Return the token of an `Authorization: Bearer` header, if any."""
    if header is None:
        return None
    match = _BEARER.fullmatch(header.strip())
    return None if match is None else match.group(1)


async def authorise(request: Request, scope: str, name: str) -> DataSet:
    """Return the named data set if the request may act on it with `scope`.

    A read of a public data set needs no token. A token of another data set,
    or of one that does not exist, is refused alike (403), so that tokens
    cannot probe which data sets exist; only an admin token hears 404.

    Raises:
        Unauthorized: no token, or an unknown, revoked or expired one.
        Forbidden: the token does not grant `scope` on this data set.
        NotFound: an admin token names a data set that does not exist.
    """
    store: Store = request.app.state.store
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        return await _anonymous(store, scope, name)
    grant = await _grant(request, token)
    if not grant.allows(scope, name):
        if scope == READ:
            # A valid token never makes a public data set harder to read.
            with contextlib.suppress(Unauthorized):
                return await _anonymous(store, scope, name)
        raise Forbidden(
            f"The token does not allow {scope} access to this data set.",
            headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope"'},
        )
    if grant.data_set is not None and grant.data_set.name == name:
        return grant.data_set
    found = await store.get_data_set(name)
    if found is None:
        raise NotFound(f"No data set is named {name}.")
    return found


async def authorise_admin(request: Request) -> Grant:
    """Let the request through only with an admin token.

    With no admin token issued, nothing passes: the admin API fails closed.

    Raises:
        Unauthorized: no token, or an unknown, revoked or expired one.
        Forbidden: a valid token without the admin scope.
    """
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise _missing()
    grant = await _grant(request, token)
    if ADMIN not in grant.scopes:
        raise Forbidden(
            "This needs an admin token.",
            headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope"'},
        )
    return grant


async def _grant(request: Request, token: str) -> Grant:
    store: Store = request.app.state.store
    now = datetime.now(UTC)
    grant = await store.find_grant(hash_token(token))
    if grant is None or not grant.is_active(now):
        raise Unauthorized(
            "The token is not valid: it is unknown, revoked or expired.",
            headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
        )
    _note_use(request, grant.token, now)
    return grant


def _note_use(request: Request, token: Token, now: datetime) -> None:
    """Record the token's use, at most once a minute, in the background."""
    last = token.last_used_at
    if token.id is None or (last is not None and now - last < LAST_USED_PRECISION):
        return
    store: Store = request.app.state.store
    background: set[asyncio.Task[None]] = request.app.state.background
    task = asyncio.get_running_loop().create_task(store.touch_token(token.id, now))
    background.add(task)
    task.add_done_callback(background.discard)
    task.add_done_callback(_report)


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("could not record a token's use: %s", task.exception())


def _missing() -> Unauthorized:
    return Unauthorized(
        "This request needs a token: send the header 'Authorization: Bearer <token>'.",
        headers={"WWW-Authenticate": REALM},
    )


async def _anonymous(store: Store, scope: str, name: str) -> DataSet:
    if scope == READ:
        data_set = await store.get_data_set(name)
        if data_set is not None and data_set.public:
            return data_set
    raise _missing()
