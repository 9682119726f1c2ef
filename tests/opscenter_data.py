"""Messages of the MQTT contract, for the operations center's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from netwatch import messages as m
from netwatch.health.state import PathState

T0 = datetime(2026, 12, 1, 5, 0, 0, tzinfo=UTC)


def state(
    town: str = "nishiki",
    active: str | None = "primary",
    *,
    at: datetime = T0,
    primary: PathState = PathState.UP,
    backup: PathState = PathState.UP,
    all_down: bool = False,
) -> m.StateMessage:
    return m.StateMessage(
        town=town,
        ts=at,
        active_path=active,
        all_down=all_down,
        route_backend="netlink",
        paths={
            "primary": m.PathStatus(
                state=primary, damped=False, since=at, loss_ratio=0.0, rtt_p50_s=0.012
            ),
            "backup": m.PathStatus(
                state=backup, damped=False, since=at, loss_ratio=0.01, rtt_p50_s=0.031
            ),
        },
    )


def event(
    kind: m.EventType = m.EventType.FAILOVER,
    town: str = "nishiki",
    *,
    at: datetime = T0,
    to: str = "backup",
    frm: str = "primary",
    duration: float | None = 0.12,
    details_kind: str = "failover",
    event_id: str | None = None,
) -> m.EventMessage:
    extra = {"id": event_id} if event_id else {}
    return m.EventMessage(
        town=town,
        ts=at,
        event=kind,
        reason=f"{frm} is down",
        from_path=frm,
        to_path=to,
        duration_s=duration,
        details={"kind": details_kind},
        **extra,
    )


def metrics(
    town: str = "nishiki",
    *,
    at: datetime = T0,
    rtt: float = 0.013,
    probes: dict[str, m.JSON] | None = None,
) -> m.MetricsMessage:
    return m.MetricsMessage(
        town=town,
        ts=at,
        probes=probes or {},
        paths={
            "primary": m.PathSummary(state=PathState.UP, loss_ratio=0.0, rtt_p50_s=rtt),
            "backup": m.PathSummary(state=PathState.UP, loss_ratio=0.02, rtt_p50_s=0.03),
        },
    )


def online(town: str = "nishiki", up: bool = True, *, at: datetime = T0) -> m.OnlineMessage:
    return m.OnlineMessage(town=town, online=up, ts=at)


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)
