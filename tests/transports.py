"""httpx transports for client tests: the app in-process, or a script."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from starlette.testclient import TestClient

_HOP_HEADERS = {"host", "content-length", "connection", "accept-encoding"}


def app_transport(test_client: TestClient) -> httpx.MockTransport:
    """Carry httpx requests to the app through Starlette's test client."""

    def handle(request: httpx.Request) -> httpx.Response:
        headers = [(k, v) for k, v in request.headers.multi_items()
                   if k.lower() not in _HOP_HEADERS]  # fmt: skip
        answer = test_client.request(
            request.method,
            request.url.raw_path.decode(),
            headers=headers,
            content=request.content,
        )
        kept = [(k, v) for k, v in answer.headers.multi_items()
                if k.lower() not in ("content-length", "content-encoding")]  # fmt: skip
        return httpx.Response(answer.status_code, headers=kept, content=answer.content)

    return httpx.MockTransport(handle)


Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Script:
    """Answers requests with the given steps in order, keeping every request."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step(request) if callable(step) else step

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def answer(status: int, body: Any = None, **headers: str) -> httpx.Response:
    """A JSON answer with this status."""
    content = {"status": "ok"} if body is None else body
    return httpx.Response(status, json=content, headers=headers)
