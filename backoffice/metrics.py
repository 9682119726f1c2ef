"""Prometheus metrics of the reference application itself (`loadprobe_target_*`).

Request metrics are labelled by route template (`/api/v1/residents/{resident_id}`),
never by raw path, so a scan of unknown URLs cannot blow up the label set:
anything that matched no route is counted as "unmatched". State that
already lives elsewhere (sessions, batch jobs, ledger size) is read at
scrape time by a collector instead of being mirrored into gauges.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class TargetMetrics:
    """The metric objects of one application instance, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "loadprobe_target_http_requests",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "loadprobe_target_http_request_duration_seconds",
            "Time from request start to the last byte of the response, by route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.logons = Counter(
            "loadprobe_target_logons",
            "Logon attempts by town and result (ok, rejected).",
            ["town", "result"],
            registry=self.registry,
        )
        self.certificates = Counter(
            "loadprobe_target_certificates_issued",
            "Certificates issued by town and kind.",
            ["town", "kind"],
            registry=self.registry,
        )
        self.batch_submitted = Counter(
            "loadprobe_target_batch_jobs_submitted",
            "Batch jobs accepted, by town and kind.",
            ["town", "kind"],
            registry=self.registry,
        )


@dataclass(frozen=True, eq=False, kw_only=True)  # eq=False: the registry hashes it by identity
class StateCollector(Collector):
    """Build info and the state that lives elsewhere, read at every scrape.

    Register it in TargetMetrics.registry: `registry.register(StateCollector(...))`.
    """

    version: str
    sessions: Callable[[], Mapping[str, int]]
    batch_jobs: Callable[[], Mapping[str, int]]
    residents: Mapping[str, int]

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("loadprobe_target_build", "Version of the reference application.")
        info.add_metric([], {"version": self.version})
        yield info
        yield _gauge(
            "loadprobe_target_active_sessions",
            "Unexpired logon sessions by town.",
            "town",
            self.sessions(),
        )
        yield _gauge(
            "loadprobe_target_batch_jobs",
            "Batch jobs by state (since the ledger was created).",
            "state",
            self.batch_jobs(),
        )
        yield _gauge(
            "loadprobe_target_residents",
            "Residents in the ledger by town.",
            "town",
            self.residents,
        )


def _gauge(name: str, documentation: str, label: str, values: Mapping[str, int]) -> Metric:
    """A gauge with one label, one sample per key of `values`."""
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request.

    The route template is known only after routing, which stores the matched
    route in the (shared, mutable) ASGI scope, so it is read when the inner
    app returns.
    """

    def __init__(self, app: ASGIApp, metrics: TargetMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app dies before starting a response

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
