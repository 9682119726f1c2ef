"""Every metric a component exports starts with its prefix (netwatch.constants)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from test_agent_routes import _snapshot

from loadprobe.live import LiveMetrics
from netwatch.agent.metrics import AgentMetrics
from netwatch.constants import METRIC_PREFIX_LOADPROBE, METRIC_PREFIX_NETWATCH
from netwatch.opscenter.fleet import Fleet
from netwatch.opscenter.metrics import ServiceMetrics
from netwatch.topology import load

ROOT = Path(__file__).resolve().parent.parent


def names(registry: CollectorRegistry) -> set[str]:
    text = generate_latest(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def test_netwatch_metrics_carry_the_netwatch_prefix() -> None:
    snapshot = _snapshot()
    agent = AgentMetrics("nishiki", lambda: snapshot)
    opscenter = ServiceMetrics.create(Fleet(load(ROOT / "topology.yaml")))
    exported = names(agent.registry) | names(opscenter.registry)
    assert exported
    assert all(n.startswith(METRIC_PREFIX_NETWATCH) for n in exported)


def test_loadprobe_metrics_carry_the_loadprobe_prefix() -> None:
    live = LiveMetrics("nishiki")
    live.terminals.labels("nishiki", "backup").set(10)
    exported = names(live.registry)
    assert exported
    assert all(n.startswith(METRIC_PREFIX_LOADPROBE) for n in exported)
