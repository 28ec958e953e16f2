"""Rate limits per token and per client address, answered with 429.

Each limit is a fixed window per key: a key's window opens with its first
request and lasts `rate_limit_window` seconds; every request in it, refused
ones included, adds one to the key's count, and a request that takes the
count over the limit is refused until the window ends. Windows open per key,
not on the clock, so keys do not all reset at the same moment. The price of
one counter per key is that a client may send up to twice the limit across
the end of one window and the start of the next.

The keys are `token:<SHA-256 of the token, in hex>`, for a request with a
bearer token, and `address:<client address>`. A token is counted as sent,
before it is checked, so that a refusal costs no store look-up; the address
limit bounds a client that makes up tokens. The token value is never a key.

Counts live in the server process (`MemoryCounts`), or in Redis
(`RedisCounts`) when `rate_limit_redis` is set, so that several server
processes share them. When Redis fails, requests go through unchecked (the
limits fail open, for availability): a WARNING is logged, the metric
`tallybook_rate_limit_unchecked_total` counts them, and Redis is left alone
for `PAUSE_SECONDS` before it is asked again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tallybook.datasets import hash_token
from tallybook.errors import TooManyRequests
from tallybook.http.auth import bearer_token
from tallybook.http.responses import error_response
from tallybook.settings import Settings

PAUSE_SECONDS = 5
REDIS_TIMEOUT_SECONDS = 1.0
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
Clock = Callable[[], float]
logger = logging.getLogger(__name__)

# Count every key, and give a key its window when it has none: a new key, or
# one that lost its expiry (it would never reset). A script runs atomically,
# so two processes cannot both open a window for the same key.
_HIT_SCRIPT = """
local counts = {}
for _, key in ipairs(KEYS) do
  local requests = redis.call("INCR", key)
  local left = redis.call("PTTL", key)
  if left < 0 then
    redis.call("PEXPIRE", key, ARGV[1])
    left = tonumber(ARGV[1])
  end
  table.insert(counts, requests)
  table.insert(counts, left)
end
return counts
"""


@dataclass(frozen=True, slots=True)
class Count:
    """A key's requests in its current window.

    Attributes:
        requests: the requests counted in the window, this one included.
        reset: seconds until the window ends.
    """

    requests: int
    reset: float


class Counts(Protocol):
    """Where request counts are kept: in the process, or in Redis."""

    async def hit(self, keys: Sequence[str], window: int) -> list[Count] | None:
        """Count one request for each key; None if the counts are out of reach."""

    async def close(self) -> None:
        """Let go of any connection."""


@dataclass(slots=True)
class _Window:
    end: float
    requests: int = 0


class MemoryCounts:
    """Counts kept in this process: right when one server process runs."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._windows: dict[str, _Window] = {}
        self._sweep_at = 0.0

    async def hit(self, keys: Sequence[str], window: int) -> list[Count]:
        """Count one request for each key."""
        now = self.clock()
        self._sweep(now, window)
        return [self._hit(key, now, window) for key in keys]

    def _hit(self, key: str, now: float, window: int) -> Count:
        current = self._windows.get(key)
        if current is None or current.end <= now:
            current = self._windows[key] = _Window(now + window)
        current.requests += 1
        return Count(current.requests, current.end - now)

    def _sweep(self, now: float, window: int) -> None:
        """Forget ended windows, once a window, so memory follows active keys."""
        if now < self._sweep_at:
            return
        self._windows = {k: w for k, w in self._windows.items() if w.end > now}
        self._sweep_at = now + window

    async def close(self) -> None:
        """Nothing to let go of."""


class RedisCounts:
    """Counts kept in Redis, shared by every server process that uses it."""

    def __init__(self, url: str, prefix: str, clock: Clock = time.monotonic) -> None:
        # No retries and short timeouts: a request must not wait long on a
        # Redis that is gone, since the limits fail open anyway.
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        self._script = self._client.register_script(_HIT_SCRIPT)
        self.prefix = prefix
        self.clock = clock
        self._paused_until: float | None = None

    async def hit(self, keys: Sequence[str], window: int) -> list[Count] | None:
        """Count one request for each key; None while Redis is out of reach."""
        if self._paused_until is not None and self.clock() < self._paused_until:
            return None
        names = [f"{self.prefix}:{key}" for key in keys]
        try:
            answer = await self._script(keys=names, args=[window * 1000])
        except (RedisError, OSError) as exc:
            self._pause(exc)
            return None
        if self._paused_until is not None:
            logger.info("rate limits are on again: Redis answers")
            self._paused_until = None
        pairs = zip(answer[::2], answer[1::2], strict=True)
        return [Count(int(requests), int(left) / 1000) for requests, left in pairs]

    def _pause(self, exc: Exception) -> None:
        now = self.clock()
        if self._paused_until is None or now >= self._paused_until:
            logger.warning(
                "rate limits are not applied for %d seconds: Redis failed: %s",
                PAUSE_SECONDS,
                exc,
            )
        self._paused_until = now + PAUSE_SECONDS

    async def close(self) -> None:
        """Close the connections to Redis."""
        await self._client.aclose()


@dataclass(frozen=True, slots=True)
class Quota:
    """One limit as it stands for one request.

    Attributes:
        key: what is counted: `token` or `address`.
        limit: the most requests a window allows.
        window: the window's length in seconds.
        count: the key's count, this request included.
    """

    key: str
    limit: int
    window: int
    count: Count

    @property
    def remaining(self) -> int:
        """Requests still allowed in this window."""
        return max(0, self.limit - self.count.requests)

    @property
    def exceeded(self) -> bool:
        """Whether this request is over the limit."""
        return self.count.requests > self.limit

    @property
    def reset(self) -> int:
        """Whole seconds until the window ends, at least 1."""
        return max(1, math.ceil(self.count.reset))


