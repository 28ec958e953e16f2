"""uvicorn's HTTP protocol with a deadline for headers and JSON answers.

uvicorn waits for a request's headers as long as the client likes: a client
that connects and sends nothing, or sends its headers a byte at a time, holds
a connection (and a little memory) for ever. `GuardedProtocol` gives each
connection `header_timeout` seconds, from when it is made or a new request
starts, to finish sending the headers; then it answers 408 and closes.

A client that stops reading an answer holds what the answer holds (a
streamed read keeps a store connection and its snapshot) for ever too: when
the transport's send buffer stays full for `send_timeout` seconds, the
connection is aborted, and the application hears that the client went away.

It also answers requests that are not HTTP at all with tallybook's JSON
error body instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import Transport
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tallybook.errors import Problem
from tallybook.http.responses import error_body

logger = logging.getLogger(__name__)
_REASONS = {400: b"Bad Request", 408: b"Request Timeout"}


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header and send deadlines and JSON error answers.

    `header_timeout` and `send_timeout` are set from the settings by each
    server process as it builds its application
    (`tallybook.server.serving_app`).
    """

    header_timeout: float = 10.0
    send_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._stalled: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request's headers."""
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        """Start the clock for this request's headers."""
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        """The headers arrived in time: stop the clock."""
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clocks of a connection that went away."""
        self._disarm()
        self._unstall()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The send buffer is full: the client has that long to take some."""
        super().pause_writing()
        self._unstall()
        self._stalled = self.loop.call_later(self.send_timeout, self._abandon)

    def resume_writing(self) -> None:
        """The client took enough of the answer: stop its clock."""
        self._unstall()
        super().resume_writing()

    def send_400_response(self, msg: str) -> None:
        """Answer bytes that are not an HTTP request with a JSON 400."""
        self._disarm()
        self._refuse(400, "The request is not valid HTTP/1.1.")

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        _cancel(self._deadline)
        self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        logger.info("closed a connection whose request headers were late")
        self._refuse(
            408,
            f"The request headers did not arrive within {self.header_timeout:g} "
            "seconds; the connection is closed.",
        )

    def _unstall(self) -> None:
        _cancel(self._stalled)
        self._stalled = None

    def _abandon(self) -> None:
        self._stalled = None
        logger.info(
            "closed a connection that left its answer unread for %g s",
            self.send_timeout,
        )
        self.transport.abort()

    def _refuse(self, status: int, message: str) -> None:
        """Write a JSON error answer and close the connection."""
        body = orjson.dumps(error_body(message, [Problem(message)]))
        head = (
            f"HTTP/1.1 {status} ".encode() + _REASONS[status] + b"\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        self.transport.close()


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()
