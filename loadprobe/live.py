"""What a run shows while it runs: Prometheus metrics and the terminal display.

Both are fed by `loadprobe run` from the raw-sample stream (see samples.py),
in the orchestrating process (plain threads, no gevent), so the Prometheus
endpoint lives on this host even when Locust runs inside a lab namespace.

Metrics (all labelled ``town`` and ``path``; ``path`` is the path the run is
on, as the route lookup found it):

- ``loadprobe_transaction_duration_seconds{transaction}``: histogram of the
  successful transactions' durations;
- ``loadprobe_transactions_total{transaction}`` and
  ``loadprobe_transaction_failures_total{transaction}``;
- ``loadprobe_requests_total{transaction}`` and
  ``loadprobe_request_failures_total{transaction}``: the HTTP requests of
  each transaction;
- ``loadprobe_active_terminals``;
- ``loadprobe_run_running``: 1 while the run goes, 0 after;
- when it is done: ``loadprobe_verdict_pass`` (1 pass, 0 fail),
  ``loadprobe_threshold_pass{transaction,threshold}`` per judged threshold
  and ``loadprobe_degradation_factor{transaction}`` where a baseline exists.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TextIO

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from loadprobe import verdict
from loadprobe.samples import Record, RequestRecord, TxRecord, UsersRecord
from netwatch import webconfig
from netwatch.topology import TRANSACTIONS

DEFAULT_PORT = 9472
BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    45.0,
    60.0,
    120.0,
)


class LiveMetrics:
    """The run's Prometheus metrics (see the module docstring), in their own registry."""

    def __init__(self, town: str) -> None:
        self.town = town
        self.path = "unknown"
        self.registry = r = CollectorRegistry()
        base = ("town", "path")
        tx = (*base, "transaction")

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, tx, registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = base) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        self.duration = Histogram(
            "loadprobe_transaction_duration_seconds",
            "Duration of successful transactions (exact figures are in the report)",
            tx,
            buckets=BUCKETS,
            registry=r,
        )
        self.transactions = counter("loadprobe_transactions", "Transactions recorded")
        self.tx_failures = counter(
            "loadprobe_transaction_failures",
            "Transactions that failed (request error or content check)",
        )
        self.requests = counter(
            "loadprobe_requests", "HTTP requests, by the transaction they belong to"
        )
        self.request_failures = counter(
            "loadprobe_request_failures", "HTTP requests that failed, by transaction"
        )
        self.terminals = gauge("loadprobe_active_terminals", "Terminals running now")
        self.running = gauge("loadprobe_run_running", "1 while a run goes")
        self.verdict = gauge("loadprobe_verdict_pass", "1 if the last run passed every threshold")
        self.threshold = gauge(
            "loadprobe_threshold_pass",
            "1 if the threshold held in the last run, 0 if it failed",
            (*tx, "threshold"),
        )
        self.degradation = gauge(
            "loadprobe_degradation_factor", "p95 of this run over the baseline's p95", tx
        )
        self.port: int | None = None
        self.server: webconfig.MetricsServer | None = None

    def serve(self, host: str, port: int, web: webconfig.WebConfig | None = None) -> int:
        """Start the HTTP endpoint (with `web`'s TLS and basic auth); returns
        the port (useful with port 0)."""
        self.server = webconfig.serve_metrics(self.registry, host, port, web)
        self.port = self.server.port
        return self.port

    def start_run(self, path: str) -> None:
        self.path = path
        self.running.labels(self.town, path).set(1)
        self.terminals.labels(self.town, path).set(0)
        # Every transaction's counters from 0: a run without failures still
        # has a failure series (a rate of 0), and the first one is a change.
        for name in TRANSACTIONS:
            for family in (
                self.transactions,
                self.tx_failures,
                self.requests,
                self.request_failures,
            ):
                family.labels(self.town, path, name)

    def feed(self, records: Iterable[Record]) -> None:
        town, path = self.town, self.path
        for record in records:
            if isinstance(record, TxRecord):
                labels = (town, path, record.transaction)
                self.transactions.labels(*labels).inc()
                if record.sample.ok:
                    self.duration.labels(*labels).observe(record.sample.duration)
                else:
                    self.tx_failures.labels(*labels).inc()
            elif isinstance(record, RequestRecord):
                labels = (town, path, record.transaction)
                self.requests.labels(*labels).inc()
                if not record.sample.ok:
                    self.request_failures.labels(*labels).inc()
            elif isinstance(record, UsersRecord):
                self.terminals.labels(town, path).set(record.terminals)

    def finish_run(
        self,
        checks: Iterable[verdict.Check],
        factors: Mapping[str, float | None],
    ) -> None:
        town, path = self.town, self.path
        checks = list(checks)
        self.running.labels(town, path).set(0)
        self.terminals.labels(town, path).set(0)
        self.verdict.labels(town, path).set(1 if verdict.passed(checks) else 0)
        for check in checks:
            if check.status != "skip" and check.transaction:
                self.threshold.labels(town, path, check.transaction, check.metric).set(
                    1 if check.status == "pass" else 0
                )
        for name, factor in factors.items():
            if factor is not None:
                self.degradation.labels(town, path, name).set(factor)


class Progress:
    """One status line: elapsed, terminals, requests, failures, current p95 per
    transaction. Redrawn in place on a terminal; a line every 10 s otherwise."""

    def __init__(
        self, transactions: Iterable[str], duration: float, stream: TextIO | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.duration = duration
        self.names = list(transactions)
        self.durations: dict[str, list[float]] = {n: [] for n in self.names}
        self.requests = 0
        self.failures = 0
        self.terminals = 0
        self.started = time.monotonic()
        self.label = ""
        self._last = 0.0
        self._lock = threading.Lock()

    def start(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.durations = {n: [] for n in self.names}
        self.requests = self.failures = self.terminals = 0

    def feed(self, records: Iterable[Record]) -> None:
        for record in records:
            if isinstance(record, RequestRecord):
                self.requests += 1
                self.failures += 0 if record.sample.ok else 1
            elif isinstance(record, TxRecord):
                if record.sample.ok:
                    self.durations.setdefault(record.transaction, []).append(record.sample.duration)
            elif isinstance(record, UsersRecord):
                self.terminals = record.terminals

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        p95s = []
        for name, values in self.durations.items():
            p95 = verdict.percentile(sorted(values), 95)
            p95s.append(f"{name} {verdict.format_seconds(p95)}")
        return (
            f"[{self.label}] {_clock(elapsed)}/{_clock(self.duration)}  "
            f"terminals {self.terminals}  requests {self.requests}  "
            f"failures {self.failures}  p95: " + ", ".join(p95s)
        )

    def show(self, *, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if self.tty:
                if force or now - self._last >= 1.0:
                    self.stream.write("\r\x1b[2K" + self.line())
                    self.stream.flush()
                    self._last = now
            elif force or now - self._last >= 10.0:
                self.stream.write(self.line() + "\n")
                self.stream.flush()
                self._last = now

    def end(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line() + "\n")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"