class RateLimits:
    """The rate limits of one application, and where their counts are kept."""

    def __init__(self, settings: Settings, counts: Counts) -> None:
        self.token = settings.rate_limit_token
        self.address = settings.rate_limit_address
        self.window = settings.rate_limit_window
        self.counts = counts

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Clock = time.monotonic
    ) -> RateLimits:
        """Build the limits `settings` ask for, with counts in Redis if it is set.

        Raises:
            ValueError: the settings cannot work (see `check_settings`).
        """
        check_settings(settings)
        counts: Counts = MemoryCounts(clock)
        if _limited(settings) and settings.rate_limit_redis:
            counts = RedisCounts(
                settings.rate_limit_redis, settings.rate_limit_prefix, clock
            )
        return cls(settings, counts)

    @property
    def on(self) -> bool:
        """Whether any limit is set."""
        return self.token > 0 or self.address > 0

    async def check(self, scope: Scope) -> list[Quota] | None:
        """Count the request against each limit that applies to it.

        Returns:
            One quota per limit that applies (none without a token and without
            an address limit), or None when the counts are out of reach and
            the request goes through unchecked.
        """
        limits = list(self._limits(scope))
        keys = [f"{key}:{value}" for key, _, value in limits]
        counts = await self.counts.hit(keys, self.window) if keys else []
        if counts is None:
            return None
        pairs = zip(limits, counts, strict=True)
        return [Quota(key, limit, self.window, c) for (key, limit, _), c in pairs]

    def _limits(self, scope: Scope) -> Iterator[tuple[str, int, str]]:
        token = bearer_token(Headers(scope=scope).get("authorization"))
        if self.token > 0 and token is not None:
            yield "token", self.token, hash_token(token).hex()
        if self.address > 0:
            client = scope.get("client")
            yield "address", self.address, client[0] if client else "unknown"

    async def close(self) -> None:
        """Let go of the connections to the counts."""
        await self.counts.close()


def check_settings(settings: Settings) -> None:
    """Refuse rate-limit settings that cannot work.

    Raises:
        ValueError: a negative limit, a window under one second, a URL that is
            not Redis's, or several workers with limits but no Redis to share
            their counts.
    """
    for name in ("rate_limit_token", "rate_limit_address"):
        if getattr(settings, name) < 0:
            raise ValueError(f"TALLYBOOK_{name.upper()} must be 0 (no limit) or more.")
    if settings.rate_limit_window < 1:
        raise ValueError("TALLYBOOK_RATE_LIMIT_WINDOW must be 1 second or more.")
    url = settings.rate_limit_redis
    if url and not url.startswith(REDIS_SCHEMES):
        raise ValueError(
            "TALLYBOOK_RATE_LIMIT_REDIS must be a redis://, rediss:// or unix:// URL."
        )
    if _limited(settings) and settings.workers > 1 and not url:
        raise ValueError(
            "Rate limits with several workers need TALLYBOOK_RATE_LIMIT_REDIS, a "
            "redis:// URL where the server processes share their counts; set it, "
            "or use --workers 1."
        )


def _limited(settings: Settings) -> bool:
    return settings.rate_limit_token > 0 or settings.rate_limit_address > 0


class RateLimit:
    """Middleware of a limited route: count, refuse with 429, add the headers.

    Routes without it (`/_status...`, `/metrics`, `/openapi.json`) are never
    counted, nor is a CORS preflight (OPTIONS): browsers send those on their
    own, without a token.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one request of a limited route."""
        state = scope["app"].state
        limits: RateLimits = state.rate_limits
        if not limits.on or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        quotas = await limits.check(scope)
        if quotas is None:
            state.metrics.rate_limit_unchecked.inc()
        if not quotas:
            await self.app(scope, receive, send)
            return

        shown = _closest(quotas)
        headers = rate_limit_headers(shown, quotas)
        if any(quota.exceeded for quota in quotas):
            state.metrics.rate_limited.labels(shown.key).inc()
            await _refusal(shown, headers)(scope, receive, send)
            return
        await self.app(scope, receive, _adding(headers, send))


def rate_limit_headers(shown: Quota, quotas: Sequence[Quota]) -> dict[str, str]:
    """The fields of draft-ietf-httpapi-ratelimit-headers-06.

    `RateLimit-Limit`, `-Remaining` and `-Reset` describe `shown`, the limit
    closest to refusing; `RateLimit-Policy` lists every limit that applies.
    """
    return {
        "RateLimit-Limit": str(shown.limit),
        "RateLimit-Remaining": str(shown.remaining),
        "RateLimit-Reset": str(shown.reset),
        "RateLimit-Policy": ", ".join(f"{q.limit};w={q.window}" for q in quotas),
    }


def _closest(quotas: Sequence[Quota]) -> Quota:
    """The limit with the fewest requests left; of equals, the longest wait."""
    return min(quotas, key=lambda quota: (quota.remaining, -quota.reset))


def _refusal(quota: Quota, headers: dict[str, str]) -> Response:
    whose = "this token" if quota.key == "token" else "this client address"
    error = TooManyRequests(
        f"Too many requests with {whose}: the limit is {quota.limit} every "
        f"{quota.window} seconds. Retry in {quota.reset} seconds.",
        headers={"Retry-After": str(quota.reset), **headers},
    )
    return error_response(error)


def _adding(headers: dict[str, str], send: Send) -> Send:
    """Wrap `send` so that the response carries `headers` too."""
    extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", []), *extra])
        await send(message)

    return send_with_headers
