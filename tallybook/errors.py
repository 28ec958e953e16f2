"""The exceptions tallybook raises, and the problems they carry.

The tree::

    TallybookError
    ├── RequestError              the client's request is refused (4xx)
    │   ├── InvalidRequest        400: bad body, bad shape, bad records, bad query
    │   ├── Unauthorized          401: no usable token
    │   ├── Forbidden             403: a valid token without the right
    │   ├── NotFound              404
    │   ├── MethodNotAllowed      405
    │   ├── RequestTimeout        408: the body stopped arriving
    │   ├── Conflict              409: the name or token is taken
    │   ├── PayloadTooLarge       413
    │   ├── UnsupportedMediaType  415
    │   ├── TooManyRequests       429: over a rate limit
    │   └── ServiceUnavailable    503: the store cannot be reached now
    └── StoreError                the store failed or refused an operation
        ├── StoreUnavailable      the database cannot be reached (HTTP 503)
        ├── DataSetExists         a data set with that name exists already
        ├── DataSetNotFound       no data set with that name
        ├── TokenExists           the same token value is stored already
        ├── TokenNotFound         no token with that id
        └── SchemaMismatch        the database schema is not the code's

The client library (`tallybook.client`) raises its own branch:

    TallybookError
    └── ClientError               a request of the client did not succeed
        ├── ConnectionFailed      no answer, after every retry
        └── ErrorAnswer           the server answered with an error status
            ├── Refused           401 or 403: the token is wrong for this
            ├── Rejected          another 4xx: the request or its records
            └── ServerFailed      a 5xx, after every retry

Every request error carries a list of `Problem`; the HTTP layer renders them
all in one JSON shape (see `tallybook.http.responses`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a request.

    Attributes:
        message: a sentence for a person, naming the value and the fix.
        index: the record's position in the batch, when a record is at fault.
        field: the record field (or query parameter) at fault, if any.
    """

    message: str
    index: int | None = None
    field: str | None = None


class TallybookError(Exception):
    """Base of every exception tallybook raises on purpose."""


class RequestError(TallybookError):
    """A request that tallybook refuses; rendered as a 4xx JSON body."""

    status: int = 400

    def __init__(
        self,
        message: str,
        problems: Sequence[Problem] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems) or [Problem(message)]
        self.headers = dict(headers or {})

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the problems when the error crosses a process boundary.
        return (type(self), (self.message, self.problems, self.headers))


class InvalidRequest(RequestError):
    """The body, its records or the query are not acceptable."""

    status = 400


class Unauthorized(RequestError):
    """No token, or a token that is unknown, revoked or expired."""

    status = 401


class Forbidden(RequestError):
    """A valid token that does not grant this action on this data set."""

    status = 403


class NotFound(RequestError):
    """No such route or data set."""

    status = 404


class MethodNotAllowed(RequestError):
    """The route exists but not with this method."""

    status = 405


class RequestTimeout(RequestError):
    """The client stopped sending the request body; the connection is closed."""

    status = 408


class Conflict(RequestError):
    """The data set or token exists already."""

    status = 409


class PayloadTooLarge(RequestError):
    """The body, once read or decoded, is over a configured limit."""

    status = 413


class UnsupportedMediaType(RequestError):
    """The body is not labelled as JSON."""

    status = 415


class TooManyRequests(RequestError):
    """Over a rate limit: the token or the client address sent too many."""

    status = 429


class ServiceUnavailable(RequestError):
    """The request could not be served now; it may be retried."""

    status = 503


class StoreError(TallybookError):
    """The store could not carry out an operation."""


class StoreUnavailable(StoreError):
    """The database cannot be reached now; the same request may work later."""


class DataSetExists(StoreError):
    """A data set with this name exists already."""


class DataSetNotFound(StoreError):
    """No data set has this name."""


class TokenExists(StoreError):
    """The same token value is stored already."""


class TokenNotFound(StoreError):
    """No token has this id."""


class SchemaMismatch(StoreError):
    """The database was made by another version of tallybook."""


class ClientError(TallybookError):
    """A request of the client library did not succeed."""


class ConnectionFailed(ClientError):
    """The server could not be reached or did not answer, after every retry."""


class ErrorAnswer(ClientError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status.
        body: the server's JSON error body (empty if it sent none).
        errors: the body's `errors` list: record index, field and message.
    """

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        message = body.get("message") or f"the server answered {status}"
        super().__init__(f"{status}: {message}")
        self.status = status
        self.body = body
        self.errors: list[dict[str, Any]] = list(body.get("errors") or [])


class Refused(ErrorAnswer):
    """401 or 403: the token is missing, wrong, or not allowed this."""


class Rejected(ErrorAnswer):
    """Another 4xx: the request or its records were refused."""


class ServerFailed(ErrorAnswer):
    """A 5xx answer, after every retry."""
