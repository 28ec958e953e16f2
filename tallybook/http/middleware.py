"""The outermost layer: path clean-up, request ids, the request log, 500s."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tallybook.http.responses import internal_error_response

logger = logging.getLogger("tallybook.requests")
CLIENT_CLOSED = 499
_SLASHES = re.compile(r"//+")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_ID_HEADERS = (b"govuk-request-id", b"x-request-id")


class RequestLog:
    """Clean the path, give the request an id, log one line, catch crashes.

    Paths are taken as the same with repeated or trailing slashes
    (`//data//g/t/` is `/data/g/t`), because existing clients send such URLs
    and a write must never be redirected.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = dict(scope, path=clean_path(scope["path"]))
        request_id = _request_id(scope)
        scope.setdefault("state", {}).update(request_id=request_id, records=0)
        seen: dict[str, Any] = {"status": None}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                headers = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
                message = dict(message, headers=headers)
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client left before its body was read: nothing was stored and
            # there is no one to answer. 499 is the log convention for it.
            seen["status"] = CLIENT_CLOSED
        except Exception:
            logger.exception("request %s failed", request_id)
            if seen["status"] is None:
                await internal_error_response(request_id)(scope, receive, send_with_id)
        seconds = time.perf_counter() - started
        _log(scope, seen["status"], seconds)
        _count(scope, seen["status"], seconds)


def clean_path(path: str) -> str:
    """Collapse repeated slashes and drop a trailing one."""
    path = _SLASHES.sub("/", path)
    return path.rstrip("/") or "/"


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name in _ID_HEADERS:
            text: str = value.decode("latin-1").strip()
            if _REQUEST_ID.fullmatch(text):
                return text
    return uuid.uuid4().hex


def _printable(text: str) -> str:
    """Escape control characters, so that a path cannot forge log lines."""
    return text if text.isprintable() else text.encode("unicode_escape").decode()


def _count(scope: Scope, status: int | None, seconds: float) -> None:
    metrics = getattr(scope["app"].state, "metrics", None)
    if metrics is None or status is None:
        return
    route = scope.get("route")
    template = getattr(route, "path", "unmatched")
    records = scope["state"].get("records", 0)
    metrics.observe(template, scope["method"], status, seconds, records)


def _log(scope: Scope, status: int | None, seconds: float) -> None:
    state = scope["state"]
    fields = {
        "method": scope["method"],
        "path": _printable(scope["path"][:200]),
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
        "records": state.get("records", 0),
        "request_id": state["request_id"],
    }
    logger.info(
        "%(method)s %(path)s %(status)s %(duration_ms).1fms records=%(records)d "
        "request_id=%(request_id)s",
        fields,
        extra={"request": fields},
    )
