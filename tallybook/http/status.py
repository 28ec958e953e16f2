"""Operator endpoints: liveness, readiness and freshness."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tallybook.http.responses import json_response
from tallybook.store import Freshness, Store

_OPEN = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-cache"}


async def get_status(request: Request) -> Response:
    """Liveness: the process answers (the store is not touched)."""
    return json_response({"status": "ok", "message": "app is up"}, headers=_OPEN)


async def get_ready(request: Request) -> Response:
    """Readiness: the store answers a query (503 from the handler otherwise)."""
    store: Store = request.app.state.store
    await store.ping()
    return json_response({"status": "ok", "message": "the store answers"})


async def get_data_sets_status(request: Request) -> Response:
    """Data sets whose last write is older than their `max_age_expected`.

    The shape is the original service's, so its monitoring keeps working:
    always 200, `status` "ok" or "not okay".
    """
    store: Store = request.app.state.store
    now = datetime.now(UTC)
    stale = [_late(f, now) for f in await store.freshness() if _is_stale(f, now)]
    body: dict[str, Any] = {
        "status": "ok",
        "data_sets": None,
        "message": "All data_sets are in date",
    }
    if stale:
        noun = "data-set is" if len(stale) == 1 else "data-sets are"
        message = f"{len(stale)} {noun} out of date"
        body = {"status": "not okay", "data_sets": stale, "message": message}
    return json_response(body, headers=_OPEN)


def _is_stale(found: Freshness, now: datetime) -> bool:
    limit = found.data_set.max_age_expected
    if limit is None:
        return False
    last = found.last_updated
    return last is None or (now - last).total_seconds() > limit


def _late(found: Freshness, now: datetime) -> dict[str, Any]:
    limit = found.data_set.max_age_expected or 0
    last = found.last_updated
    late = None if last is None else int((now - last).total_seconds()) - limit
    return {
        "name": found.data_set.name,
        "seconds-out-of-date": late,
        "last-updated": None if last is None else last.astimezone(UTC).isoformat(),
        "max-age-expected": limit,
    }
