"""The ASGI application factory: routes, middleware and error handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tallybook.admin import ensure_admin_token
from tallybook.datasets import NAME_PATTERN
from tallybook.errors import (
    MethodNotAllowed,
    NotFound,
    RequestError,
    ServiceUnavailable,
    StoreUnavailable,
)
from tallybook.http import admin, data, openapi, reads, status
from tallybook.http.batches import BatchParser
from tallybook.http.metrics import Metrics, get_metrics
from tallybook.http.middleware import RequestLog
from tallybook.http.ratelimit import RateLimit, RateLimits
from tallybook.http.responses import error_response
from tallybook.records import Limits
from tallybook.settings import Settings
from tallybook.store import Store, open_store

Handler = Callable[[Request], Awaitable[Response]]
RETRY_AFTER_SECONDS = 5
logger = logging.getLogger(__name__)


class _NameConvertor(Convertor[str]):
    """Matches a path segment only if it could be a data set name."""

    regex = NAME_PATTERN

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("data_set_name", _NameConvertor())


def create_app(
    settings: Settings | None = None, store: Store | None = None
) -> Starlette:
    """Build the tallybook application.

    Args:
        settings: the configuration; by default read from the environment.
        store: the store to use; by default the one `settings.store` names.
            The application opens it at start-up and closes it at shutdown.
    """
    settings = settings or Settings.from_env()
    rate_limits = RateLimits.from_settings(settings)
    store = store or open_store(settings.store, pool_size=settings.pool_size)

    limits = Limits(
        max_records=settings.max_records,
        max_keys=settings.max_keys,
        max_key_length=settings.max_key_length,
        max_string_length=settings.max_string_length,
        max_id_length=settings.max_id_length,
    )
    parser = BatchParser(limits, settings.parse_workers, settings.parse_offload_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with store:
            if settings.admin_token and await ensure_admin_token(
                store, settings.admin_token
            ):
                logger.info("imported the admin token from TALLYBOOK_ADMIN_TOKEN")
            try:
                yield
            finally:
                parser.close()
                await asyncio.gather(*app.state.background, return_exceptions=True)
                await app.state.rate_limits.close()

    app = Starlette(
        routes=_routes(),
        middleware=[Middleware(RequestLog)],
        exception_handlers={
            RequestError: _refused,
            StoreUnavailable: _unavailable,
            HTTPException: _routing_error,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.parser = parser
    app.state.background = set()
    app.state.metrics = Metrics(store)
    app.state.rate_limits = rate_limits
    return app


def _routes() -> list[Route]:
    # Starlette tries routes in order: the write path comes first.
    name = "{name:data_set_name}"
    return [
        _route(
            "/data/{group}/{type}",
            GET=reads.get_records,
            POST=data.post_records,
            PUT=data.put_records,
            OPTIONS=reads.options_records,
        ),
        _system_route("/_status", status.get_status),
        _system_route("/_status/ready", status.get_ready),
        _system_route("/_status/data-sets", status.get_data_sets_status),
        _system_route("/metrics", get_metrics),
        _system_route("/openapi.json", openapi.get_openapi),
        _route("/data-sets", GET=admin.list_data_sets, POST=admin.create_data_set),
        _route(
            f"/data-sets/{name}",
            GET=admin.show_data_set,
            PATCH=admin.update_data_set,
            DELETE=admin.delete_data_set,
        ),
        _route(f"/data-sets/{name}/empty", POST=admin.empty_data_set),
        _route(
            f"/data-sets/{name}/tokens", GET=admin.list_tokens, POST=admin.issue_token
        ),
        _route("/tokens", GET=admin.list_tokens, POST=admin.issue_token),
        _route("/tokens/{token_id}", DELETE=admin.revoke_token),
        _route("/tokens/{token_id}/rotate", POST=admin.rotate_token),
        _route(
            f"/{name}",
            GET=reads.get_records,
            POST=data.post_records,
            OPTIONS=reads.options_records,
        ),
    ]


def _route(path: str, **handlers: Handler) -> Route:
    """One rate-limited route whose handler depends on the method (HEAD as GET)."""

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    limit = [Middleware(RateLimit)]
    return Route(path, dispatch, methods=list(handlers), middleware=limit)


def _system_route(path: str, handler: Handler) -> Route:
    """A GET route for monitoring and documents, never rate-limited."""
    return Route(path, handler, methods=["GET"])


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc)


async def _unavailable(request: Request, exc: Exception) -> Response:
    logger.warning("store unavailable: %s", exc)
    error = ServiceUnavailable(
        "The store is unavailable; nothing was stored. Retry in a few seconds.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
    return error_response(error)


async def _routing_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path[:100]
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error: RequestError = MethodNotAllowed(
            f"{request.method} is not allowed on {path}; use {allowed}.",
            headers={"Allow": allowed},
        )
    else:
        error = NotFound(f"No route or data set is at {path}.")
    return error_response(error)
