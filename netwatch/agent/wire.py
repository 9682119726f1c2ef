"""The agent's state on the wire: health-core snapshots turned into the
MQTT contract's messages (`netwatch.messages`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from netwatch import messages
from netwatch.agent.metrics import AgentSnapshot

Wall = Callable[[float], datetime]  # the agent's monotonic seconds -> UTC


def state_message(
    snapshot: AgentSnapshot, *, t: float, wall: Wall, origin: float, route_backend: str
) -> messages.StateMessage:
    """The retained `state`: the active path and each path's health.  A path
    that never changed state reports `origin` (the agent's start) as since."""
    paths = {}
    for name, snap in snapshot.paths.items():
        stats = snap.stats
        paths[name] = messages.PathStatus(
            state=snap.state,
            loss_ratio=stats.loss_ratio if stats.count else None,
            rtt_p50_s=stats.rtt_p50,
            rtt_p95_s=stats.rtt_p95,
            jitter_s=stats.jitter,
            damped=snap.damped,
            since=wall(snap.since if snap.since is not None else origin),
        )
    return messages.StateMessage(
        town=snapshot.town,
        ts=wall(t),
        active_path=snapshot.active,
        all_down=snapshot.all_down,
        paths=paths,
        route_backend=route_backend,
        hold=snapshot.hold,
    )


def metrics_message(
    state: messages.StateMessage, probes: dict[str, messages.JSON]
) -> messages.MetricsMessage:
    """The periodic `metrics` summary, from a state message of the same moment."""
    summaries = {
        name: messages.PathSummary(
            state=s.state,
            loss_ratio=s.loss_ratio,
            rtt_p50_s=s.rtt_p50_s,
            rtt_p95_s=s.rtt_p95_s,
            jitter_s=s.jitter_s,
        )
        for name, s in state.paths.items()
    }
    return messages.MetricsMessage(town=state.town, ts=state.ts, paths=summaries, probes=probes)
