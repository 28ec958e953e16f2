"""Every JSON answer tallybook sends, errors included, is built here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.responses import Response

from tallybook.errors import Problem, RequestError


def json_response(
    content: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Answer with a JSON body."""
    return Response(
        orjson.dumps(content),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def error_body(message: str, problems: Sequence[Problem]) -> dict[str, Any]:
    """The one shape of every error body.

    `messages` keeps the original admin tool working; `errors` is for
    programs: one entry per problem, with its record index and field (null
    when the problem is with the request as a whole).
    """
    return {
        "status": "error",
        "message": message,
        "messages": [problem.message for problem in problems],
        "errors": [
            {"index": p.index, "field": p.field, "message": p.message} for p in problems
        ],
    }


def error_response(error: RequestError) -> Response:
    """Answer a refused request."""
    body = error_body(error.message, error.problems)
    return json_response(body, error.status, error.headers)


def internal_error_response(request_id: str) -> Response:
    """Answer a request that failed inside tallybook, revealing nothing."""
    message = (
        f"An internal error happened; nothing was stored. Quote request id "
        f"{request_id} when reporting it."
    )
    body = error_body(message, [Problem(message)])
    body["request_id"] = request_id
    return json_response(body, 500)
