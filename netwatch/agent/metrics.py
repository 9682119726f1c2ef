"""The agent's Prometheus metrics.

Events (probe results, RTTs, failovers, route errors) are counted as they
happen; state (path health, active path, MQTT) is read at scrape time from
the agent's latest snapshot, as client_python's custom collectors do, so a
scrape never waits on the agent and never sees a half-updated state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from netwatch.health import PathSnapshot, PathState
from netwatch.messages import HoldStatus

RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)


@dataclass(frozen=True)
class MqttStatus:
    enabled: bool = False
    connected: bool = False
    spooled: int = 0
    spool_dropped: int = 0
    published_events: int = 0


@dataclass(frozen=True)
class AgentSnapshot:
    town: str
    active: str | None
    all_down: bool
    paths: dict[str, PathSnapshot]
    mqtt: MqttStatus = MqttStatus()
    icmp_ignored: dict[str, int] = field(default_factory=dict)
    probe_results: dict[tuple[str, str, str], int] = field(
        default_factory=dict
    )  # path, kind, outcome
    # the kernel against the decision (None: the routes live elsewhere)
    routes_in_sync: bool | None = None
    route_conflicts: tuple[str, ...] = ()  # prefixes held by another protocol
    hold: HoldStatus | None = None  # a maintenance hold in force


class _StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], AgentSnapshot | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        if snap is None:
            return
        town = snap.town
        labels = ["town", "path"]
        up = GaugeMetricFamily(
            "netwatch_path_up", "1 when the path carries traffic (UP or DEGRADED)", labels=labels
        )
        state = GaugeMetricFamily(
            "netwatch_path_state", "1 for the path's current state", labels=[*labels, "state"]
        )
        active = GaugeMetricFamily(
            "netwatch_path_active", "1 for the path that carries the town's traffic", labels=labels
        )
        loss = GaugeMetricFamily(
            "netwatch_path_loss_ratio", "probe loss over the sliding window (0..1)", labels=labels
        )
        p50 = GaugeMetricFamily(
            "netwatch_path_rtt_p50_seconds", "median probe RTT over the window", labels=labels
        )
        p95 = GaugeMetricFamily(
            "netwatch_path_rtt_p95_seconds",
            "95th percentile probe RTT over the window",
            labels=labels,
        )
        jitter = GaugeMetricFamily(
            "netwatch_path_jitter_seconds",
            "mean RTT difference between consecutive probes",
            labels=labels,
        )
        damped = GaugeMetricFamily(
            "netwatch_path_damped", "1 while flap damping suppresses the path", labels=labels
        )
        penalty = GaugeMetricFamily(
            "netwatch_path_damping_penalty", "current flap-damping penalty", labels=labels
        )
        interval = GaugeMetricFamily(
            "netwatch_path_probe_interval_seconds",
            "current probe interval (shorter while suspect)",
            labels=labels,
        )
        for name, path in snap.paths.items():
            values = [town, name]
            up.add_metric(values, 1.0 if path.state.carries_traffic else 0.0)
            for candidate in PathState:
                state.add_metric(
                    [*values, candidate.value], 1.0 if path.state is candidate else 0.0
                )
            active.add_metric(values, 1.0 if snap.active == name else 0.0)
            loss.add_metric(values, path.stats.loss_ratio)
            if path.stats.rtt_p50 is not None:
                p50.add_metric(values, path.stats.rtt_p50)
            if path.stats.rtt_p95 is not None:
                p95.add_metric(values, path.stats.rtt_p95)
            if path.stats.jitter is not None:
                jitter.add_metric(values, path.stats.jitter)
            damped.add_metric(values, 1.0 if path.damped else 0.0)
            penalty.add_metric(values, path.penalty)
            interval.add_metric(values, path.interval)
        yield from (up, state, active, loss, p50, p95, jitter, damped, penalty, interval)
        alarm = GaugeMetricFamily(
            "netwatch_all_paths_down", "1 while no path of the town works", labels=["town"]
        )
        alarm.add_metric([town], 1.0 if snap.all_down else 0.0)
        yield alarm
        if snap.routes_in_sync is not None:
            in_sync = GaugeMetricFamily(
                "netwatch_routes_in_sync",
                "1 when the kernel's routes to every prefix follow the active path",
                labels=["town"],
            )
            in_sync.add_metric([town], 1.0 if snap.routes_in_sync else 0.0)
            yield in_sync
        conflict = GaugeMetricFamily(
            "netwatch_route_conflict",
            "1 for a prefix whose route belongs to another protocol (left alone)",
            labels=["town", "prefix"],
        )
        for prefix in snap.route_conflicts:
            conflict.add_metric([town, prefix], 1.0)
        yield conflict
        mqtt = snap.mqtt
        connected = GaugeMetricFamily(
            "netwatch_mqtt_connected", "1 while connected to the broker", labels=["town"]
        )
        connected.add_metric([town], 1.0 if mqtt.connected else 0.0)
        spooled = GaugeMetricFamily(
            "netwatch_mqtt_spooled_messages",
            "events waiting on disk for the broker",
            labels=["town"],
        )
        spooled.add_metric([town], float(mqtt.spooled))
        dropped = CounterMetricFamily(
            "netwatch_mqtt_spool_dropped",
            "events dropped because the spool was full",
            labels=["town"],
        )
        dropped.add_metric([town], float(mqtt.spool_dropped))
        published = CounterMetricFamily(
            "netwatch_mqtt_events_published", "events acknowledged by the broker", labels=["town"]
        )
        published.add_metric([town], float(mqtt.published_events))
        yield from (connected, spooled, dropped, published)
        held = GaugeMetricFamily(
            "netwatch_held",
            "1 while a maintenance hold keeps the town on the path",
            labels=["town", "path"],
        )
        expiry = GaugeMetricFamily(
            "netwatch_hold_expiry_timestamp_seconds",
            "when the maintenance hold in force ends (Unix time)",
            labels=["town"],
        )
        if snap.hold is not None:
            held.add_metric([town, snap.hold.path], 1.0)
            expiry.add_metric([town], snap.hold.until.timestamp())
        yield from (held, expiry)
        ignored = CounterMetricFamily(
            "netwatch_icmp_replies_ignored",
            "ICMP replies not matching an outstanding probe",
            labels=["town", "reason"],
        )
        for reason, count in sorted(snap.icmp_ignored.items()):
            ignored.add_metric([town, reason], float(count))
        yield ignored
        results = CounterMetricFamily(
            "netwatch_probe_results",
            "probes by outcome",
            labels=["town", "path", "kind", "outcome"],
        )
        for (path_name, kind, outcome), count in sorted(snap.probe_results.items()):
            results.add_metric([town, path_name, kind, outcome], float(count))
        yield results


class AgentMetrics:
    def __init__(self, town: str, snapshot: Callable[[], AgentSnapshot | None]) -> None:
        self.town = town
        self.registry = CollectorRegistry()
        r = self.registry
        self.probe_rtt = Histogram(
            "netwatch_probe_rtt_seconds",
            "probe round-trip time",
            ["town", "path", "target", "kind"],
            buckets=RTT_BUCKETS,
            registry=r,
        )
        self.failovers = Counter(
            "netwatch_failovers",
            "route changes by from, to and reason",
            ["town", "from", "to", "reason"],
            registry=r,
        )
        self.last_failover = Gauge(
            "netwatch_last_failover_duration_seconds",
            "last failover: fault suspected to routes applied",
            ["town"],
            registry=r,
        )
        self.route_errors = Counter(
            "netwatch_route_apply_errors",
            "route changes that failed",
            ["town", "backend"],
            registry=r,
        )
        self.route_reinstalled = Counter(
            "netwatch_route_reinstalled",
            "routes found missing or wrong in the kernel and put back",
            ["town", "path"],
            registry=r,
        )
        self.probe_errors = Counter(
            "netwatch_probe_setup_errors",
            "probes that could not be sent (no source address, socket errors)",
            ["town", "path", "kind", "cause"],
            registry=r,
        )
        self.transitions = Counter(
            "netwatch_path_transitions", "path state changes", ["town", "path", "state"], registry=r
        )
        r.register(_StateCollector(snapshot))
