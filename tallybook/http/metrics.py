"""Prometheus metrics of one server process, served at `/metrics`.

Each process counts for itself: with `--workers N` a scrape reaches one of
them. Labels hold route templates and status codes only, never data set
names, record contents or tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from tallybook.store.base import Store

_REFUSALS = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    415: "media_type",
    429: "rate_limited",
    503: "store_unavailable",
}
_STORE_ERRORS = {500: "internal", 503: "unavailable"}
_WRITES = frozenset(("POST", "PUT", "PATCH", "DELETE"))


class Metrics:
    """The counters and histograms of one application."""

    def __init__(self, store: Store | None = None) -> None:
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.registry = CollectorRegistry()
        if store is not None:
            self.registry.register(_StoreCounters(store))
        self.requests = Counter(
            "tallybook_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tallybook_request_duration_seconds",
            "Time from a request's start to its answer, by route template.",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.records = Counter(
            "tallybook_records_written",
            "Records stored by POST and PUT.",
            registry=self.registry,
        )
        self.refused = Counter(
            "tallybook_writes_refused",
            "Write requests refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.aggregates = Counter(
            "tallybook_aggregate_reads",
            "Aggregate reads, by what answered: a data set's summary or its records.",
            ["source"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "tallybook_rate_limited",
            "Requests refused with 429, by the limit gone over: token or address.",
            ["limit"],
            registry=self.registry,
        )
        self.rate_limit_unchecked = Counter(
            "tallybook_rate_limit_unchecked",
            "Requests let through without a rate-limit check: Redis failed.",
            registry=self.registry,
        )
        self.store_errors = Counter(
            "tallybook_store_errors",
            "Requests that failed in the store (500) or could not reach it (503).",
            ["kind"],
            registry=self.registry,
        )

    def observe(
        self, route: str, method: str, status: int, seconds: float, records: int
    ) -> None:
        """Count one answered request."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)
        if records and status < 400:
            self.records.inc(records)
        if method in _WRITES and status in _REFUSALS:
            self.refused.labels(_REFUSALS[status]).inc()
        if status in _STORE_ERRORS:
            self.store_errors.labels(_STORE_ERRORS[status]).inc()


class _StoreCounters(Collector):
    """The store's own counters, read at each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        for name, (text, value) in self.store.counters().items():
            yield CounterMetricFamily(name, text, value=value)


async def get_metrics(request: Request) -> Response:
    """The Prometheus text exposition of this process's metrics."""
    metrics: Metrics = request.app.state.metrics
    return Response(
        generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
