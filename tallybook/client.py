"""The Python client library: send records to tallybook and read them back.

    from tallybook.client import Client

    with Client("https://tallybook.example", token="tb_...") as client:
        counts = client.data_set("carers-allowance", "transaction-count")
        counts.post([{"_timestamp": "2015-01-01T00:00:00Z", "count": 123}])
        counts.read(start_at="2015-01-01T00:00:00Z")

Large inputs are sent in chunks; bodies over a threshold are gzipped. Failed
requests are retried when a retry can help (no answer, 429, 502, 503, 504,
and 500 if asked), with exponential backoff and jitter, honouring
`Retry-After`, within a total deadline; each retry sends the whole request
again. Errors raise the `ClientError` family of `tallybook.errors`, carrying
the server's JSON error body.
"""

from __future__ import annotations

import email.utils
import gzip
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import httpx
import orjson

from tallybook.errors import (
    ConnectionFailed,
    ErrorAnswer,
    Refused,
    Rejected,
    ServerFailed,
)

Record = Mapping[str, Any]
Progress = Callable[[int], None]
USER_AGENT = "tallybook-client"


@dataclass(frozen=True)
class Retry:
    """When and how often to try a request again.

    Attributes:
        attempts: most tries of one request, the first included.
        deadline: most seconds from the first try to the last.
        first_pause: seconds before the second try; doubled each time.
        longest_pause: the most a pause grows to.
        on_500: also retry 500 answers (off: a 500 may recur whatever).
    """

    attempts: int = 5
    deadline: float = 120.0
    first_pause: float = 0.5
    longest_pause: float = 30.0
    on_500: bool = False
    statuses: frozenset[int] = field(default=frozenset((429, 502, 503, 504)))

    def retries(self, status: int) -> bool:
        """Whether an answer with this status is worth another try."""
        return status in self.statuses or (self.on_500 and status == 500)

    def pause(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after the given try: the server's word, or backoff."""
        if retry_after is not None:
            return retry_after
        grown = min(self.longest_pause, self.first_pause * 2.0 ** (attempt - 1))
        return grown * random.uniform(0.5, 1.0)


NO_RETRY = Retry(attempts=1)
DEFAULT_RETRY = Retry()


class Client:
    """A connection pool to one tallybook service, with one token."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry: Retry = DEFAULT_RETRY,
        chunk_size: int = 1000,
        gzip_above: int = 2048,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Open a pool to `base_url` (e.g. `https://tallybook.example`)."""
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout,
            transport=transport,
        )
        self.retry = retry
        self.chunk_size = chunk_size
        self.gzip_above = gzip_above
        self._sleep = sleep

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def data_set(self, group: str, type: str) -> DataSetClient:
        """A handle on the data set `group`/`type`."""
        return DataSetClient(self, f"/data/{group}/{type}")

    def path(self, path: str) -> DataSetClient:
        """A handle on a data set at a path (such as a legacy `/<name>`)."""
        return DataSetClient(self, "/" + path.lstrip("/"))

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request (retried as `retry` says); return its JSON answer.

        Raises:
            ConnectionFailed: no answer after every retry.
            Refused: 401 or 403.
            Rejected: another 4xx.
            ServerFailed: a 5xx after every retry.
        """
        body, headers = (None, {}) if json is None else self._encode(json)
        answer = self._send(method, path, body, headers, params)
        return _decode(answer)

    def _encode(self, document: Any) -> tuple[bytes, dict[str, str]]:
        body = orjson.dumps(document, option=orjson.OPT_NAIVE_UTC)
        headers = {"Content-Type": "application/json"}
        if len(body) > self.gzip_above:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        return body, headers

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        params: Mapping[str, Any] | None,
    ) -> httpx.Response:
        # Built once and sent as it is on every try: a retry sends it whole.
        request = self._http.build_request(
            method, path, content=body, headers=headers, params=params
        )
        started = time.monotonic()
        for attempt in range(1, self.retry.attempts + 1):
            answer, failure = self._attempt(request)
            if answer is not None and not self.retry.retries(answer.status_code):
                return _checked(answer)
            pause = self.retry.pause(attempt, _retry_after(answer))
            spent = time.monotonic() - started
            if attempt == self.retry.attempts or spent + pause > self.retry.deadline:
                break
            self._sleep(pause)
        if answer is not None:
            return _checked(answer)
        raise ConnectionFailed(f"no answer from {self._http.base_url}: {failure}")

    def _attempt(
        self, request: httpx.Request
    ) -> tuple[httpx.Response | None, Exception | None]:
        try:
            return self._http.send(request), None
        except httpx.TransportError as exc:
            return None, exc


class DataSetClient:
    """One data set of a `Client`: post, replace, empty and read."""

    def __init__(self, client: Client, path: str) -> None:
        self.client = client
        self.path = path

    def post(
        self, records: Record | Iterable[Record], progress: Progress | None = None
    ) -> int:
        """Store records (one, or many in chunks); return how many were sent.

        Each chunk is one request and one transaction; if a chunk fails, the
        chunks before it stay stored and the error says which records failed.
        """
        if isinstance(records, Mapping):
            records = [records]
        sent = 0
        for chunk in _chunks(records, self.client.chunk_size):
            self.client.request("POST", self.path, json=chunk)
            sent += len(chunk)
            if progress is not None:
                progress(sent)
        return sent

    def replace(self, records: Iterable[Record]) -> str:
        """Make the data set hold exactly these records, in one request."""
        answer = self.client.request("PUT", self.path, json=list(records))
        return str(answer.get("message", ""))

    def empty(self) -> str:
        """Remove every record of the data set."""
        return self.replace([])

    def read(self, **query: Any) -> list[dict[str, Any]]:
        """Read records: `start_at`, `end_at` (datetimes or text), `limit`."""
        params = {
            key: _query_value(value)
            for key, value in query.items()
            if value is not None
        }
        answer = self.client.request("GET", self.path, params=params)
        data: list[dict[str, Any]] = answer["data"]
        return data


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(records)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _query_value(value: Any) -> Any:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.isoformat()
    return value


def _checked(answer: httpx.Response) -> httpx.Response:
    status = answer.status_code
    if status < 400:
        return answer
    body = _error_body(answer)
    if status in (401, 403):
        raise Refused(status, body)
    if status < 500:
        raise Rejected(status, body)
    raise ServerFailed(status, body)


def _error_body(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {"message": answer.text[:500]}
    return body if isinstance(body, dict) else {"message": str(body)[:500]}


def _decode(answer: httpx.Response) -> Any:
    if not answer.content:
        return {}
    try:
        return answer.json()
    except ValueError as exc:
        raise ErrorAnswer(
            answer.status_code, {"message": "the answer is not JSON"}
        ) from exc


def _retry_after(answer: httpx.Response | None) -> float | None:
    """The pause a server asked for with Retry-After (RFC 9110 s10.2.3)."""
    if answer is None or "retry-after" not in answer.headers:
        return None
    text = answer.headers["retry-after"].strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())
