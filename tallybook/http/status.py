"""Operator endpoints."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tallybook.http.responses import json_response


async def get_status(request: Request) -> Response:
    """Liveness: the process answers (the store is not touched)."""
    return json_response({"status": "ok", "message": "app is up"})
