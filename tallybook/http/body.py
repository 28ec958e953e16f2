"""Reading request bodies: media type, size limits, gzip and deflate."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator

from starlette.requests import Request

from tallybook.errors import (
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from tallybook.settings import Settings

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ENCODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


def check_json_type(request: Request) -> None:
    """Refuse a body that is not labelled `application/json`.

    The media type is compared without regard to case, and parameters such
    as `charset=utf-8` are allowed (RFC 9110 s8.3.1).

    Raises:
        UnsupportedMediaType: another media type, or none.
    """
    header = request.headers.get("content-type", "")
    if header.split(";", 1)[0].strip().lower() != "application/json":
        shown = header[:100] or "none"
        raise UnsupportedMediaType(
            f"The body must be sent as Content-Type: application/json, not {shown}."
        )


async def read_body(request: Request, settings: Settings) -> bytes:
    """Read the whole body, decoded, within the configured limits.

    Raises:
        PayloadTooLarge: over the body or decoded-size limit.
        InvalidRequest: a compressed body that is corrupt or cut short.
        UnsupportedMediaType: a content coding other than gzip or deflate.
        RequestTimeout: the client paused longer than `body_timeout`.
    """
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, "request body")
    inflater = _inflater(request.headers.get("content-encoding"), settings)
    chunks: list[bytes] = []
    size = 0
    async for chunk in _timed(request.stream(), settings.body_timeout):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, "request body")
        chunks.append(inflater.feed(chunk) if inflater else chunk)
    if inflater and size:
        inflater.finish()
    return b"".join(chunks)


async def _timed(chunks: AsyncIterator[bytes], seconds: float) -> AsyncIterator[bytes]:
    """The chunks of a body, as long as none is more than `seconds` late."""
    iterator = aiter(chunks)
    while True:
        try:
            async with asyncio.timeout(seconds):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestTimeout(
                f"The request body stopped arriving for {seconds:g} seconds; "
                "nothing was stored. Send the whole body without pausing.",
                headers={"Connection": "close"},
            ) from None
        yield chunk


def _too_large(limit: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The {what} is larger than the limit of {limit} bytes; send fewer "
        "records per request."
    )


def _inflater(header: str | None, settings: Settings) -> _Inflater | None:
    coding = (header or "identity").strip().lower()
    if coding in ("", "identity"):
        return None
    if coding not in _ENCODINGS:
        raise UnsupportedMediaType(
            f"The content coding {coding[:40]!r} is not supported; use gzip, "
            "deflate or none."
        )
    return _Inflater(_ENCODINGS[coding], settings.max_decoded_bytes)


class _Inflater:
    """Decompresses a body piece by piece, stopping at the decoded-size cap."""

    def __init__(self, coding: str, cap: int) -> None:
        self.coding = coding
        self.cap = cap
        self.size = 0
        self.engine: zlib._Decompress | None = None

    def feed(self, data: bytes) -> bytes:
        pieces = []
        while data:
            engine = self.engine = self.engine or self._engine_for(data)
            try:
                piece = engine.decompress(data, self.cap - self.size + 1)
            except zlib.error as exc:
                raise self._corrupt() from exc
            self.size += len(piece)
            if self.size > self.cap:
                raise _too_large(self.cap, "decoded body")
            pieces.append(piece)
            data = engine.unconsumed_tail
            if engine.eof:
                # A gzip body may hold several members, one after another.
                data, self.engine = engine.unused_data, None
        return b"".join(pieces)

    def finish(self) -> None:
        if self.engine is not None and not self.engine.eof:
            raise InvalidRequest(f"The {self.coding} body ends before its data does.")

    def _engine_for(self, data: bytes) -> zlib._Decompress:
        if self.coding == "gzip":
            return zlib.decompressobj(_GZIP_WBITS)
        # RFC 9110 s8.4.1.2: "deflate" is the zlib format, yet some clients
        # send raw deflate data; a zlib header has a checksum to tell them apart.
        zlib_header = len(data) >= 2 and (data[0] << 8 | data[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)

    def _corrupt(self) -> InvalidRequest:
        return InvalidRequest(
            f"The body is not valid {self.coding} data, though its "
            f"Content-Encoding says {self.coding}."
        )
